"""Trusted driver that runs INSIDE the sandbox for functional and assert-style tests.

It is copied into the sandbox's working dir and run by `sandbox._PRELUDE` (rlimits are
already set). It execs the candidate's code, calls it on each test input, and writes one
JSON line per test to the result pipe (fd given as the last argv). Expected outputs never
enter the sandbox: the grader compares what arrives on the pipe, after JSON decoding, in
its own process. A line that never arrives is a failed test.

    python -I harness.py functional solution.py spec.json FD
    python -I harness.py assert     solution.py spec.json FD

spec.json: {"fn_name": str|None, "inputs": [str, ...], "per_test_s": float} for functional,
           {"tests": [{"check": str, "entry_point": str}], "per_test_s": float} for assert.

Limits of this design (documented in the README): the harness shares an interpreter with
the candidate, so a candidate written to forge the pipe protocol could fake assert-style
results. Functional tests are safe from that: a forged line still has to equal the
expected output, which the candidate never sees.
"""
import json
import os
import signal
import sys

# LiveCodeBench prepends these imports to every candidate; solutions rely on them.
HEADER = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\n"
    "from functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\n"
    "import datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\nimport math\n"
    "import random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n"
)


class _TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout()


class _Rejected:
    """Stands in for a returned object with a custom __eq__ (it could claim to equal anything)."""

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__


def _plain(x):
    """Deep-convert a return value to builtin types so `==` in the check means value equality."""
    if x is None or type(x) in (bool, int, float, str):
        return x
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int.__index__(x)
    if isinstance(x, float):
        return float.__float__(x)
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, list):
        return [_plain(v) for v in list.__iter__(x)]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in tuple.__iter__(x))
    if isinstance(x, dict):
        return {_plain(k): _plain(v) for k, v in dict.items(x)}
    if isinstance(x, (set, frozenset)):
        return {_plain(v) for v in set.__iter__(set(x))}
    if type(x).__eq__ is object.__eq__:
        return x  # identity-equality objects (e.g. ListNode) are compared by the check's helpers
    return _Rejected()


def _guarded(fn):
    def call(*args, **kwargs):
        return _plain(fn(*args, **kwargs))

    return call


def _emit(out, line):
    out.write(json.dumps(line) + "\n")
    out.flush()


def _run_each(out, n, per_test_s, body):
    signal.signal(signal.SIGALRM, _on_alarm)
    for i in range(n):
        signal.setitimer(signal.ITIMER_REAL, per_test_s)
        try:
            line = body(i)
        except _TestTimeout:
            line = {"ok": False, "error": "timeout"}
        except BaseException as e:  # SystemExit included: exiting early is a failed test
            line = {"ok": False, "error": type(e).__name__}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _emit(out, {"i": i, **line})


def _load_solution(path):
    with open(path, encoding="utf-8") as f:
        source = HEADER + f.read()
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    exec(compile(source, "solution.py", "exec"), namespace)
    return namespace


def main():
    mode, solution_path, spec_path, fd = sys.argv[1:5]
    out = os.fdopen(int(fd), "w")
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    os.remove(spec_path)
    per_test_s = float(spec["per_test_s"])
    sys.stdin = open(os.devnull)
    try:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, per_test_s)
        namespace = _load_solution(solution_path)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as e:  # a solution that fails to load (or exits) fails every test
        _emit(out, {"load_error": type(e).__name__ + ": " + str(e)[:200]})
        return

    if mode == "functional":
        fn_name = spec["fn_name"]

        def body(i):
            if "Solution" in namespace:
                method = getattr(namespace["Solution"](), fn_name)
            else:
                method = namespace[fn_name]
            args = [json.loads(a) for a in spec["inputs"][i].split("\n")]
            result = method(*args)
            return {"ok": True, "out": json.dumps(_plain_json(result))}

        _run_each(out, len(spec["inputs"]), per_test_s, body)
    elif mode == "assert":
        tests = spec["tests"]

        def body(i):
            test_ns = dict(namespace)
            exec(compile(tests[i]["check"], "check.py", "exec"), test_ns)
            candidate = _guarded(eval(tests[i]["entry_point"], test_ns))
            test_ns["check"](candidate)
            return {"ok": True}

        _run_each(out, len(tests), per_test_s, body)
    else:
        raise SystemExit(f"unknown mode {mode}")


def _plain_json(x):
    """Only builtin JSON data leaves the sandbox; tuples become lists as in LiveCodeBench."""
    x = _plain(x)
    if isinstance(x, _Rejected):
        raise TypeError("return value is not plain data")
    return x


if __name__ == "__main__":
    main()
