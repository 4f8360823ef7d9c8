"""A rehearsal of the paper's pipeline, end to end, on 8 CPU devices with a (fsdp=4, tensor=2) mesh.

    python experiments/rehearsal.py            # ~5 CPU-minutes; writes experiments/results/rehearsal.json
    python experiments/rehearsal.py --quick --out /tmp/rehearsal.json   # the CI test's smaller run (~3)

It runs the paper's real configs (`configs/score.py`, `configs/staged.py`, `configs/eval.py`)
through the library's own entry points (`score.run`, `Trainer.run` + `export_hf`, as
`python -m dsrl_jax.main` does, `evaluate.run`), overridden only in size:

  models     two random-weights Qwen2 checkpoints saved as HF directories, built from the real
             DeepSeek-R1-Distill-Qwen-1.5B config.json (vocabulary 151,936, untied head, its
             RoPE and EOS) with a few small layers, each beside the real R1-Distill tokenizer
             files; the smaller one stands in for the 1.5B proxy and is the policy's init, the
             larger one for the 7B proxy.
  data       the score config's own sources (DeepScaleR math, LiveCodeBench code), first N rows
             of each; the eval config's benchmarks from the local copies (AIME24, MATH-500,
             LiveCodeBench 2408-2501), first few problems each.
  lengths    response limits 16k/24k/32k tokens -> 16/24/32 tokens; k, group sizes and batch
             sizes small; the stage-1 plateau rule with a window of 1 step.

What cannot be real at this size is said in the output: random weights solve nothing, so
every measured pass rate is 0 and the paper's level rules would keep no data. The levels
therefore come from the paper's rules (`paper_level_rules`) applied to synthetic pass rates
of four named stand-ins ("synthetic/r1-distill-1.5b", ..., "synthetic/deepseek-r1"), merged
through the score config's `pass_rates_file`, next to the two random proxies' measured rates.

The JSON holds: every phase with its seconds, the parameter placement of every policy that
was loaded (spec, PartitionSpec, shards), the level table, the stage switch step and rule,
per-step training metrics, periodic and final eval summaries, and the HF export's round
trip (transformers' Qwen2ForCausalLM vs our forward on the exported weights: max |logit diff|).
"""
from __future__ import annotations

import os
import sys

# Before JAX is imported: 8 fake CPU devices (the sharded path), CPU only, offline.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `configs` and `dsrl_jax` from this checkout

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

MESH = {"data": 1, "fsdp": 4, "tensor": 2}
TOKENIZER = ("tokenizers", "deepseek-r1-distill-qwen-1.5b")
# name in configs/score.py -> (layers, hidden, heads, kv heads, intermediate, seed)
PROXIES = {"r1-distill-1.5b": (2, 64, 4, 2, 128, 0), "r1-distill-7b": (3, 96, 6, 2, 192, 1)}
# Synthetic pass rates (1.5B, 7B, 32B, R1) cycled over each domain's rows: the paper's rules
# then give L1+L2 / L2 / L3 / dropped (R1 never solves) in turn, plus L3's sampled share of
# 32B-solved problems.
SYNTHETIC = ("synthetic/r1-distill-1.5b", "synthetic/r1-distill-7b", "synthetic/r1-distill-32b",
             "synthetic/deepseek-r1")
PROFILES = ((0.5, 0.75, 1.0, 1.0), (0.0, 0.25, 0.75, 1.0), (0.0, 0.0, 0.0, 0.5), (0.0, 0.0, 0.0, 0.0))
SIZES = {  # full run / --quick
    "full": dict(problems=16, k=4, group=4, prompts=4, steps=4, eval_limit=2, eval_every=2),
    "quick": dict(problems=8, k=2, group=2, prompts=4, steps=3, eval_limit=1, eval_every=3),
}


