"""Toy study of the curriculum on the CPU demo task: can level selection and staging tell?

    python experiments/toy_curriculum.py --demo_workdir runs/demo_s0 [--steps 16] [--seeds 0,1,2,3,4]
        [--variants staged,continued-stage-1,single-L1,single-L3,random] [--workdir /tmp/toy_curriculum]

--demo_workdir is a finished demo run (python -m dsrl_jax.main --config=configs/demo.py):
its warm start (models/warm-start) is the policy every variant starts from, its held-out
split (eval_problems.jsonl) is the test set, and its GRPO result (the workdir itself, a
policy spec) is the "strong" proxy. The demo's own levels barely select (with
its weak step-300 proxy, L2 holds 343 of 348 kept problems), so here the RL pool (the
demo's 512 RL problems, 1-5 steps) is rescored with k=8 samples at T=1 by two proxies in
the paper's roles: "policy" = the warm
start itself (the paper's 1.5B is its initial policy) and "strong" = the demo's GRPO result
(a stronger model of the same family). Levels, the paper's rules on these proxies:
  L1  policy rate in (0, 1)
  L2  policy = 0 and strong > 0, or both in (0, 1)
  L3  strong <= 0.25 (hard for the strong proxy) and solved by one of them, plus a seeded
      half of the rest that is solved
and "random" is the whole pool with no selection (never-solved and always-solved included).

Variants, all with the same step budget, prompts per step and group size (matched
compute: the same number of rollouts and updates; stage 2's longer limit lets its
responses be longer), all from the same warm start:
  staged             stage 1 (L2, responses <= 40 tokens, entropy 0.001) for steps // 2,
                     then stage 2 (L3, <= 64 tokens, truncation masked, no entropy)
  continued-stage-1  stage 1's data and settings for all steps (the paper's baseline)
  single-L1/-L2/-L3  one level with stage 1's settings from step 0 (the paper's section 4.2;
                     single-L2 is continued-stage-1)
  random             the whole pool, stage 1's settings
Seeds set config.seed (rollout RNG) and config.data.seed (data order), so seed k pairs the
variants; paired t-tests over seeds compare them. Held-out Pass@1 (n=4, T=1, a fixed
evaluation seed) and greedy accuracy are measured before GRPO and after every run. Each
finished run leaves <workdir>/<variant>/seed<k>/result.json, which a re-run reuses.

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

import jax  # noqa: E402
import ml_collections  # noqa: E402

from configs.demo import get_config  # noqa: E402  (this checkout's, by the path above)
from dsrl_jax import score  # noqa: E402
from dsrl_jax.data.pipeline import select_records  # noqa: E402
from dsrl_jax.demo.run import evaluate_heldout  # noqa: E402
from dsrl_jax.rl.trainer import Trainer  # noqa: E402

VARIANTS = ("staged", "continued-stage-1", "single-L1", "single-L2", "single-L3", "random")
DEFAULT_VARIANTS = ("staged", "continued-stage-1", "single-L1", "single-L3", "random")
PAIRS = (("staged", "continued-stage-1"), ("single-L1", "random"), ("single-L1", "single-L3"),
         ("continued-stage-1", "random"), ("staged", "random"))
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PROXIES = ("policy", "strong")


def toy_level_rules():
    partial = lambda p: {"proxy": p, "op": "in_open", "value": [0, 1]}  # noqa: E731
    solved = {"any": [{"proxy": p, "op": "gt", "value": 0} for p in PROXIES]}
    return {
        "keep": None,  # the "random" variant trains on the whole pool
        "levels": [
            {"name": "L1", "when": partial("policy")},
            {"name": "L2", "when": {"any": [
                {"all": [{"proxy": "policy", "op": "eq", "value": 0}, {"proxy": "strong", "op": "gt", "value": 0}]},
                {"all": [partial("policy"), partial("strong")]}]}},
            {"name": "L3", "when": {"all": [solved, {"any": [
                {"proxy": "strong", "op": "le", "value": 0.25}, {"sample": {"math": 0.5}}]}]}},
            {"name": "all", "when": {"sample": {"math": 1.0}}},
        ],
    }


def _stages(variant: str, steps: int, base_stages: list[dict]) -> list[dict]:
    """The curriculum of one variant; the demo's two stages give the lengths and loss options."""
    s1, s2 = (copy.deepcopy(s) for s in base_stages)
    s1["end"]["plateau"] = None
    if variant == "staged":
        s1["data"]["levels"], s2["data"]["levels"] = ["L2"], ["L3"]
        s1["end"]["max_steps"] = max(1, steps // 2)
        s2["end"] = {"max_steps": max(1, steps - steps // 2), "plateau": None}
        return [s1, s2]
    level = {"continued-stage-1": "L2", "random": "all"}.get(variant) or variant.removeprefix("single-")
    s1["name"], s1["data"]["levels"] = variant, [level]
    s1["end"]["max_steps"] = steps
    return [s1]


def _config(variant, seed, steps, reward_workers, init: str, pool_file: str):
    """The demo config for one variant, its warm start and scored pool named by path."""
    c = get_config()
    stages = [dict(s) for s in c.curriculum.stages]
    c.seed, c.data.seed = seed, seed
    c.total_steps = steps
    c.model.init = init
    c.data.sources = [{"path": pool_file}]
    c.curriculum.stages = _stages(variant, steps, stages)
    c.eval.every = 0  # held-out evaluation happens before and after, here
    c.eval.benchmarks = ""
    c.checkpoint.every = 10 ** 6  # only the final save (the trainer always makes one)
    c.checkpoint.keep = 1
    c.log.tensorboard = False
    c.log.progress = False
    c.reward_workers = reward_workers
    return c


def _demo_assets(demo_workdir: str, workdir: str, reward_workers: int, score_k: int):
    """(demo config, warm-start model dir, scored pool file, its records, eval records).

    The pool is the demo's RL problems, scored by two proxies named by spec: the warm start
    (an HF directory) and the demo's GRPO result (its training workdir: the latest checkpoint)."""
    for name in ("rl_problems.jsonl", "eval_problems.jsonl", os.path.join("models", "warm-start", "tokenizer.json")):
        if not os.path.exists(os.path.join(demo_workdir, name)):
            raise SystemExit(f"--demo_workdir {demo_workdir}: no {name} (run the demo there first)")
    config = get_config()
    config.reward_workers = reward_workers
    warm_dir = os.path.join(demo_workdir, "models", "warm-start")
    with open(os.path.join(demo_workdir, "eval_problems.jsonl")) as f:
        eval_records = [json.loads(line) for line in f if line.strip()]
    scored = os.path.join(workdir, "scored", "pool.jsonl")
    if os.path.exists(scored):
        with open(scored) as f:
            return config, warm_dir, scored, [json.loads(line) for line in f if line.strip()], eval_records
    specs = {"policy": warm_dir, "strong": demo_workdir}
    proxy = lambda name: dict(name=name, model=specs[name], tokenizer=None, k=score_k, max_new_tokens=64,  # noqa: E731
                              temperature=1.0, top_p=1.0, top_k=0, batch_size=256, max_prompt_len=64,
                              dtype="float32")
    sc = ml_collections.ConfigDict(dict(
        sources=[{"path": os.path.join(demo_workdir, "rl_problems.jsonl")}], proxies=[proxy(p) for p in PROXIES],
        only_proxies="", pass_rates_file="", mesh={"fsdp": 1}, sharding_rules=config.sharding_rules.to_dict(),
        output=scored, progress="", prompt_mode="auto", rewards=config.rewards.to_dict(),
        reward_workers=reward_workers, level_rules=toy_level_rules(), level_seed=0, seed=0))
    return config, warm_dir, scored, score.run(sc), eval_records


def pool_summary(records) -> dict:
    """Shares of the pool the warm start never / always / sometimes solves, and level sizes."""
    rates = [r["pass_rates"]["policy"] for r in records]
    out = {"pool": len(records), "policy_never": sum(x == 0 for x in rates), "policy_always": sum(x == 1 for x in rates)}
    out["policy_partial"] = len(records) - out["policy_never"] - out["policy_always"]
    for lv in ("L1", "L2", "L3", "all"):
        out[lv] = sum(lv in r["levels"] for r in records)
    return out


def _evaluate(config, spec, eval_records, out_dir):
    """The demo's held-out evaluation (Pass@1 n=4 T=1 and greedy) of the policy `spec`
    names, with evaluation seed 0: the same sampling noise for every policy evaluated."""
    return evaluate_heldout(config, spec, eval_records, os.path.join(out_dir, "evals", "heldout"), seed=0)


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


def _one_run(variant, seed, args, assets):
    base_config, warm_dir, pool_file, records, eval_records = assets
    workdir = os.path.join(args.workdir, variant, f"seed{seed}")
    done = os.path.join(workdir, "result.json")
    if os.path.exists(done):
        with open(done) as f:
            res = json.load(f)
        if res.get("steps_budget") == args.steps:
            print(f"[{variant} seed {seed}] reusing {done}")
            return res
    if os.path.exists(workdir):  # a stale or different run: start over
        import shutil

        shutil.rmtree(workdir)
    config = _config(variant, seed, args.steps, args.reward_workers, warm_dir, pool_file)
    t0 = time.perf_counter()
    trainer = Trainer(config, workdir)
    try:
        trainer.run()
        steps = int(trainer.state["step"])
    finally:
        trainer.close()
    stage_sizes = [len(select_records(records, s["data"]["levels"], None)) for s in config.curriculum.stages]
    train_min = (time.perf_counter() - t0) / 60
    after = _evaluate(base_config, workdir, eval_records, workdir)  # its last checkpoint
    curve = _read_curve(workdir)
    switch_step = next((st for st, _, name in curve if name == "stage2"), None)
    res = {"variant": variant, "seed": seed, "steps": steps, "steps_budget": args.steps,
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


def paired_tests(runs, pairs=PAIRS, key="pass@1") -> list[dict]:
    """Paired t-tests over the seeds both variants ran (seed k: same data order and RNG)."""
    try:
        from scipy import stats
    except ImportError:  # experiments only: report the differences without p-values
        stats = None
    by = {(r["variant"], r["seed"]): r["after"][key] for r in runs}
    out = []
    for a, b in pairs:
        seeds = sorted(s for v, s in by if v == a and (b, s) in by)
        if len(seeds) < 2:
            continue
        d = np.array([by[a, s] - by[b, s] for s in seeds])
        p = float(stats.ttest_rel([by[a, s] for s in seeds], [by[b, s] for s in seeds]).pvalue) if stats else None
        out.append({"a": a, "b": b, "n": len(seeds), "mean_diff": float(d.mean()),
                    "sd_diff": float(d.std(ddof=1)), "p": p})
    return out


def _markdown(before, table, steps, pool, tests) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"Pool of {pool['pool']} problems: the warm start never solves {pool['policy_never']}, always solves "
             f"{pool['policy_always']} and sometimes solves {pool['policy_partial']} (k=8, T=1); "
             f"L1 {pool['L1']}, L2 {pool['L2']}, L3 {pool['L3']}.", "",
             f"Held-out Pass@1 (n=4, T=1) and greedy accuracy, 200 problems; {steps} GRPO steps per run "
             f"(staged: switch at step {steps // 2}); mean ± sd over seeds (per-seed values in brackets).", "",
             "| variant | stage data (records) | Pass@1 | Δ vs warm start | greedy | per-seed Pass@1 |",
             "|---|---|---|---|---|---|",
             f"| warm start (before GRPO) | – | {pct(before['pass@1'])} | – | {pct(before['greedy_accuracy'])} | – |"]
    for v, row in table.items():
        p, g = row["pass@1"], row["greedy_accuracy"]
        per = ", ".join(pct(x) for x in p["per_seed"])
        lines.append(f"| {v} | {' → '.join(map(str, row['stage_records']))} | {pct(p['mean'])} ± {pct(p['std'])} | "
                     f"{100 * p['delta_mean']:+.1f} | {pct(g['mean'])} ± {pct(g['std'])} | [{per}] |")
    if tests:
        lines += ["", "Paired comparisons of held-out Pass@1 (same seeds):", "",
                  "| comparison | seeds | mean difference ± sd | paired t-test p |", "|---|---|---|---|"]
        for t in tests:
            pv = "–" if t["p"] is None else f"{t['p']:.3f}"
            lines.append(f"| {t['a']} − {t['b']} | {t['n']} | {100 * t['mean_diff']:+.1f} ± {100 * t['sd_diff']:.1f} | {pv} |")
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
    if "staged" in names:
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
    p.add_argument("--demo_workdir", required=True, help="a finished demo run")
    p.add_argument("--workdir", default="/tmp/toy_curriculum", help="run directories (not committed)")
    p.add_argument("--out", default=os.path.join(RESULTS, "toy_curriculum"), help="output path without extension")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--score_k", type=int, default=8)
    p.add_argument("--reward_workers", type=int, default=1)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    variants = [v for v in args.variants.split(",") if v]
    bad = set(variants) - set(VARIANTS)
    if bad:
        p.error(f"unknown variants {sorted(bad)}; known {VARIANTS}")
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    # Every run compiles the same programs: share them through the persistent cache.
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

    t0 = time.perf_counter()
    assets = _demo_assets(args.demo_workdir, args.workdir, args.reward_workers, args.score_k)
    config, warm_dir, _, records, eval_records = assets
    pool_info = pool_summary(records)
    print(f"pool: {pool_info}", flush=True)
    runs = []
    before_file = os.path.join(args.workdir, "before.json")
    if os.path.exists(before_file):
        with open(before_file) as f:
            before = json.load(f)
    else:
        before = _evaluate(config, warm_dir, eval_records, os.path.join(args.workdir, "before"))
        with open(before_file, "w") as f:
            json.dump(before, f, indent=2)
    print(f"warm start: held-out Pass@1 {before['pass@1']:.3f}, greedy {before['greedy_accuracy']:.3f}", flush=True)
    for seed in seeds:  # seeds outermost: an interrupted sweep has every variant at some seeds
        for v in variants:
            res = _one_run(v, seed, args, assets)
            res["curve"] = _read_curve(os.path.join(args.workdir, v, f"seed{seed}"))
            runs.append(res)
            _write(args, before, runs, variants, seeds, records, eval_records, pool_info, t0, final=False)
    _write(args, before, runs, variants, seeds, records, eval_records, pool_info, t0, final=True)


def _write(args, before, runs, variants, seeds, records, eval_records, pool_info, t0, final):
    table = _summarise(before, runs, variants, seeds)
    tests = paired_tests(runs)
    md = _markdown(before, table, args.steps, pool_info, tests)
    out = {"complete": final, "steps": args.steps, "seeds": seeds, "variants": variants,
           "demo_workdir": args.demo_workdir, "pool": pool_info, "eval_problems": len(eval_records),
           "before": before, "table": table, "paired_tests": tests,
           "paired_tests_greedy": paired_tests(runs, key="greedy_accuracy"),
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
