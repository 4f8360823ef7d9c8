"""The CPU demo end to end: warm start -> difficulty scoring -> staged GRPO -> Pass@1.

    python -m dsrl_jax.main --config=configs/demo.py       # its `recipe` names `run` below

Each phase is one of the project's public entry points, given its pieces by name, as a
user would name them on the command line; only the model, the tokenizer and the problems
are small and built in. In the workdir:
  1. the problems (dsrl_jax/demo/task.py): rl_problems.jsonl and the held-out
     eval_problems.jsonl; the warm start (dsrl_jax/demo/sft.py) writes two Hugging Face
     model directories, models/sft-early and models/warm-start, with the character
     tokenizer's files, so each is an ordinary policy spec;
  2. `dsrl_jax.score.run` scores rl_problems.jsonl with both models as proxies and levels it
     by the config's `level_rules` (dsrl_jax.data.levels) -> scored/problems.jsonl;
  3. `Trainer(config, workdir)` runs the curriculum from `model.init` (models/warm-start: a
     relative spec is under the workdir) on data.sources = [scored/problems.jsonl], with
     eval.benchmarks = demo=eval_problems.jsonl (`train_config`: what those three
     `--config.` flags would give);
  4. `evaluate_heldout`: `dsrl_jax.evaluate.evaluate_policy` and greedy `pass_at_1` on the
     held-out problems, for the warm start and for the workdir's last checkpoint
     (`load_policy(workdir)`), printed and written to demo_results.json.
Re-running in the same workdir reuses the warm start and the scores and resumes GRPO from
its last checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax
import ml_collections

from dsrl_jax import parallel, paths, score
from dsrl_jax.data import levels as levels_lib
from dsrl_jax.demo.evaluate import pass_at_1
from dsrl_jax.demo.sft import demo_model_config, save_model, warm_start
from dsrl_jax.demo.task import make_splits
from dsrl_jax.demo.tokenizer import CharTokenizer
from dsrl_jax.eval_metrics import is_correct
from dsrl_jax.evaluate import evaluate_policy
from dsrl_jax.policy import load_policy
from dsrl_jax.rewards import RewardPool
from dsrl_jax.rl.trainer import Trainer
from dsrl_jax.validate import validate_config

MODELS = ("sft-early", "warm-start")  # the weaker and the stronger proxy; the second starts GRPO
RL_PROBLEMS, EVAL_PROBLEMS, SCORED = "rl_problems.jsonl", "eval_problems.jsonl", os.path.join("scored", "problems.jsonl")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The demo in `workdir` (local or a URL): the trainer writes its checkpoints, metrics and
    periodic evals there itself; the demo's own files (models, problems, scores, held-out
    evals, results) are written in a local copy of it that is uploaded at the end."""
    validate_config(config, check_files=False)  # its files are written by the phases below
    with paths.staged(workdir, exclude=("checkpoints", "tensorboard")) as local:
        return _run(config, local, paths.normalize(workdir))


