"""Grade responses produced elsewhere (e.g. by vLLM) with the training rewards.

    python -m dsrl_jax.grade --data PROBLEMS --responses RESPONSES.jsonl [--out OUT.jsonl]
        [--workers 4] [--timeout 120] [--test-timeout 6] [--rewards '{"code": [...]}']

PROBLEMS: JSONL/JSON/parquet in the canonical schema or any adapter's format
(dsrl_jax/data/adapters.py). RESPONSES: lines {"id", "response"}, several per id allowed.
OUT gets one line per graded response: {"id", "sample", "reward", "correct", "details"}.
The last line of stdout is a summary JSON object: n_problems, n_responses, mean_reward,
pass@1 and pass@k for k = 2, 4, ... up to the fewest samples any problem has, plus that
number itself; pass@k is the unbiased estimator 1 - C(n-c, k) / C(n, k) averaged over
problems, where a response is correct when its reward is >= 1 (dsrl_jax.eval_metrics, the
definition evaluation uses too).

Every argument is checked before any work starts; a fatal input error prints one line
`grade: error: ...` naming the argument and exits 2 (1 when nothing could be graded or
no sandbox is available). Malformed data or response lines are counted and skipped.
OUT is written line by line, in input order, as results arrive.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys

from tqdm import tqdm

from dsrl_jax import eval_metrics
from dsrl_jax.data.adapters import ADAPTERS, BadLine, load_problems, parse_line
from dsrl_jax.rewards import DEFAULT_CONFIG, RewardPool, parse_reward_config, sandbox


class GradeError(Exception):
    """A fatal input error: one line for the user (naming the argument), non-zero exit."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + error
        raise GradeError(message)


def read_responses(path: str) -> tuple[list[dict], int]:
    """{id, response} rows of a JSONL file; lines that are not such rows are counted."""
    rows, bad = [], 0
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            row = parse_line(line, n + 1)
            if (not isinstance(row, BadLine) and isinstance(row, dict)
                    and isinstance(row.get("response"), str) and isinstance(row.get("id"), (str, int))):  # fmt: skip
                rows.append({"id": str(row["id"]), "response": row["response"]})
            else:
                bad += 1
    return rows, bad


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise GradeError(f"{name} must be a finite number of seconds > 0, got {value}")


