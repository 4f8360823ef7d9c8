"""Trusted drivers that run INSIDE sandboxes for functional and assert-style tests.

This file is copied into a sandbox's working dir and run by `sandbox._PRELUDE` (rlimits
are already set). Three modes:

    python -I harness.py functional solution.py spec.json FD
    python -I harness.py serve      solution.py spec.json CALL_FD RESULT_FD
    python -I harness.py check      spec.json CALL_FD RESULT_FD FD

functional  (candidate's sandbox) execs the candidate, calls it on each test input and
            writes one JSON line per test to FD: {"i", "ok", "out" (JSON text)}. The
            grader compares `out` with the expected output in its own process; expected
            outputs never enter the sandbox.
serve       (candidate's sandbox, assert tests) execs the candidate, then answers calls
            read from CALL_FD: {"n", "test", "entry", "args", "kwargs"} ->
            {"n", "ok", "value"} on RESULT_FD. It never sees the check code.
check       (a second, separate sandbox without the candidate's code) runs each test's
            `check(candidate)` where `candidate` forwards every call over the pipes and
            returns the decoded plain value; the assertions therefore run in an
            interpreter the candidate cannot reach, patch or read. FD gets one verdict
            line per test: {"i", "ok", "error"?}.

Values cross the pipes in a tagged JSON encoding (`encode` / `decode`): None, bool, int,
str and lists as themselves; floats as themselves unless non-finite; tuples, sets,
frozensets and dicts as one-key objects; LeetCode's ListNode / TreeNode as their value
lists. Anything else a candidate returns is refused, so a returned object can never bring
its own `__eq__`, `__sub__` or `__abs__` into the checker.
"""
import collections
import functools
import json
import math
import os
import select
import signal
import sys
import time

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
# LeetCode's predefined node classes (solutions reference them in signatures).
NODES = (
    "class ListNode:\n    def __init__(self, val=0, next=None):\n        self.val = val\n"
    "        self.next = next\n"
    "class TreeNode:\n    def __init__(self, val=0, left=None, right=None):\n        self.val = val\n"
    "        self.left = left\n        self.right = right\n"
)
# The comparison helpers LeetCode-style checks call (list_node / tree_node: `build_list`,
# `build_tree` below, bound to the checker's node classes).
HELPERS = """
def is_same_list(p, q):
    while p is not None and q is not None:
        if p.val != q.val:
            return False
        p, q = p.next, q.next
    return p is None and q is None

def is_same_tree(p, q):
    stack = [(p, q)]
    while stack:
        a, b = stack.pop()
        if a is None or b is None:
            if a is not b:
                return False
            continue
        if a.val != b.val:
            return False
        stack += [(a.left, b.left), (a.right, b.right)]
    return True
"""
MAX_NODES = 1 << 20
MAX_LINE = 16 << 20


class _TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout()


# -- the value encoding ----------------------------------------------------------------
def encode(x):
    """Plain, tagged JSON data for a value; TypeError for anything that is not plain data."""
    t = type(x)
    if x is None or t is bool or t is int or t is str:
        return x
    if t is float:
        return x if math.isfinite(x) else {"float": repr(x)}
    if t is list:
        return [encode(v) for v in x]
    if t is tuple:
        return {"tuple": [encode(v) for v in x]}
    if t is set or t is frozenset:
        return {t.__name__: [encode(v) for v in x]}
    if t is dict:
        return {"dict": [[encode(k), encode(v)] for k, v in x.items()]}
    if t.__name__ == "ListNode":
        values, node = [], x
        while node is not None:
            if len(values) >= MAX_NODES:
                raise TypeError("linked list too long (a cycle?)")
            values.append(encode(node.val))
            node = node.next
        return {"list_node": values}
    if t.__name__ == "TreeNode":
        values, queue = [], collections.deque([x])
        while queue:
            node = queue.popleft()
            if len(values) >= MAX_NODES:
                raise TypeError("tree too large (a cycle?)")
            if node is None:
                values.append(None)
                continue
            values.append(encode(node.val))
            queue += [node.left, node.right]
        while values and values[-1] is None:
            values.pop()
        return {"tree_node": values}
    raise TypeError(f"a value of type {t.__name__} is not plain data")


