"""Reward throughput by worker count: math verifications/s and code test runs/s.

    python experiments/bench_rewards.py [--workers 1 2 4] [--math 200] [--code 40]

Math: reference answers of MATH-500 (../shared) written back as \\boxed{} responses.
Code: reference solutions of leetcode_test (assert tests, one sandboxed process each) and a
stdin program over codeforces tests (one sandboxed process per test). Prints a table and
writes experiments/results/bench_rewards.json. Pool start-up is excluded from the timings.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

from dsrl_jax.data.adapters import load_problems
from dsrl_jax.rewards import RewardPool, sandbox

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("DSRL_SHARED", ROOT.parent / "shared"))


def workloads(n_math: int, n_code: int):
    math, _ = load_problems(SHARED / "data/math/math500.jsonl")
    math = math[:n_math]
    math_resp = [f"<think>.</think>The answer is $\\boxed{{{r['answer']}}}$." for r in math]
    lc_path = SHARED / "data/code/leetcode_test.json"
    leet, _ = load_problems(lc_path)
    solutions = [row["solutions"] for row in json.loads(lc_path.read_text())]
    cf, _ = load_problems(SHARED / "data/code/codeforces_test.json")
    echo = "import sys\nsys.stdout.write(sys.stdin.read())"  # a cheap program; wrong answers are fine
    code = leet[: n_code // 2] + cf[: n_code // 2]
    code_resp = [f"```python\n{s}\n```" for s in solutions[: n_code // 2]] + [f"```python\n{echo}\n```"] * (n_code // 2)
    return (math, math_resp), (code, code_resp)


def timed(pool, responses, records) -> float:
    pool.score(responses[:2], records[:2])  # warm every path once
    start = time.monotonic()
    pool.score(responses, records)
    return time.monotonic() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--math", type=int, default=200)
    p.add_argument("--code", type=int, default=40)
    args = p.parse_args()
    (math, math_resp), (code, code_resp) = workloads(args.math, args.code)
    n_tests = sum(len(r["tests"]) for r in code)
    bwrap, python = sandbox.resolve()
    rows = []
    for workers in args.workers:
        with RewardPool(num_workers=workers) as pool:
            math_s = timed(pool, math_resp, math)
            code_s = timed(pool, code_resp, code)
        rows.append({"workers": workers, "math_verifications_per_s": len(math) / math_s,
                     "code_samples_per_s": len(code) / code_s, "code_test_runs_per_s": n_tests / code_s})
    print(f"cpus={os.cpu_count()} bwrap={bwrap} sandbox_python={python} math={len(math)} "
          f"code samples={len(code)} code tests={n_tests}")
    print(f"{'workers':>7} | {'math verif/s':>12} | {'code samples/s':>14} | {'code tests/s':>12}")
    for r in rows:
        print(f"{r['workers']:>7} | {r['math_verifications_per_s']:>12.1f} | "
              f"{r['code_samples_per_s']:>14.1f} | {r['code_test_runs_per_s']:>12.1f}")
    out = ROOT / "experiments/results/bench_rewards.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": platform.node(), "cpus": os.cpu_count(), "bwrap": bwrap,
                               "n_math": len(math), "n_code_samples": len(code), "n_code_tests": n_tests,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