def _run(config, local: str, workdir: str) -> dict:
    d = config.demo
    t0 = time.perf_counter()
    splits = make_splits({"eval": d.eval_size, "sft": d.sft_size, "rl": d.rl_size}, seed=config.seed)
    for name, split in ((RL_PROBLEMS, "rl"), (EVAL_PROBLEMS, "eval")):
        with open(os.path.join(local, name), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in splits[split])
    models = _warm_start_models(config, splits["sft"], local)

    init = os.path.join(local, config.model.init)  # the warm start (model.init: relative to the workdir)
    before = evaluate_heldout(config, init, splits["eval"], os.path.join(local, "evals", "step_0"))
    print(f"held-out Pass@1 after the warm start: {before['pass@1']:.3f} (greedy {before['greedy_accuracy']:.3f})")

    levelled = score.run(score_config(config, local, models))
    trainer = Trainer(train_config(config, local, init), workdir)
    try:
        trainer.run()
        step, stages = int(trainer.state["step"]), trainer.curriculum.state_dict()
    finally:
        trainer.close()
    after = evaluate_heldout(config, workdir, splits["eval"], os.path.join(local, "evals", f"final_step_{step}"))

    counts = {level: n for (level, _), n in levels_lib.level_counts(levelled).items() if level != "-"}
    results = {"before": before, "after": after, "levels": counts, "final_stage": stages.get("stage_name"),
               "steps": step, "minutes": (time.perf_counter() - t0) / 60}
    with open(os.path.join(local, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(_table(before, after))
    print(f"wrote {os.path.join(local, 'demo_results.json')} ({results['minutes']:.1f} min)")
    return results


def _warm_start_models(config, sft_records, local: str) -> dict[str, str]:
    """Two proxies from one supervised run, its early checkpoint and its end, as HF model
    directories; {name: directory}."""
    d, tok = config.demo, CharTokenizer()
    dirs = {name: os.path.join(local, "models", name) for name in MODELS}
    if not all(os.path.exists(os.path.join(p, f)) for p in dirs.values() for f in ("config.json", "tokenizer.json")):
        t = time.perf_counter()
        cfg = demo_model_config(tok.vocab_size, scan_layers=config.model.scan_layers)
        final, early = warm_start(cfg, tok, sft_records, steps=d.sft_steps, batch_size=d.sft_batch_size, lr=d.sft_lr,
                                  label_smoothing=d.sft_label_smoothing, seed=config.seed, log_every=100,
                                  snapshot_at=d.sft_early_steps)
        for name, params in zip(MODELS, (early, final)):
            save_model(dirs[name], cfg, params, tok)
        print(f"warm start: {d.sft_steps} steps in {time.perf_counter() - t:.0f}s")
    return dirs


def score_config(config, local: str, models: dict[str, str]) -> ml_collections.ConfigDict:
    """The scoring job (configs/score.py's fields): the RL problems, both warm-start models as
    proxies, the demo's level rules."""
    d = config.demo
    proxy = lambda name: dict(name=name, model=models[name], tokenizer=None, k=d.score_k, max_new_tokens=64,  # noqa: E731
                              temperature=1.0, top_p=1.0, top_k=0, batch_size=256, max_prompt_len=64,
                              dtype="float32")
    return ml_collections.ConfigDict(dict(
        sources=[{"path": os.path.join(local, RL_PROBLEMS)}], proxies=[proxy(name) for name in MODELS],
        only_proxies="", pass_rates_file="", mesh={"fsdp": -1}, sharding_rules=config.sharding_rules,
        output=os.path.join(local, SCORED), progress="", prompt_mode=config.data.prompt_mode,
        rewards=config.rewards, reward_workers=config.reward_workers,
        level_rules=config.level_rules, level_seed=config.seed, seed=config.seed))


def train_config(config, local: str, init: str) -> ml_collections.ConfigDict:
    """The demo config with its three by-name pieces in the workdir: what
    `--config.model.init=... --config.data.sources=... --config.eval.benchmarks=...` would give
    (a copy: the caller's config is left as it is)."""
    c = copy.deepcopy(config)
    c.model.init = init
    c.data.sources = [{"path": os.path.join(local, SCORED)}]
    c.eval.benchmarks = f"demo={os.path.join(local, EVAL_PROBLEMS)}"
    return c


def evaluate_heldout(config, spec: str, records, out_dir: str, *, seed: int | None = None) -> dict:
    """Held-out Pass@1 of the policy `spec` names (n samples at the demo's temperature)
    through the project's evaluator, written to `out_dir` like any checkpoint's evaluation,
    plus greedy accuracy and Pass@1 per difficulty; on one device, as the demo model is
    tiny. The sampling seed is `seed`, default config.seed."""
    d, m = config.demo, config.model
    policy = load_policy(spec, parallel.make_mesh({"fsdp": 1}, jax.devices()[:1]), prompt_mode=config.data.prompt_mode,
                         dtype=m.dtype, param_dtype=m.param_dtype, scan_layers=m.scan_layers, remat=m.remat,
                         attention_impl=m.attention_impl)
    opts = ml_collections.ConfigDict(config.eval.to_dict())
    opts.update(n=d.eval_n, temperature=d.eval_temperature, top_p=1.0, max_new_tokens=d.eval_max_new_tokens,
                limit=0, batch_size=256, seed=config.seed if seed is None else seed)
    with RewardPool(config.rewards.to_dict(), num_workers=config.reward_workers) as pool:
        summary = evaluate_policy(policy, {"demo": records}, opts, pool=pool, workdir=out_dir)["demo"]
        greedy = pass_at_1(policy, records, greedy=True, max_new_tokens=d.eval_max_new_tokens, pool=pool)
    difficulty = {r["id"]: r["difficulty"] for r in records}
    per: dict[str, list[float]] = {}
    with open(os.path.join(out_dir, "demo", "responses.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            per.setdefault(str(difficulty[row["id"]]), []).append(float(is_correct(row["reward"])))
    return {"pass@1": summary["pass@1"], "greedy_accuracy": greedy.pass_at_1,
            "by_difficulty": {k: sum(v) / len(v) for k, v in sorted(per.items())}}


def _table(before, after) -> str:
    rows = [("Pass@1 (sampled, T=1)", "pass@1"), ("greedy accuracy", "greedy_accuracy")]
    rows += [(f"Pass@1, {k}-step problems", ("by_difficulty", k)) for k in before["by_difficulty"]]
    get = lambda res, key: res[key[0]][key[1]] if isinstance(key, tuple) else res[key]  # noqa: E731
    lines = ["| held-out | warm start | after GRPO | change |", "|---|---|---|---|"]
    for label, key in rows:
        b, a = get(before, key), get(after, key)
        lines.append(f"| {label} | {100 * b:.1f} | {100 * a:.1f} | {100 * (a - b):+.1f} |")
    return "\n".join(lines)