def shared_dir(arg: str | None) -> str:
    path = arg or os.environ.get("DSRL_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
    if not os.path.isdir(os.path.join(path, *TOKENIZER)) or not os.path.isdir(os.path.join(path, "data")):
        sys.exit(f"error: {path} has no {'/'.join(TOKENIZER)} or data/ (pass --shared DIR)")
    return path


def local_path(path: str, shared: str) -> str:
    """A config's "../shared/..." path, resolved against the shared directory."""
    return os.path.join(shared, path.split("shared/", 1)[1]) if "shared/" in path else path


# ---- phases ---------------------------------------------------------------------------------
def make_models(root: str, shared: str) -> dict:
    """Random-weights HF directories written by `transformers` itself: the real
    R1-Distill-1.5B config.json with few small layers (biases random too, so the export's
    round trip checks them), beside the R1-Distill tokenizer's files."""
    import torch
    import transformers

    from dsrl_jax.models.config import Qwen2Config, param_count

    tok_dir = os.path.join(shared, *TOKENIZER)
    with open(os.path.join(tok_dir, "config.json"), encoding="utf-8") as f:
        real = json.load(f)
    out = {}
    for name, (layers, hidden, heads, kv, inter, seed) in PROXIES.items():
        sizes = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                     head_dim=hidden // heads, intermediate_size=inter)
        sizes["layer_types"] = real["layer_types"][:layers]
        torch.manual_seed(seed)
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{**real, **sizes}))
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("bias"):
                    p.normal_(0.0, 0.1)
        path = os.path.join(root, "models", name)
        model.save_pretrained(path)
        for fn in os.listdir(tok_dir):  # the tokenizer, its chat template and generation_config.json
            if fn != "config.json":
                shutil.copyfile(os.path.join(tok_dir, fn), os.path.join(path, fn))
        cfg = Qwen2Config.from_file(path)
        out[name] = {"dir": path, "layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv,
                     "vocab": cfg.vocab_size, "tied": cfg.tie_word_embeddings, "params": int(param_count(cfg))}
    return out


def write_synthetic_rates(config, path: str) -> dict:
    """Synthetic proxy rates for the score config's own records (the pass_rates_file format)."""
    from dsrl_jax import score
    from dsrl_jax.data.sources import load_sources

    records, _ = load_sources(score._sources(config))
    seen: dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            i = seen[r["domain"]] = seen.get(r["domain"], -1) + 1
            rates = dict(zip(SYNTHETIC, PROFILES[i % len(PROFILES)]))
            f.write(json.dumps({"id": r["id"], "pass_rates": rates}) + "\n")
    return {"records": len(records), "by_domain": {d: n + 1 for d, n in seen.items()}}


def score_config(shared: str, models: dict, root: str, size: dict):
    import ml_collections

    from configs import score as score_cfg
    from dsrl_jax.data.levels import paper_level_rules

    c = score_cfg.get_config()
    c.paths = ",".join(local_path(s["path"], shared) for s in c.sources)  # the config's own data
    c.limit = size["problems"]
    with c.unlocked():
        if "decontaminate" in c:  # offline: the benchmarks' local copies
            c.decontaminate.against = eval_benchmarks(shared)
    proxies = []
    for p in c.proxies:
        if p["name"] in models:  # the two random stand-ins; the 32B is not sampled here
            proxies.append({**p, "model": models[p["name"]]["dir"], "k": size["k"], "max_new_tokens": 16,
                            "batch_size": 2 * size["problems"]})  # every problem in one sampler call
    c.proxies = proxies
    c.mesh = ml_collections.ConfigDict(MESH)
    c.output = os.path.join(root, "scored", "problems.jsonl")
    c.pass_rates_file = os.path.join(root, "synthetic_pass_rates.jsonl")
    c.level_rules = paper_level_rules(*SYNTHETIC)
    c.reward_workers = 2
    return c


def eval_benchmarks(shared: str) -> str:
    """configs/eval.py's benchmarks (aime24, math500, livecodebench) from local files."""
    files = {"aime24": "data/math/aime24.jsonl", "math500": "data/math/math500.jsonl",
             "livecodebench": "data/code/lcb_2408_2501_public.json"}
    return ",".join(f"{name}={os.path.join(shared, path)}" for name, path in files.items())


