"""Grade responses produced elsewhere (e.g. by vLLM) with the training rewards.

    python -m dsrl_jax.grade --data PROBLEMS --responses RESPONSES.jsonl [--out OUT.jsonl]
        [--workers 4] [--timeout 120] [--test-timeout 6] [--rewards '{"code": [...]}']

PROBLEMS: JSONL/JSON/parquet in the canonical schema or any adapter's format
(dsrl_jax/data/adapters.py). RESPONSES: lines {"id", "response"}, several per id allowed.
OUT gets one line per graded response: {"id", "sample", "reward", "correct", "details"}.
The last line of stdout is a summary JSON object: n_problems, n_responses, mean_reward,
pass@1 and pass@k for k = 2, 4, ... up to the fewest samples any problem has, plus that
number itself; pass@k is the unbiased estimator 1 - C(n-c, k) / C(n, k) averaged over
problems, where a response is correct when every reward component scored 1.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import math
import sys

from tqdm import tqdm


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ks_for(min_samples: int) -> list[int]:
    ks, k = [], 1
    while k <= min_samples:
        ks.append(k)
        k *= 2
    return ks + ([min_samples] if min_samples and min_samples not in ks else [])


def summarize(by_problem: dict[str, list[bool]], rewards: list[float]) -> dict:
    summary = {
        "n_problems": len(by_problem),
        "n_responses": len(rewards),
        "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
    }
    if by_problem:
        for k in ks_for(min(len(v) for v in by_problem.values())):
            per_problem = [pass_at_k(len(v), sum(v), k) for v in by_problem.values()]
            summary[f"pass@{k}"] = sum(per_problem) / len(per_problem)
    return summary


def read_responses(path: str) -> tuple[list[dict], int]:
    rows, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if isinstance(row.get("response"), str) and row.get("id") is not None:
                    rows.append({"id": str(row["id"]), "response": row["response"]})
                    continue
            except (ValueError, AttributeError):
                pass
            bad += 1
    return rows, bad


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="problems file (any supported format)")
    p.add_argument("--responses", required=True, help="JSONL of {id, response}")
    p.add_argument("--out", help="JSONL written with one graded line per response")
    p.add_argument("--format", default="auto", help="problem row format (default: auto-detect)")
    p.add_argument("--workers", type=int, default=2, help="reward worker processes (0: in-process)")
    p.add_argument("--timeout", type=float, default=None, help="hard seconds per response (default: math 10, code 120)")
    p.add_argument("--test-timeout", type=float, default=6.0, help="seconds per code test")
    p.add_argument("--all-pass", action="store_true", help="code reward 1 only if every test passes")
    p.add_argument("--rewards", default=None, help="reward config as JSON {domain: [{name, weight, options}]}")
    args = p.parse_args(argv)

    from dsrl_jax.data.adapters import load_problems
    from dsrl_jax.rewards import DEFAULT_CONFIG, RewardPool

    records, report = load_problems(args.data, args.format)
    print(f"problems: {report}", file=sys.stderr)
    by_id = {r["id"]: r for r in records}
    responses, bad_lines = read_responses(args.responses)
    known = [r for r in responses if r["id"] in by_id]
    unknown = len(responses) - len(known)
    if bad_lines or unknown:
        print(f"responses: {bad_lines} malformed lines, {unknown} with unknown ids (skipped)", file=sys.stderr)

    if args.rewards:
        cfg = json.loads(args.rewards)
    else:
        cfg = json.loads(json.dumps(DEFAULT_CONFIG))
        for spec in cfg["code"]:
            spec["options"] = {"per_test_timeout_s": args.test_timeout, "all_pass": args.all_pass}

    with RewardPool(cfg, num_workers=args.workers, timeout_s=args.timeout) as pool:
        handle = pool.submit([r["response"] for r in known], [by_id[r["id"]] for r in known])
        with tqdm(total=len(known), desc="grading", unit="resp", file=sys.stderr) as bar:
            for _ in concurrent.futures.as_completed(handle.futures):
                bar.update(1)
        results = handle.result()

    by_problem: dict[str, list[bool]] = collections.defaultdict(list)
    rewards = []
    out = open(args.out, "w", encoding="utf-8") if args.out else None
    try:
        for row, res in zip(known, results):
            correct = bool(res.info.get("correct", False))
            line = {"id": row["id"], "sample": len(by_problem[row["id"]]), "reward": res.score,
                    "correct": correct, "details": res.info}  # fmt: skip
            by_problem[row["id"]].append(correct)
            rewards.append(res.score)
            if out:
                out.write(json.dumps(line) + "\n")
    finally:
        if out:
            out.close()
    summary = summarize(by_problem, rewards)
    summary.update(skipped_problem_rows=report.skipped, malformed_responses=bad_lines, unknown_ids=unknown)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
