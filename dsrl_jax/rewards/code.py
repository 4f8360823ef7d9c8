"""Code reward: run the response's last Python block against the problem's tests.

Test kinds (canonical schema, see dsrl_jax/data/schema.py):
  stdin       {"testtype": "stdin", "input", "output"}: one fresh sandboxed process per test;
              stdout compared with LiveCodeBench semantics (`stdin_output_matches`).
  functional  {"testtype": "functional", "fn_name"?, "input", "output"}: `input` is
              newline-separated JSON (one value per argument), `output` JSON. All functional
              tests of a sample share one process running `harness.py`; the return values
              come back as JSON on a pipe and are compared with `==` HERE, in the grader.
  assert      {"testtype": "assert", "check", "entry_point"}: `check(candidate)` code as in
              HumanEval / MBPP / LeetCode sets; passes if it returns. It runs in a trusted
              sandbox of its own; the candidate's sandbox only answers its calls with plain
              values (harness.py), so nothing the candidate does can touch the verdict.

Score = passed / total (the paper), or 0/1 with `all_pass=True`. A stdin test passes only
if the process exits 0 within its time limit and its output matches; exit codes and
anything the candidate prints about itself are never taken as evidence of passing.
"""
from __future__ import annotations

import decimal
import json
import os
import pathlib
import re
import threading
import time

from dsrl_jax.rewards import sandbox
from dsrl_jax.rewards.harness import HEADER
from dsrl_jax.rewards.registry import RewardResult, register, split_final_answer

_HARNESS = (pathlib.Path(__file__).parent / "harness.py").read_text(encoding="utf-8")
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)
_DEF = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.M)


def extract_code(text: str) -> str | None:
    """The last ```python block, else the last fenced block of any language, else None."""
    blocks = _FENCE.findall(text)
    python = [code for lang, code in blocks if lang.lower() in ("python", "python3", "py")]
    chosen = python or [code for _, code in blocks]
    return chosen[-1] if chosen else None


def fn_name_from_starter(starter_code: str | None) -> str | None:
    """`class Solution: def name(self, ...)` or a top-level `def name(...)` in starter code."""
    names = [n for n in _DEF.findall(starter_code or "") if not n.startswith("__")]
    return names[0] if names else None


def _decimals(line: str) -> list[decimal.Decimal] | None:
    """The line's tokens as decimals; None if any is not a number (NaNs compare as text:
    comparing a signalling NaN would raise)."""
    try:
        values = [decimal.Decimal(tok) for tok in line.split()]
    except (ValueError, ArithmeticError):
        return None
    return None if any(v.is_nan() for v in values) else values


def stdin_output_matches(got: str, expected: str) -> bool:
    """LiveCodeBench: stripped lines, same count, each equal as text or as exact decimals."""
    got_lines = [line.strip() for line in got.strip().split("\n")]
    exp_lines = [line.strip() for line in expected.strip().split("\n")]
    if len(got_lines) != len(exp_lines):
        return False
    for g, e in zip(got_lines, exp_lines):
        if g == e:
            continue
        g_dec, e_dec = _decimals(g), _decimals(e)
        if g_dec is None or e_dec is None or g_dec != e_dec:
            return False
    return True


def _tuples_to_lists(x):
    if isinstance(x, (list, tuple)):
        return [_tuples_to_lists(v) for v in x]
    if isinstance(x, dict):
        return {k: _tuples_to_lists(v) for k, v in x.items()}
    return x


def _limits(per_test_s: float, options: dict, tests: int = 1) -> sandbox.Limits:
    return sandbox.Limits(
        timeout_s=per_test_s * tests + 1.0,  # +1 s: interpreter start and imports
        cpu_s=int(per_test_s * tests) + 2,
        memory_mb=int(options.get("memory_mb", 1024)),
        nproc=int(options.get("nproc", 32)),
        output_bytes=int(options.get("output_bytes", 4 << 20)),
        workdir_mb=int(options.get("workdir_mb", 64)),
        tmp_mb=int(options.get("tmp_mb", 64)),
        shm_mb=int(options.get("shm_mb", 16)),
    )


