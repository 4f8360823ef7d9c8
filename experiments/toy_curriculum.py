"""Toy ablation of the curriculum on the CPU demo task (configs/demo.py).

    python experiments/toy_curriculum.py --demo_workdir /tmp/p/demo2 [--steps 40] [--seeds 0,1,2]
        [--variants staged-levels,single-L3,single-random,staged-random] [--workdir /tmp/toy_curriculum]

Two questions, answered with the same warm start, the same scored problems and the same
GRPO step budget (and optimizer, batch, group size) for every run:
  (a) level-selected vs random data: staged-levels vs staged-random, single-L3 vs single-random;
  (b) staged vs single-stage: staged-levels vs single-L3 (and staged-random vs single-random).

Variants (stages on top of configs/demo.py's get_config()):
  staged-levels   stage1: L2, responses <= 48 tokens, entropy 0.001 -> stage2: L3, <= 64 tokens,
                  no entropy, truncation masked (the demo's stages). The switch happens at a fixed
                  step (steps // 2) by default so that all staged runs split the budget alike;
                  --switch plateau uses the demo's plateau rule, capped at steps // 2.
  staged-random   the same two stages (lengths, loss switches) on all kept problems.
  single-L3       one stage: L3, stage2's length and loss.
  single-random   one stage: all kept problems, stage2's length and loss.
Seeds set config.seed (rollout RNG) and config.data.seed (data order).

The warm start and the scored problems are read from --demo_workdir (models/warm-start,
models/sft-early, scored/problems.jsonl, eval_problems.jsonl); when absent they are built
there by the demo's own helpers (dsrl_jax/demo/run.py). Held-out Pass@1 (n=4, T=1, fixed
evaluation seed) and greedy accuracy are measured on the demo's eval split once before
GRPO and after every run. Each finished run leaves <workdir>/<variant>/seed<k>/result.json,
which a re-run reuses, so an interrupted sweep resumes.

Writes experiments/results/toy_curriculum.{json,md,png}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("staged-levels", "single-L3", "single-random", "staged-random")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _stages(variant: str, steps: int, switch: str, base_stages: list[dict]) -> list[dict]:
    """The curriculum of one variant; the demo's two stages give the lengths and loss options."""
    s1, s2 = (copy.deepcopy(s) for s in base_stages)
    first = max(1, steps // 2)
    levels1 = s1["data"]["levels"] if variant == "staged-levels" else None
    levels2 = s2["data"]["levels"] if variant in ("staged-levels", "single-L3") else None
    s1["data"]["levels"], s2["data"]["levels"] = levels1, levels2
    if variant.startswith("staged"):
        s1["end"]["max_steps"] = first
        if switch == "fixed":
            s1["end"]["plateau"] = None
        s2["end"] = {"max_steps": max(1, steps - first), "plateau": None}
        return [s1, s2]
    s2["name"] = "single"
    s2["end"] = {"max_steps": steps, "plateau": None}
    return [s2]


def _config(variant, seed, steps, switch, reward_workers):
    from configs.demo import get_config

    c = get_config()
    stages = [dict(s) for s in c.curriculum.stages]
    with c.unlocked():
        c.seed, c.data.seed = seed, seed
        c.total_steps = steps
        c.curriculum.stages = _stages(variant, steps, switch, stages)
        c.eval.every = 0  # held-out evaluation happens before and after, here
        c.eval.benchmarks = ""
        c.checkpoint.every = 10 ** 6  # only the final save (the trainer always makes one)
        c.checkpoint.keep = 1
        c.log.tensorboard = False
        c.log.progress = False
        c.reward_workers = reward_workers
    return c


def _demo_assets(demo_workdir: str, reward_workers: int):
    """(cfg, tokenizer, {proxy: params}, scored records, eval records), built if missing."""
    from configs.demo import get_config
    from dsrl_jax.demo import run as demo_run
    from dsrl_jax.demo.sft import demo_model_config
    from dsrl_jax.demo.task import make_splits
    from dsrl_jax.demo.tokenizer import CharTokenizer

    config = get_config()
    with config.unlocked():
        config.reward_workers = reward_workers
    d, tok = config.demo, CharTokenizer()
    cfg = demo_model_config(tok.vocab_size, scan_layers=config.model.scan_layers)
    splits = make_splits({"eval": d.eval_size, "sft": d.sft_size, "rl": d.rl_size}, seed=config.seed)
    params, dirs = demo_run._warm_start_models(config, cfg, tok, splits["sft"], demo_workdir)
    scored = os.path.join(demo_workdir, "scored", "problems.jsonl")
    if os.path.exists(scored):
        with open(scored) as f:
            records = [json.loads(line) for line in f if line.strip()]
    else:
        records = demo_run._score(config, tok, splits["rl"], dirs, demo_workdir)
    eval_file = os.path.join(demo_workdir, "eval_problems.jsonl")
    if os.path.exists(eval_file):
        with open(eval_file) as f:
            eval_records = [json.loads(line) for line in f if line.strip()]
    else:
        eval_records = splits["eval"]
    return config, cfg, tok, params, records, eval_records


def _evaluate(config, cfg, params, tok, eval_records, pool, out_dir):
    """The demo's held-out evaluation (Pass@1 n=4 T=1 and greedy), with evaluation seed 0."""
    from dsrl_jax.demo import run as demo_run

    c = copy.deepcopy(config)
    with c.unlocked():
        c.seed = 0  # the same sampling noise for every policy evaluated
    res = demo_run._evaluate(cfg, params, tok, eval_records, c, pool, out_dir, "heldout")
    return {k: res[k] for k in ("pass@1", "greedy_accuracy", "by_difficulty")}


def _read_curve(workdir: str) -> list[tuple[int, float, str]]:
    out = []
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "reward/mean" in row:
                    out.append((int(row["step"]), float(row["reward/mean"]), row.get("stage", "")))
    return out


def _one_run(variant, seed, args, assets, pool):
    import jax

    from dsrl_jax.rl.trainer import Trainer

    base_config, cfg, tok, params, records, eval_records = assets
    workdir = os.path.join(args.workdir, variant, f"seed{seed}")
    done = os.path.join(workdir, "result.json")
    if os.path.exists(done):
        with open(done) as f:
            res = json.load(f)
        if res.get("steps_budget") == args.steps and res.get("switch") == args.switch:
            print(f"[{variant} seed {seed}] reusing {done}")
            return res
    if os.path.exists(workdir):  # a stale or different run: start over
        import shutil

        shutil.rmtree(workdir)
    config = _config(variant, seed, args.steps, args.switch, args.reward_workers)
    t0 = time.perf_counter()
    # A host copy per run: the trainer donates its parameter buffers to the update step.
    warm = jax.tree.map(lambda x: np.array(x, copy=True), params["warm-start"])
    trainer = Trainer(config, workdir, records=records, tokenizer=tok, model=(cfg, warm),
                      tokenize_fn=lambda r: tok.format_prompt(r["problem"]))
    try:
        trainer.run()
        final = jax.device_get(trainer.state["params"])
        steps = int(trainer.state["step"])
    finally:
        trainer.close()
    from dsrl_jax.data.pipeline import select_records

    stage_sizes = [len(select_records(records, s["data"]["levels"], None)) for s in config.curriculum.stages]
    train_min = (time.perf_counter() - t0) / 60
    after = _evaluate(base_config, cfg, final, tok, eval_records, pool, workdir)
    curve = _read_curve(workdir)
    switch_step = next((st for st, _, name in curve if name == "stage2"), None)
    res = {"variant": variant, "seed": seed, "steps": steps, "steps_budget": args.steps, "switch": args.switch,
           "switch_step": None if switch_step is None else switch_step - 1,
           "stage_records": stage_sizes, "after": after, "train_minutes": train_min,
           "train_reward_last10": float(np.mean([r for _, r, _ in curve[-10:]])) if curve else None}
    with open(done, "w") as f:
        json.dump(res, f, indent=2)
    print(f"[{variant} seed {seed}] {steps} steps in {train_min:.1f} min: held-out Pass@1 "
          f"{after['pass@1']:.3f}, greedy {after['greedy_accuracy']:.3f}", flush=True)
    return res


def _mean_std(xs):
    xs = np.asarray(xs, float)
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def _summarise(before, runs, variants, seeds):
    table = {}
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        row = {"seeds": [r["seed"] for r in rs], "n": len(rs)}
        for key in ("pass@1", "greedy_accuracy"):
            vals = [r["after"][key] for r in rs]
            m, s = _mean_std(vals)
            row[key] = {"mean": m, "std": s, "per_seed": vals, "delta_mean": m - before[key]}
        diffs = sorted({k for r in rs for k in r["after"]["by_difficulty"]})
        row["by_difficulty"] = {k: _mean_std([r["after"]["by_difficulty"][k] for r in rs])[0] for k in diffs}
        row["stage_records"] = rs[0]["stage_records"]
        table[v] = row
    return table


def _markdown(before, table, steps, switch) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"Held-out Pass@1 (n=4, T=1) and greedy accuracy, 200 problems; {steps} GRPO steps per run "
             f"(staged: switch at a {switch} step); mean ± std over seeds (per-seed values in brackets).", "",
             "| variant | stage data (records) | Pass@1 | Δ vs warm start | greedy | per-seed Pass@1 |",
             "|---|---|---|---|---|---|",
             f"| warm start (before GRPO) | – | {pct(before['pass@1'])} | – | {pct(before['greedy_accuracy'])} | – |"]
    for v, row in table.items():
        p, g = row["pass@1"], row["greedy_accuracy"]
        per = ", ".join(pct(x) for x in p["per_seed"])
        lines.append(f"| {v} | {' → '.join(map(str, row['stage_records']))} | {pct(p['mean'])} ± {pct(p['std'])} | "
                     f"{100 * p['delta_mean']:+.1f} | {pct(g['mean'])} ± {pct(g['std'])} | [{per}] |")
    diffs = list(before["by_difficulty"])
    lines += ["", "Pass@1 by problem length (steps in the chain), mean over seeds:", "",
              "| variant | " + " | ".join(f"{k}-step" for k in diffs) + " |", "|---|" + "---|" * len(diffs),
              "| warm start | " + " | ".join(pct(before["by_difficulty"][k]) for k in diffs) + " |"]
    for v, row in table.items():
        lines.append(f"| {v} | " + " | ".join(pct(row["by_difficulty"].get(k, float("nan"))) for k in diffs) + " |")
    return "\n".join(lines)