def staged_config(shared: str, models: dict, scored: str, size: dict):
    import ml_collections

    from configs import staged

    c = staged.get_config()
    c.model.init = models["r1-distill-1.5b"]["dir"]  # the paper's init is the 1.5B proxy
    c.mesh = ml_collections.ConfigDict(MESH)
    c.data.sources = [{"path": scored}]
    if "decontaminate" in c.data:
        c.data.decontaminate.against = eval_benchmarks(shared)
    c.rollout.batch_prompts, c.rollout.group_size = size["prompts"], size["group"]
    c.rollout.prompts_per_sample_call = 0  # the whole (small) batch in one sampler call
    c.total_steps = size["steps"]
    s1, s2 = c.curriculum.stages
    s1["max_response_len"], s2["max_response_len"] = 16, 24  # 16k / 24k tokens -> 16 / 24
    s1["end"]["plateau"].update(window=1, patience=1, min_steps=2)  # window 50, patience 100, min 200
    c.checkpoint.every = 2
    c.reward_workers = 2
    c.eval.every = size["eval_every"]
    c.eval.benchmarks = eval_benchmarks(shared)
    c.eval.limit, c.eval.max_new_tokens = size["eval_limit"], 32
    c.log.progress = False
    return c


def eval_config(shared: str, model: str, size: dict):
    import ml_collections

    from configs import eval as eval_cfg

    c = eval_cfg.get_config()
    c.model = model
    c.benchmarks = eval_benchmarks(shared)
    c.limit, c.max_new_tokens = size["eval_limit"], 32
    c.mesh = ml_collections.ConfigDict(MESH)
    c.reward_workers = 2
    return c


@contextlib.contextmanager
def recording_placements(log: list):
    """Wraps the real `load_policy` where the entry points call it and records where each
    policy's parameters landed (spec, PartitionSpec, devices, shard shape)."""
    from dsrl_jax import evaluate, policy, score
    from dsrl_jax.rl import trainer

    real = policy.load_policy

    def load_policy(spec, *args, **kwargs):
        pol = real(spec, *args, **kwargs)
        log.append({"spec": os.path.basename(str(spec).rstrip("/")), **placement(pol.params)})
        return pol

    modules = (policy, score, evaluate, trainer)  # each binds the name at import
    for m in modules:
        m.load_policy = load_policy
    try:
        yield
    finally:
        for m in modules:
            m.load_policy = real


def placement(params) -> dict:
    leaves = {"embed": params["embed"], "q_proj": params["layers"]["attn"]["q_proj"],
              "up_proj": params["layers"]["mlp"]["up_proj"]}
    return {name: {"shape": list(a.shape), "spec": str(a.sharding.spec), "devices": len(a.sharding.device_set),
                   "shard_shape": list(a.addressable_shards[0].data.shape)} for name, a in leaves.items()}


