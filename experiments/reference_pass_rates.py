"""How many reference solutions pass their own tests through the code reward (a grader check).

    python experiments/reference_pass_rates.py [--files leetcode_test leetcode_train] [--workers 2]

Reads ../shared/data/code/NAME.json (rows with a `solutions` field, e.g. the rllm LeetCode
sets whose tests are assert-style `check(candidate)`), grades each reference solution with
the default code reward through a RewardPool, prints pass rates and the failure kinds, and
writes experiments/results/reference_pass_rates.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import time

from dsrl_jax.data.adapters import load_problems
from dsrl_jax.rewards import RewardPool, sandbox

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("DSRL_SHARED", ROOT.parent / "shared"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", nargs="+", default=["leetcode_test", "leetcode_train"])
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    out = {"bwrap": sandbox.resolve()[0], "files": {}}
    with RewardPool(num_workers=args.workers) as pool:
        for name in args.files:
            path = SHARED / "data" / "code" / f"{name}.json"
            rows = json.loads(path.read_text())
            records, report = load_problems(path)
            assert report.skipped == 0, str(report)
            responses = [f"<think>.</think>\n```python\n{row['solutions']}\n```" for row in rows]
            start = time.monotonic()
            results = pool.score(responses, records)
            seconds = time.monotonic() - start
            failures = [(r["id"], res.info.get("error")) for r, res in zip(records, results) if res.score != 1]
            kinds = collections.Counter(kind for _, kind in failures)
            passed = len(records) - len(failures)
            out["files"][name] = {"n": len(records), "passed": passed, "rate": passed / len(records),
                                  "failure_kinds": dict(kinds), "failures": failures[:50],
                                  "seconds": seconds}  # fmt: skip
            print(f"{name}: {passed}/{len(records)} = {100 * passed / len(records):.1f}% pass "
                  f"({seconds:.0f} s); failures by kind: {dict(kinds)}")  # fmt: skip
    path = ROOT / "experiments" / "results" / "reference_pass_rates.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