def _run_stdin(code, tests, per_test_s, budget_end, options, stop_on_fail) -> list[dict]:
    outcomes = []
    for test in tests:
        left = budget_end - time.monotonic()
        if left <= 0 or (stop_on_fail and outcomes and not outcomes[-1]["ok"]):
            outcomes.append({"ok": False, "error": "skipped"})
            continue
        limits = _limits(min(per_test_s, left), options)
        res = sandbox.run_python(
            {"solution.py": HEADER + code}, "solution.py", stdin=test["input"], limits=limits
        )
        if res.killed_reason:
            outcomes.append({"ok": False, "error": res.killed_reason})
        elif res.returncode != 0:
            outcomes.append({"ok": False, "error": "runtime_error", "stderr": res.stderr[-300:]})
        elif not stdin_output_matches(res.stdout, test["output"]):
            outcomes.append({"ok": False, "error": "wrong_answer"})
        else:
            outcomes.append({"ok": True})
    return outcomes


def _run_harness(mode, code, spec, n, per_test_s, budget_end, options) -> tuple[list, str | None]:
    """Run the harness once; return the per-test lines it reported (None where missing)."""
    budget = max(0.1, budget_end - time.monotonic())
    limits = _limits(per_test_s, options, tests=n)
    limits = sandbox.Limits(**{**limits.__dict__, "timeout_s": min(limits.timeout_s, budget)})
    spec = {**spec, "per_test_s": per_test_s}
    res = sandbox.run_python(
        {"solution.py": code, "harness.py": _HARNESS, "spec.json": json.dumps(spec)},
        "harness.py", args=(mode, "solution.py", "spec.json"), limits=limits, channel=True,
    )  # fmt: skip
    lines: list = [None] * n
    load_error = None
    for raw in res.channel.splitlines():
        try:
            msg = json.loads(raw)
            if "load_error" in msg:
                load_error = str(msg["load_error"])
            elif isinstance(msg.get("i"), int) and 0 <= msg["i"] < n and lines[msg["i"]] is None:
                lines[msg["i"]] = msg
        except (ValueError, TypeError, AttributeError):
            continue  # garbage on the pipe is just not a result
    fallback = load_error or res.killed_reason or "no_result"
    return lines, fallback


def _run_functional(code, tests, fn_name, per_test_s, budget_end, options) -> list[dict]:
    spec = {"fn_name": fn_name, "inputs": [t["input"] for t in tests]}
    lines, fallback = _run_harness("functional", code, spec, len(tests), per_test_s, budget_end, options)
    outcomes = []
    for test, line in zip(tests, lines):
        if line is None or not line.get("ok"):
            outcomes.append({"ok": False, "error": (line or {}).get("error", fallback)})
            continue
        try:
            got = _tuples_to_lists(json.loads(line["out"]))
            expected = _tuples_to_lists(json.loads(test["output"]))
            ok = got == expected
        except (ValueError, TypeError, KeyError):
            ok = False
        outcomes.append({"ok": bool(ok)} if ok else {"ok": False, "error": "wrong_answer"})
    return outcomes


def _run_assert(code, tests, per_test_s, budget_end, options, setup=None) -> list[dict]:
    """check(candidate) in a trusted sandbox; the candidate's sandbox only answers calls.

    Two separate sandboxes joined by two pipes (calls ->, <- plain values): the check code
    and its expected values never enter the candidate's process, and nothing the candidate
    defines, patches or prints reaches the interpreter that evaluates the assertions. Only
    the checker's own channel carries verdicts.
    """
    n = len(tests)
    budget = max(0.1, budget_end - time.monotonic())
    limits = _limits(per_test_s, options, tests=n)
    limits = sandbox.Limits(**{**limits.__dict__, "timeout_s": min(limits.timeout_s + 2.0, budget)})
    spec = {"tests": [{"check": t["check"], "entry_point": t["entry_point"]} for t in tests],
            "setup": setup or "", "per_test_s": per_test_s}  # fmt: skip
    for attempt in range(3):  # bwrap failing to start either process is retried
        res, served = _assert_pair(code, spec, per_test_s, limits)
        if not (res.start_failed or served.start_failed):
            break
    lines: list = [None] * n
    for raw in res.channel.splitlines():
        try:
            msg = json.loads(raw)
            if isinstance(msg.get("i"), int) and 0 <= msg["i"] < n and lines[msg["i"]] is None:
                lines[msg["i"]] = msg
        except (ValueError, TypeError, AttributeError):
            continue
    fallback = res.killed_reason or "no_result"
    return [
        {"ok": True} if line is not None and line.get("ok") is True
        else {"ok": False, "error": (line or {}).get("error", fallback)}
        for line in lines
    ]  # fmt: skip


