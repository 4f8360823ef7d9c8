"""The CPU demo end to end: warm start -> difficulty scoring -> staged GRPO -> Pass@1.

Run through `python -m dsrl_jax.main --config=configs/demo.py`. Every phase uses the
project's real machinery (the sampler, the Math-Verify reward in worker processes, the
scorer and level rules, the trainer with its curriculum and checkpoints); only the model,
the tokenizer and the problems are small and built in. Re-running in the same workdir
reuses the warm start and the scores and resumes GRPO from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections

from dsrl_jax import paths, score
from dsrl_jax.demo.evaluate import demo_policy, pass_at_1
from dsrl_jax.demo.sft import demo_model_config, warm_start
from dsrl_jax.demo.task import make_splits
from dsrl_jax.demo.tokenizer import CharTokenizer
from dsrl_jax.models import hf
from dsrl_jax.rewards import RewardPool

SMOKE = dict(sft_size=400, rl_size=48, eval_size=24, sft_steps=20, sft_early_steps=10, score_k=2, eval_n=2)


def _apply_smoke(config):
    """Seconds instead of minutes: for tests and notebook fixtures, not for results."""
    with config.unlocked():
        config.demo.update(SMOKE)
        config.rollout.batch_prompts, config.rollout.group_size = 4, 4
        config.train.micro_batch_size = 16
        config.reward_workers = 1
        config.checkpoint.every = 2
        config.eval.every, config.eval.limit = 2, 8
        # A few supervised steps solve nothing, so levels come from seeded draws here.
        config.level_rules = {"keep": {"sample": 1.0},
                              "levels": [{"name": n, "when": {"sample": 0.6}} for n in ("L1", "L2", "L3")]}
        for stage, steps in zip(config.curriculum.stages, (3, 2)):
            stage["end"]["max_steps"] = steps
            if stage["end"]["plateau"]:
                stage["end"]["plateau"].update(window=1, patience=1, min_steps=1)


def _warm_start_models(config, cfg, tok, sft_records, workdir):
    """Two proxies from one supervised run: its early checkpoint and its end (HF dirs)."""
    d = config.demo
    dirs = {name: os.path.join(workdir, "models", name) for name in ("sft-early", "warm-start")}
    if not all(os.path.exists(os.path.join(p, "config.json")) for p in dirs.values()):
        t = time.perf_counter()
        final, early = warm_start(cfg, tok, sft_records, steps=d.sft_steps, batch_size=d.sft_batch_size, lr=d.sft_lr,
                                  label_smoothing=d.sft_label_smoothing, seed=config.seed, log_every=100,
                                  snapshot_at=d.sft_early_steps)
        for name, params in (("sft-early", early), ("warm-start", final)):
            hf.save_params(dirs[name], cfg, params)
        print(f"warm start: {d.sft_steps} steps in {time.perf_counter() - t:.0f}s")
    return {name: hf.load_params(p, cfg)[1] for name, p in dirs.items()}, dirs


def _score(config, tok, records, dirs, workdir):
    d = config.demo
    proxy = lambda name: dict(name=name, model=dirs[name], tokenizer=None, k=d.score_k, max_new_tokens=64,
                              temperature=1.0, top_p=1.0, top_k=0, batch_size=256, max_prompt_len=64,
                              dtype="float32")
    sc = ml_collections.ConfigDict(dict(
        proxies=[proxy("sft-early"), proxy("warm-start")], only_proxies="", pass_rates_file="",
        mesh={"fsdp": -1}, sharding_rules=config.sharding_rules.to_dict(),
        output=os.path.join(workdir, "scored", "problems.jsonl"), progress="", prompt_mode="plain",
        rewards=config.rewards.to_dict(), reward_workers=config.reward_workers,
        level_rules=config.level_rules.to_dict(), level_seed=config.seed, seed=config.seed))
    return score.run(sc, records=records, tokenizer=tok, prompt_fn=lambda record: tok.format_prompt(record["problem"]))


def _evaluate(policy, records, config, pool, workdir, label):
    """Held-out Pass@1 (n samples at the demo's temperature) through the project's evaluator,
    written to evals/<label>/ like any checkpoint's evaluation, plus greedy accuracy."""
    from dsrl_jax.evaluate import evaluate_policy

    d = config.demo
    opts = ml_collections.ConfigDict(config.eval.to_dict())
    opts.update(n=d.eval_n, temperature=d.eval_temperature, top_p=1.0, max_new_tokens=d.eval_max_new_tokens,
                limit=0, batch_size=256, seed=config.seed)
    out_dir = os.path.join(workdir, "evals", label)
    summary = evaluate_policy(policy, {"demo": records}, opts, pool=pool, workdir=out_dir)["demo"]
    difficulty = {r["id"]: r["difficulty"] for r in records}
    per: dict[str, list[float]] = {}
    with open(os.path.join(out_dir, "demo", "responses.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            per.setdefault(str(difficulty[row["id"]]), []).append(float(row["reward"] >= 1.0))
    greedy = pass_at_1(policy, records, greedy=True, max_new_tokens=d.eval_max_new_tokens, pool=pool)
    return {"pass@1": summary["pass@1"], "greedy_accuracy": greedy.pass_at_1,
            "by_difficulty": {k: sum(v) / len(v) for k, v in sorted(per.items())}}


def run_demo(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The demo in `workdir` (local or a URL): the trainer writes its checkpoints, metrics and
    periodic evals there itself; the demo's own files (models, scores, held-out evals,
    results) are written in a local copy of it that is uploaded at the end."""
    from dsrl_jax.validate import validate_config

    if config.smoke:
        _apply_smoke(config)
    validate_config(config, check_files=False)
    with paths.staged(workdir, exclude=("checkpoints", "tensorboard")) as local:
        return _run_demo(config, local, paths.normalize(workdir))


def _run_demo(config, workdir: str, train_workdir: str) -> dict:
    from dsrl_jax.rl.trainer import Trainer

    d, tok = config.demo, CharTokenizer()
    splits = make_splits({"eval": d.eval_size, "sft": d.sft_size, "rl": d.rl_size}, seed=config.seed)
    cfg = demo_model_config(tok.vocab_size, scan_layers=config.model.scan_layers)
    t0 = time.perf_counter()
    params, dirs = _warm_start_models(config, cfg, tok, splits["sft"], workdir)

    eval_file = os.path.join(workdir, "eval_problems.jsonl")  # the held-out split, for periodic evals
    with open(eval_file, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in splits["eval"])
    with config.unlocked():
        config.eval.benchmarks = f"demo={eval_file}"
    with RewardPool(config.rewards.to_dict(), num_workers=config.reward_workers) as pool:
        before = _evaluate(demo_policy(cfg, params["warm-start"], tok), splits["eval"], config, pool, workdir,
                           "step_0")
    print(f"held-out Pass@1 after the warm start: {before['pass@1']:.3f} (greedy {before['greedy_accuracy']:.3f})")

    levelled = _score(config, tok, splits["rl"], dirs, workdir)
    trainer = Trainer(config, train_workdir, records=levelled, policy=demo_policy(cfg, params["warm-start"], tok))
    try:
        trainer.run()
        final = jax.device_get(trainer.state["params"])
        with RewardPool(config.rewards.to_dict(), num_workers=config.reward_workers) as pool:
            after = _evaluate(demo_policy(cfg, final, tok), splits["eval"], config, pool, workdir,
                              f"final_step_{int(trainer.state['step'])}")
        stages = trainer.curriculum.state_dict()
    finally:
        trainer.close()

    results = {"before": before, "after": after, "levels": _level_counts(levelled),
               "final_stage": stages.get("stage_name"), "steps": int(trainer.state["step"]),
               "minutes": (time.perf_counter() - t0) / 60}
    with open(os.path.join(workdir, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(_table(before, after))
    print(f"wrote {os.path.join(workdir, 'demo_results.json')} ({results['minutes']:.1f} min)")
    return results


def _level_counts(records):
    counts: dict[str, int] = {}
    for r in records:
        for level in r.get("levels", []):
            counts[level] = counts.get(level, 0) + 1
    return counts


def _table(before, after) -> str:
    rows = [("Pass@1 (sampled, T=1)", "pass@1"), ("greedy accuracy", "greedy_accuracy")]
    rows += [(f"Pass@1, {k}-step problems", ("by_difficulty", k)) for k in before["by_difficulty"]]
    get = lambda res, key: res[key[0]][key[1]] if isinstance(key, tuple) else res[key]
    lines = ["| held-out | warm start | after GRPO | change |", "|---|---|---|---|"]
    for label, key in rows:
        b, a = get(before, key), get(after, key)
        lines.append(f"| {label} | {100 * b:.1f} | {100 * a:.1f} | {100 * (a - b):+.1f} |")
    return "\n".join(lines)