def _readable(name: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise GradeError(f"{name}: cannot read {path}: {e.strerror or e}") from None
    if os.path.isdir(path):
        raise GradeError(f"{name}: {path} is a directory")


def _reward_config(args) -> dict:
    if args.rewards:
        try:
            cfg = json.loads(args.rewards)
        except (ValueError, RecursionError) as e:
            raise GradeError(f"--rewards is not JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise GradeError("--rewards must be a JSON object {domain: [{name, weight, options}]}")
    else:
        cfg = json.loads(json.dumps(DEFAULT_CONFIG))
        for spec in cfg["code"]:
            spec["options"] = {"per_test_timeout_s": args.test_timeout, "all_pass": args.all_pass}
    if args.allow_unsandboxed:
        cfg["allow_unsandboxed"] = True
    try:
        parse_reward_config(cfg)
    except (ValueError, TypeError, AttributeError) as e:
        raise GradeError(f"--rewards: {e}") from None
    return cfg


def parse_args(argv: list[str] | None):
    """Parse and check every argument before any work starts (GradeError names the bad one)."""
    p = _Parser(prog="python -m dsrl_jax.grade", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", required=True, help="problems file (any supported format)")
    p.add_argument("--responses", required=True, help="JSONL of {id, response}")
    p.add_argument("--out", help="JSONL written with one graded line per response")
    p.add_argument("--format", default="auto", help=f"problem row format: auto (default), {', '.join(ADAPTERS)}")
    p.add_argument("--workers", type=int, default=2, help="reward worker processes (0: in-process)")
    p.add_argument("--timeout", type=float, default=None, help="hard seconds per response (default: math 10, code 120)")
    p.add_argument("--test-timeout", type=float, default=6.0, help="seconds per code test")
    p.add_argument("--all-pass", action="store_true", help="code reward 1 only if every test passes")
    p.add_argument("--rewards", default=None, help="reward config as JSON {domain: [{name, weight, options}]}")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="run code without bubblewrap if it is unavailable (unsafe; see README)")
    args = p.parse_args(argv)
    if not 0 <= args.workers <= 1024:
        raise GradeError(f"--workers must be between 0 and 1024, got {args.workers}")
    _positive("--timeout", args.timeout)
    _positive("--test-timeout", args.test_timeout)
    if args.format != "auto" and args.format not in ADAPTERS:
        raise GradeError(f"--format {args.format!r} is unknown; known: auto, {', '.join(ADAPTERS)}")
    _readable("--data", args.data)
    _readable("--responses", args.responses)
    if args.out:
        parent = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(parent):
            raise GradeError(f"--out: directory {parent} does not exist")
        if os.path.isdir(args.out) or not os.access(parent, os.W_OK):
            raise GradeError(f"--out: cannot write {args.out}")
    return args, _reward_config(args)


def grade(argv: list[str] | None = None) -> dict:
    """The CLI's work; raises GradeError for anything fatal (main prints it)."""
    args, cfg = parse_args(argv)
    try:
        records, report = load_problems(args.data, args.format)
    except (OSError, ValueError) as e:
        raise GradeError(f"--data: {e}") from None
    print(f"problems: {report}", file=sys.stderr)
    if not records:
        raise GradeError(f"--data: no problem could be loaded ({report})", code=1)
    by_id = {r["id"]: r for r in records}
    responses, bad_lines = read_responses(args.responses)
    known = [r for r in responses if r["id"] in by_id]
    unknown = len(responses) - len(known)
    if bad_lines or unknown:
        print(f"responses: {bad_lines} malformed lines, {unknown} with unknown ids (skipped)", file=sys.stderr)
    if not known:
        raise GradeError(
            f"nothing could be graded: {len(responses)} responses, {bad_lines} malformed lines, "
            f"none with an id of the {len(records)} problems in --data", code=1,
        )  # fmt: skip
    if any(by_id[r["id"]]["domain"] == "code" for r in known):
        sandbox.configure(allow_unsandboxed=bool(cfg.get("allow_unsandboxed", False)))
        try:
            sandbox.resolve()
        except sandbox.SandboxUnavailable as e:
            raise GradeError(str(e), code=1) from None

    by_problem: dict[str, list[bool]] = collections.defaultdict(list)
    rewards = []
    out = open(args.out, "w", encoding="utf-8") if args.out else None
    try:
        with RewardPool(cfg, num_workers=args.workers, timeout_s=args.timeout) as pool, \
                tqdm(total=len(known), desc="grading", unit="resp", file=sys.stderr) as bar:  # fmt: skip
            handle = pool.submit([r["response"] for r in known], [by_id[r["id"]] for r in known])
            for fut in handle.futures:
                fut.add_done_callback(lambda _: bar.update(1))
            for row, fut in zip(known, handle.futures):  # written in input order as they finish
                try:
                    res = fut.result()
                except sandbox.SandboxUnavailable as e:
                    raise GradeError(f"{e} ({len(rewards)} responses graded before it)", code=1) from None
                correct = eval_metrics.is_correct(res.score)
                line = {"id": row["id"], "sample": len(by_problem[row["id"]]), "reward": res.score,
                        "correct": correct, "details": res.info}  # fmt: skip
                by_problem[row["id"]].append(correct)
                rewards.append(res.score)
                if out:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
    finally:
        if out:
            out.close()
    summary = {"n_problems": len(by_problem), "n_responses": len(rewards),
               "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0, **eval_metrics.pass_at_ks(by_problem)}
    summary.update(skipped_problem_rows=report.skipped, malformed_responses=bad_lines, unknown_ids=unknown)
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> dict:
    """Run the CLI: a fatal error prints one line `grade: error: ...` and exits non-zero."""
    try:
        return grade(argv)
    except GradeError as e:
        print(f"grade: error: {e}", file=sys.stderr)
        raise SystemExit(e.code) from None


if __name__ == "__main__":
    main()