def _assert_pair(code, spec, per_test_s, limits):
    """Start the candidate's server and the checker, joined by two pipes; both results."""
    call_r, call_w = os.pipe()
    result_r, result_w = os.pipe()
    done, served = threading.Event(), {}
    candidate_files = {"solution.py": code, "harness.py": _HARNESS,
                       "spec.json": json.dumps({"per_test_s": per_test_s})}  # fmt: skip

    def serve():
        try:
            served["res"] = sandbox.run_python(
                candidate_files, "harness.py", args=("serve", "solution.py", "spec.json", str(call_r), str(result_w)),
                limits=limits, pass_fds=(call_r, result_w), cancel=done,
            )  # fmt: skip
        except BaseException as e:  # re-raised in the caller's thread
            served["error"] = e

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        res = sandbox.run_python(
            {"harness.py": _HARNESS, "spec.json": json.dumps(spec)}, "harness.py",
            args=("check", "spec.json", str(call_w), str(result_r)), limits=limits, channel=True,
            pass_fds=(call_w, result_r),
        )  # fmt: skip
    finally:
        done.set()  # the verdicts are in: the candidate gets no more time
        server.join()
    if "error" in served:
        raise served["error"]
    return res, served["res"]


@register("code")
def code_reward(
    response: str,
    record: dict,
    *,
    all_pass: bool = False,
    per_test_timeout_s: float = 6.0,
    sample_timeout_s: float = 60.0,
    answer_after_think: bool = True,
    max_tests: int | None = None,
    **options,
) -> RewardResult:
    """Fraction of the record's tests the response's code passes (1/0 with all_pass)."""
    final = split_final_answer(response, answer_after_think)
    code = extract_code(final) if final is not None else None
    tests = list(record.get("tests") or [])[:max_tests]
    if not tests:
        return RewardResult(0.0, {"error": "no_tests"})
    if code is None:
        return RewardResult(0.0, {"error": "no_code", "passed": 0, "total": len(tests)})
    budget_end = time.monotonic() + sample_timeout_s
    by_kind: dict[str, list[int]] = {}
    for i, t in enumerate(tests):
        by_kind.setdefault(t.get("testtype", "stdin"), []).append(i)
    outcomes: list[dict | None] = [None] * len(tests)
    for kind, idx in by_kind.items():
        group = [tests[i] for i in idx]
        if kind == "stdin":
            got = _run_stdin(code, group, per_test_timeout_s, budget_end, options, all_pass)
        elif kind == "functional":
            fn_name = group[0].get("fn_name") or fn_name_from_starter(record.get("starter_code"))
            if fn_name is None:
                got = [{"ok": False, "error": "no_fn_name"}] * len(group)
            else:
                got = _run_functional(code, group, fn_name, per_test_timeout_s, budget_end, options)
        elif kind == "assert":
            got = _run_assert(code, group, per_test_timeout_s, budget_end, options, record.get("starter_code"))
        else:
            got = [{"ok": False, "error": f"unknown_testtype:{kind}"}] * len(group)
        for i, o in zip(idx, got):
            outcomes[i] = o
    passed = sum(o["ok"] for o in outcomes)
    errors = [o.get("error") for o in outcomes if not o["ok"]]
    info = {"passed": passed, "total": len(tests)}
    if errors:
        info["error"] = max(set(errors), key=errors.count)  # the most common failure kind
    score = float(passed == len(tests)) if all_pass else passed / len(tests)
    return RewardResult(score, info)