def decode(x, ns):
    """Inverse of `encode`; node values become `ns`'s ListNode / TreeNode."""
    if isinstance(x, list):
        return [decode(v, ns) for v in x]
    if not isinstance(x, dict):
        return x
    if len(x) != 1:
        raise ValueError("malformed value")
    (tag, body), = x.items()
    if tag == "float":
        return float(body) if body in ("nan", "inf", "-inf") else _bad(tag)
    if not isinstance(body, list):
        raise ValueError("malformed value")
    if tag == "tuple":
        return tuple(decode(v, ns) for v in body)
    if tag in ("set", "frozenset"):
        return {"set": set, "frozenset": frozenset}[tag](decode(v, ns) for v in body)
    if tag == "dict":
        return {decode(k, ns): decode(v, ns) for k, v in body}
    if tag == "list_node":
        return build_list([decode(v, ns) for v in body], ns["ListNode"])
    if tag == "tree_node":
        return build_tree([decode(v, ns) for v in body], ns["TreeNode"])
    return _bad(tag)


def build_list(values, cls):
    """LeetCode's list_node: a linked list of `cls` nodes (None for an empty list)."""
    head = None
    for v in reversed(list(values)):
        head = cls(v, head)
    return head


def build_tree(values, cls):
    """LeetCode's tree_node: a binary tree from its level order with None for gaps."""
    values = list(values)
    if not values or values[0] is None:
        return None
    root, queue, i = cls(values[0]), collections.deque(), 1
    queue.append(root)
    while queue and i < len(values):
        node = queue.popleft()
        for side in ("left", "right"):
            if i < len(values) and values[i] is not None:
                child = cls(values[i])
                setattr(node, side, child)
                queue.append(child)
            i += 1
    return root


def _bad(tag):
    raise ValueError(f"malformed value tag {tag!r}")


# -- plumbing ---------------------------------------------------------------------------
def _emit(out, line):
    out.write(json.dumps(line) + "\n")
    out.flush()


def _load(path, prefix):
    with open(path, encoding="utf-8") as f:
        source = prefix + f.read()
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    exec(compile(source, "solution.py", "exec"), namespace)
    return namespace