def _plot(before, table, runs, variants, steps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [v for v in variants if v in table]
    x = np.arange(len(names))
    w = 0.38
    for off, key, label in ((-w / 2, "pass@1", "Pass@1 (n=4, T=1)"), (w / 2, "greedy_accuracy", "greedy")):
        means = [100 * table[v][key]["mean"] for v in names]
        stds = [100 * table[v][key]["std"] for v in names]
        bars = ax1.bar(x + off, means, w, yerr=stds, capsize=4, label=label, alpha=0.8)
        for i, v in enumerate(names):  # the individual seeds
            ax1.scatter(np.full(len(table[v][key]["per_seed"]), x[i] + off),
                        [100 * s for s in table[v][key]["per_seed"]], color="k", s=10, zorder=3)
        ax1.axhline(100 * before[key], color=bars.patches[0].get_facecolor(), ls="--", lw=1,
                    label=f"warm start ({label})")
    ax1.set_xticks(x, names, rotation=15)
    ax1.set_ylabel("held-out accuracy (%)")
    ax1.set_title("After GRPO: mean ± std over seeds (dots: seeds)")
    ax1.legend(fontsize=8, loc="lower right")
    for i, v in enumerate(names):
        curves = [np.array([r for _, r, _ in r_["curve"]]) for r_ in runs if r_["variant"] == v and r_["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)
        k = min(5, n)
        smooth = np.convolve(mean, np.ones(k) / k, mode="valid")
        ax2.plot(np.arange(k, n + 1), smooth, label=v, color=f"C{i}")
    if any(v.startswith("staged") for v in names):
        ax2.axvline(max(1, steps // 2) + 0.5, color="gray", ls=":", lw=1, label="stage switch (staged)")
    ax2.set_xlabel("GRPO step")
    ax2.set_ylabel("training reward (5-step moving avg, mean over seeds)")
    ax2.set_title("Training reward (on each variant's own data)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo_workdir", default="/tmp/p/demo2")
    p.add_argument("--workdir", default="/tmp/toy_curriculum", help="run directories (not committed)")
    p.add_argument("--out", default=os.path.join(RESULTS, "toy_curriculum"), help="output path without extension")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--switch", choices=("fixed", "plateau"), default="fixed")
    p.add_argument("--reward_workers", type=int, default=1)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    variants = [v for v in args.variants.split(",") if v]
    bad = set(variants) - set(VARIANTS)
    if bad:
        p.error(f"unknown variants {sorted(bad)}; known {VARIANTS}")
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)

    from dsrl_jax.rewards import RewardPool

    t0 = time.perf_counter()
    assets = _demo_assets(args.demo_workdir, args.reward_workers)
    config, cfg, tok, params, records, eval_records = assets
    runs = []
    with RewardPool(config.rewards.to_dict(), num_workers=args.reward_workers) as pool:
        before_file = os.path.join(args.workdir, "before.json")
        if os.path.exists(before_file):
            with open(before_file) as f:
                before = json.load(f)
        else:
            before = _evaluate(config, cfg, params["warm-start"], tok, eval_records, pool,
                               os.path.join(args.workdir, "before"))
            with open(before_file, "w") as f:
                json.dump(before, f, indent=2)
        print(f"warm start: held-out Pass@1 {before['pass@1']:.3f}, greedy {before['greedy_accuracy']:.3f}", flush=True)
        for seed in seeds:  # seeds outermost: an interrupted sweep has every variant at some seeds
            for v in variants:
                res = _one_run(v, seed, args, assets, pool)
                res["curve"] = _read_curve(os.path.join(args.workdir, v, f"seed{seed}"))
                runs.append(res)
                _write(args, before, runs, variants, seeds, records, eval_records, t0, final=False)
    _write(args, before, runs, variants, seeds, records, eval_records, t0, final=True)


def _write(args, before, runs, variants, seeds, records, eval_records, t0, final):
    table = _summarise(before, runs, variants, seeds)
    md = _markdown(before, table, args.steps, args.switch)
    levels = {}
    for r in records:
        for lv in r.get("levels", []):
            levels[lv] = levels.get(lv, 0) + 1
    out = {"complete": final, "steps": args.steps, "seeds": seeds, "variants": variants, "switch": args.switch,
           "demo_workdir": args.demo_workdir, "records": len(records), "levels": levels,
           "eval_problems": len(eval_records), "before": before, "table": table,
           "runs": [{k: v for k, v in r.items() if k != "curve"} | {"train_reward": [x[1] for x in r["curve"]]}
                    for r in runs],
           "minutes": (time.perf_counter() - t0) / 60}
    with open(args.out + ".json", "w") as f:
        json.dump(out, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(md + "\n")
    _plot(before, table, runs, variants, args.steps, args.out + ".png")
    if final:
        print(md)
        print(f"wrote {args.out}.{{json,md,png}} ({out['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
