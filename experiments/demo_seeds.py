"""The CPU demo over several seeds: mean ± sd of its held-out table.

    for s in 0 1 2; do python -m dsrl_jax.main --config=configs/demo.py --workdir=runs/demo_s$s --config.seed=$s; done
    python experiments/demo_seeds.py --demo_workdirs runs/demo_s0,runs/demo_s1,runs/demo_s2

Reads each workdir's demo_results.json (the seed changes the problems, the warm start, the
scoring samples and GRPO's rollouts) and writes experiments/results/demo_seeds.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def rows(results: list[dict]) -> list[tuple[str, list[float], list[float]]]:
    out = [("Pass@1 (sampled, T=1)", [r["before"]["pass@1"] for r in results], [r["after"]["pass@1"] for r in results]),
           ("greedy accuracy", [r["before"]["greedy_accuracy"] for r in results],
            [r["after"]["greedy_accuracy"] for r in results])]
    for k in results[0]["before"]["by_difficulty"]:
        out.append((f"Pass@1, {k}-step problems", [r["before"]["by_difficulty"][k] for r in results],
                    [r["after"]["by_difficulty"][k] for r in results]))
    return out


def fmt(xs, sign: bool = False) -> str:
    xs = 100 * np.asarray(xs, float)
    m = f"{xs.mean():+.1f}" if sign else f"{xs.mean():.1f}"
    return f"{m} ± {xs.std(ddof=1):.1f}" if len(xs) > 1 else m


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo_workdirs", required=True)
    p.add_argument("--out", default=os.path.join(RESULTS, "demo_seeds"))
    args = p.parse_args()
    dirs = [d for d in args.demo_workdirs.split(",") if d]
    results = []
    for d in dirs:
        with open(os.path.join(d, "demo_results.json")) as f:
            results.append(json.load(f))
    lines = [f"CPU demo, {len(results)} seeds, mean ± sd over seeds (per-seed values in brackets):", "",
             "| held-out | warm start | after GRPO | change | per-seed after |", "|---|---|---|---|---|"]
    for label, before, after in rows(results):
        change = [a - b for a, b in zip(after, before)]
        per = ", ".join(f"{100 * a:.1f}" for a in after)
        lines.append(f"| {label} | {fmt(before)} | {fmt(after)} | {fmt(change, sign=True)} | [{per}] |")
    steps = [r["steps"] for r in results]
    lines += ["", f"GRPO steps per seed: {steps}; minutes per seed: {[round(r['minutes'], 1) for r in results]}"]
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"workdirs": dirs, "results": results}, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