def _timed(seconds, fn, *args):
    """fn(*args) under a SIGALRM deadline (the candidate's own per-test bound)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _error(e):
    return "timeout" if isinstance(e, _TestTimeout) else type(e).__name__


def _read_spec(path):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    os.remove(path)
    return spec


# -- functional: LiveCodeBench call-based tests -----------------------------------------
def functional(solution_path, spec_path, fd):
    out = os.fdopen(int(fd), "w")
    spec = _read_spec(spec_path)
    per_test_s = float(spec["per_test_s"])
    sys.stdin = open(os.devnull)
    try:
        namespace = _timed(per_test_s, _load, solution_path, HEADER + NODES)
    except BaseException as e:  # a solution that fails to load (or exits) fails every test
        _emit(out, {"load_error": _error(e) + ": " + str(e)[:200]})
        return
    fn_name = spec["fn_name"]

    def body(i):
        if "Solution" in namespace:
            method = getattr(namespace["Solution"](), fn_name)
        else:
            method = namespace[fn_name]
        args = [json.loads(a) for a in spec["inputs"][i].split("\n")]
        return json.dumps(_as_lcb_json(method(*args)))

    for i in range(len(spec["inputs"])):
        try:
            line = {"ok": True, "out": _timed(per_test_s, body, i)}
        except BaseException as e:  # SystemExit included: exiting early is a failed test
            line = {"ok": False, "error": _error(e)}
        _emit(out, {"i": i, **line})


def _as_lcb_json(x):
    """Builtin JSON data only; tuples become lists as in LiveCodeBench."""
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t in (list, tuple):
        return [_as_lcb_json(v) for v in x]
    if t is dict:
        return {_as_lcb_json(k): _as_lcb_json(v) for k, v in x.items()}
    raise TypeError(f"a return value of type {t.__name__} is not plain data")


# -- serve: the candidate's side of assert-style tests ---------------------------------
def serve(solution_path, spec_path, call_fd, result_fd):
    calls = os.fdopen(int(call_fd), "r", encoding="utf-8")
    out = os.fdopen(int(result_fd), "w")
    per_test_s = float(_read_spec(spec_path)["per_test_s"])
    sys.stdin = open(os.devnull)
    try:
        namespace, load_error = _timed(per_test_s, _load, solution_path, HEADER + NODES), None
    except BaseException as e:
        namespace, load_error = None, "load_error: " + _error(e)
    entries = {}
    for raw in calls:
        msg = json.loads(raw)
        reply = {"n": msg["n"]}
        if load_error:
            _emit(out, {**reply, "ok": False, "error": load_error})
            continue
        try:
            def call():
                if msg["test"] not in entries:
                    entries[msg["test"]] = eval(msg["entry"], namespace)
                args = decode(msg["args"], namespace)
                kwargs = decode(msg["kwargs"], namespace)
                return encode(entries[msg["test"]](*args, **kwargs))

            reply.update(ok=True, value=_timed(per_test_s, call))
        except BaseException as e:
            reply.update(ok=False, error=_error(e))
        _emit(out, reply)


# -- check: the trusted side of assert-style tests ---------------------------------------
class CandidateFailed(Exception):
    """A call into the candidate raised, timed out, or answered out of protocol."""


class _Link:
    """Forwards calls to the candidate's process and waits (bounded) for plain values."""

    def __init__(self, call_fd, result_fd, ns):
        self.calls = os.fdopen(int(call_fd), "w")
        self.fd, self.buf, self.ns = int(result_fd), b"", ns
        self.n, self.dead, self.deadline = 0, None, 0.0

    def _read_line(self):
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise CandidateFailed("timeout")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise CandidateFailed("exited")
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                raise CandidateFailed("output_limit")
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def call(self, test, entry, args, kwargs):
        if self.dead:
            raise CandidateFailed(self.dead)
        try:
            msg = {"n": self.n, "test": test, "entry": entry, "args": encode(list(args)),
                   "kwargs": encode(dict(kwargs))}  # fmt: skip
        except TypeError:
            raise CandidateFailed("unencodable_argument") from None
        self.n += 1
        try:
            self.calls.write(json.dumps(msg) + "\n")
            self.calls.flush()
            reply = json.loads(self._read_line())
            if not isinstance(reply, dict) or reply.get("n") != msg["n"]:
                raise CandidateFailed("protocol")
            if reply.get("ok") is not True:
                raise CandidateFailed(str(reply.get("error"))[:100])
            return decode(reply["value"], self.ns)
        except CandidateFailed as e:
            if str(e) in ("timeout", "exited", "output_limit", "protocol"):
                self.dead = str(e)  # no more waiting on a candidate that stopped answering
            raise
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            self.dead = "protocol"
            raise CandidateFailed("protocol") from None


def check(spec_path, call_fd, result_fd, fd):
    out = os.fdopen(int(fd), "w")
    spec = _read_spec(spec_path)
    per_test_s, first_slack = float(spec["per_test_s"]), float(spec.get("startup_s", 2.0))
    base = {"__name__": "check", "__builtins__": __builtins__}
    exec(compile(HEADER + NODES + HELPERS, "helpers.py", "exec"), base)
    base["list_node"] = functools.partial(build_list, cls=base["ListNode"])
    base["tree_node"] = functools.partial(build_tree, cls=base["TreeNode"])
    link = _Link(call_fd, result_fd, base)
    for i, test in enumerate(spec["tests"]):
        ns = dict(base)
        if spec.get("setup"):
            try:  # e.g. HumanEval prompts define helpers the check calls
                exec(compile(spec["setup"], "setup.py", "exec"), ns)
            except Exception:
                pass
        entry = test["entry_point"]

        def candidate(*args, _i=i, _entry=entry, **kwargs):
            return link.call(_i, _entry, args, kwargs)

        if entry.isidentifier():  # MBPP-style checks call the function by its name
            ns[entry] = candidate
        link.deadline = time.monotonic() + per_test_s + (first_slack if i == 0 else 0.0)
        try:
            exec(compile(test["check"], "check.py", "exec"), ns)
            ns["check"](candidate)
            line = {"ok": True}
        except AssertionError:
            line = {"ok": False, "error": "wrong_answer"}
        except CandidateFailed as e:
            line = {"ok": False, "error": str(e)}
        except Exception as e:
            line = {"ok": False, "error": type(e).__name__}
        _emit(out, {"i": i, **line})


def main():
    sys.set_int_max_str_digits(0)
    mode, *args = sys.argv[1:]
    {"functional": functional, "serve": serve, "check": check}[mode](*args)


if __name__ == "__main__":
    main()