def export_round_trip(export_dir: str, init_dir: str, tokens: list[int], mesh) -> dict:
    """transformers' Qwen2ForCausalLM on the export vs our sharded forward on the same files."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from dsrl_jax import parallel
    from dsrl_jax.models import hf, qwen2
    from dsrl_jax.models.config import Qwen2Config

    cfg = Qwen2Config.from_file(export_dir, dtype="float32")
    shardings = parallel.param_shardings(qwen2.logical_axes(cfg), qwen2.abstract_params(cfg), mesh)
    _, params = hf.load_params(export_dir, cfg, shardings)
    ids = jnp.asarray([tokens], jnp.int32)
    ours = jax.jit(lambda p: qwen2.forward(cfg, p, ids, jnp.arange(len(tokens))[None], jnp.ones_like(ids, bool))[0])
    ours = np.asarray(ours(params))[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(torch.tensor([tokens])).logits[0].float().numpy()
    _, init = hf.load_params(init_dir, cfg)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(init)))
    return {"loaded_by": type(model).__name__, "tokens": len(tokens), "vocab": int(theirs.shape[-1]),
            "max_abs_logit_diff": float(np.abs(ours - theirs).max()),
            "logit_scale": float(np.abs(theirs).max()),
            "argmax_agree": float((ours.argmax(-1) == theirs.argmax(-1)).mean()),
            "max_abs_param_change_from_init": moved,
            "files": sorted(os.listdir(export_dir))}


# ---- the run --------------------------------------------------------------------------------
class Phases:
    """Wall seconds, CPU seconds (this process and its finished children: reward workers) and
    XLA compile seconds/count of each phase; the machine is shared, so CPU time is the steadier
    figure."""

    def __init__(self):
        import jax.monitoring

        self.rows, self._compile = [], [0.0, 0]
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name, seconds, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            self._compile[0] += seconds
            self._compile[1] += 1

    @staticmethod
    def _cpu() -> float:
        import resource

        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    @contextlib.contextmanager
    def __call__(self, name: str):
        row = {"phase": name, "figures": ""}
        t, cpu, (comp, n) = time.perf_counter(), self._cpu(), self._compile
        yield row
        row.update(seconds=round(time.perf_counter() - t, 1), cpu_seconds=round(self._cpu() - cpu, 1),
                   compile_seconds=round(self._compile[0] - comp, 1), compiles=self._compile[1] - n)
        self.rows.append(row)
        print(f"[rehearsal] {name}: {row['seconds']}s wall, {row['cpu_seconds']}s CPU, {row['compiles']} compiles "
              f"({row['compile_seconds']}s)  {row['figures']}", flush=True)


def run(args) -> dict:
    import jax

    from dsrl_jax import evaluate, parallel, score
    from dsrl_jax.data import levels as levels_lib
    from dsrl_jax.metrics import read_metrics
    from dsrl_jax.models import hf
    from dsrl_jax.rl.trainer import Trainer

    shared, size = shared_dir(args.shared), SIZES["quick" if args.quick else "full"]
    root = args.workdir or tempfile.mkdtemp(prefix="dsrl_rehearsal_")
    os.makedirs(root, exist_ok=True)
    mesh = parallel.make_mesh(MESH)
    phase, placements, t_all, cpu_all = Phases(), [], time.perf_counter(), Phases._cpu()
    out = {"settings": {"devices": jax.device_count(), "platform": jax.default_backend(), "mesh": MESH,
                        "size": "quick" if args.quick else "full", **size, "jax": jax.__version__,
                        "load_before": os.getloadavg()[0], "cpus": os.cpu_count()}}

    with phase("models") as row:
        models = out["models"] = make_models(root, shared)
        row["figures"] = ", ".join(f"{n}: {m['layers']} x {m['hidden']}, {m['params'] / 1e6:.1f}M params"
                                   for n, m in models.items())

    with recording_placements(placements):
        with phase("score + levels") as row:  # both random proxies sample, sharded; levels by rule
            sc = score_config(shared, models, root, size)
            synthetic = write_synthetic_rates(sc, sc.pass_rates_file)
            levelled = score.run(sc)
            progress = score.read_progress(sc.output + ".scores.jsonl")
            measured = {p: [r for (name, _), r in progress.items() if name == p] for p in models}
            out["score"] = {
                "problems": synthetic, "proxies_sampled": list(models), "k": size["k"], "max_new_tokens": 16,
                "measured": {p: {"scored": len(rows),
                                 "mean_pass_rate": sum(r["pass_rate"] for r in rows) / max(1, len(rows)),
                                 "truncated_fraction": sum(r["truncated"] for r in rows) / max(1, sum(r["k"] for r in rows))}
                             for p, rows in measured.items()},
                "levels_from": "paper_level_rules over synthetic pass rates (pass_rates_file): random weights "
                               "solve nothing, so the measured rates are all 0",
                "synthetic_proxies": list(SYNTHETIC), "synthetic_profiles": [list(p) for p in PROFILES]}
            counts = levels_lib.level_counts(levelled)
            out["levels"] = {"kept": len(levelled), "of": synthetic["records"],
                             "table": {lvl: {d: n for (l2, d), n in counts.items() if l2 == lvl}
                                       for lvl in sorted({lvl for lvl, _ in counts})}}
            row["figures"] = (f"{synthetic['records']} problems x {len(models)} proxies x k={size['k']}; kept "
                              f"{len(levelled)}: " + ", ".join(f"{lvl} {sum(v.values())}"
                                                               for lvl, v in out["levels"]["table"].items()))

        # stage 1 (L2, until the plateau) -> stage 2 (L3, truncation masked, no entropy term),
        # periodic evals and checkpoints; then the HF export, as `python -m dsrl_jax.main` does
        tc = staged_config(shared, models, sc.output, size)
        workdir = os.path.join(root, "train")
        trainer = Trainer(tc, workdir)
        try:
            with phase("staged GRPO") as row:
                trainer.run()
                rows = read_metrics(workdir)
                keys = ("reward/mean", "truncation_rate", "response_length/mean", "loss", "pg_loss", "kl", "entropy",
                        "grad_norm", "skipped_updates")
                steps = [{"step": r["step"], "stage": r["stage"], **{k: r.get(k) for k in keys}} for r in rows]
                switch = max((r["step"] for r in rows if r["stage"] == "stage1"), default=None)
                evals = {r["step"]: {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("eval/")}
                         for r in rows if any(k.startswith("eval/") for k in r)}
                stage_cfgs = {s["name"]: {"levels": list(s["data"]["levels"]), "domains": list(s["data"]["domains"]),
                                          "max_response_len": s["max_response_len"],
                                          **{k: v for k, v in {**tc.loss.to_dict(), **dict(s["loss"])}.items()
                                             if k in ("mask_truncated", "entropy_coef", "kl_coef")}}
                              for s in tc.curriculum.stages}
                out["training"] = {
                    "stages": stage_cfgs, "steps": steps, "final_step": int(trainer.state["step"]),
                    "stage_switch_after_step": switch,
                    "switch_rule": "stage1 plateau of reward/mean (window 1, patience 1, min_steps 2)",
                    "checkpoints": sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()),
                    "placement": placement(trainer.state["params"])}
                out["periodic_eval"] = evals
                row["figures"] = (f"{len(steps)} steps, stage 2 from step {switch + 1 if switch else '-'}; "
                                  f"periodic evals at steps {sorted(evals)}")
            with phase("HF export + transformers") as row:
                export_dir = trainer.export_hf() if tc.checkpoint.export_hf and trainer.policy.model_dir else None
                tok = hf.load_tokenizer(models["r1-distill-1.5b"]["dir"])
                first = next(r for r in levelled if r["domain"] == "math")
                tokens = hf.chat_prompt_ids(tok, [{"role": "user", "content": first["problem"]}])[:48]
                out["export"] = {"dir": "train/hf",
                                 **export_round_trip(export_dir, models["r1-distill-1.5b"]["dir"], tokens, mesh)}
                row["figures"] = (f"max |logit diff| {out['export']['max_abs_logit_diff']:.1e} over {len(tokens)} "
                                  f"tokens x {out['export']['vocab']} ({out['export']['loaded_by']})")
        finally:
            trainer.close()

        with phase("eval") as row:  # the trained checkpoint: the training workdir's latest orbax step
            summary = evaluate.run(eval_config(shared, workdir, size), os.path.join(root, "eval"))
            out["eval"] = {"model": "training workdir (latest checkpoint)", "summary": summary}
            row["figures"] = ", ".join(f"{b} pass@1 {s['pass@1']:.1f} ({s['n_samples']} samples)"
                                       for b, s in summary.items())

    out["placements"] = placements
    out["phases"] = phase.rows
    out["stages_ran"] = {
        "score": all(m["scored"] for m in out["score"]["measured"].values()),
        "levels": out["levels"]["kept"] > 0,
        "stage1": any(s["stage"] == "stage1" for s in steps),
        "stage2": any(s["stage"] == "stage2" for s in steps),
        "periodic_eval": bool(evals), "eval": bool(summary), "export": export_dir is not None}
    out["total_seconds"] = round(time.perf_counter() - t_all, 1)
    out["total_cpu_seconds"] = round(Phases._cpu() - cpu_all, 1)
    out["settings"]["load_after"] = os.getloadavg()[0]
    if args.keep and not args.workdir:
        print(f"kept {root}")
    elif not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return out


def table(out: dict) -> str:
    lines = ["| phase | wall s | CPU s | compiles (s) | figures |", "|---|---|---|---|---|"]
    lines += [f"| {p['phase']} | {p['seconds']} | {p['cpu_seconds']} | {p['compiles']} ({p['compile_seconds']}) | "
              f"{p['figures']} |" for p in out["phases"]]
    lines.append(f"| total | {out['total_seconds']} | {out['total_cpu_seconds']} | | load average "
                 f"{out['settings']['load_before']:.1f} -> {out['settings']['load_after']:.1f} on "
                 f"{out['settings']['cpus']} CPUs |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer problems, samples and steps (the CI test)")
    ap.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "rehearsal.json"))
    ap.add_argument("--shared", default=None, help="the shared data and tokenizers (default: ../shared)")
    ap.add_argument("--workdir", default=None, help="keep everything here (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    args = ap.parse_args(argv)
    out = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, default=str)
    print(table(out))
    print(f"stages ran: {out['stages_ran']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
