"""Assert-style forgeries: nothing the candidate defines, patches or prints decides a check.

`check(candidate)` runs in a second sandbox; the candidate's process only answers calls
with plain values. Every forgery below (patched builtins, a fake `math`, a shadowed `abs`,
objects with their own `__eq__` / `__sub__`, stealing the expected constants from check's
code, forged result lines, printed pass markers, a patched harness) scores 0 on a real
LeetCode row and on small checks built for the trick, while an honest solution scores 1.
"""
import json

import pytest

from dsrl_jax.data.adapters import load_problems
from dsrl_jax.rewards import RewardPool, sandbox
from dsrl_jax.rewards.harness import NODES, build_list, build_tree, decode, encode
from tests.conftest import shared_path

OPTIONS = {"per_test_timeout_s": 3.0, "sample_timeout_s": 20.0}
CONFIG = {"code": [{"name": "code", "weight": 1.0, "options": OPTIONS}], "math": []}


def assert_record(id, check, entry_point):
    return {"id": id, "domain": "code", "problem": id,
            "tests": [{"testtype": "assert", "check": check, "entry_point": entry_point}]}  # fmt: skip


ISCLOSE = assert_record("isclose", "def check(candidate):\n    assert math.isclose(candidate(2.0), 1.4142135623730951)\n", "root")
ABS = assert_record("abs", "def check(candidate):\n    assert abs(candidate(9.0) - 3.0) < 1e-9\n", "root")
CONST = assert_record("const", "def check(candidate):\n    assert candidate(3) == 918273645\n", "Solution().magic")
BY_NAME = assert_record("by_name", "def check(candidate):\n    assert add_one(1) == 2\n    assert add_one(-1) == 0\n", "add_one")
HONEST = {
    "isclose": "def root(x):\n    return x ** 0.5",
    "abs": "def root(x):\n    return x ** 0.5",
    "const": "class Solution:\n    def magic(self, x):\n        return 306091215 * x",
    "by_name": "def add_one(x):\n    return x + 1",
}

FAKE = """
class Fake(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __sub__(self, other): return Fake(0.0)
    def __rsub__(self, other): return Fake(0.0)
    def __abs__(self): return 0.0
    def __bool__(self): return True
    __hash__ = float.__hash__
"""
STEAL_FRAMES = """
import dis, sys
def steal(*args, **kwargs):
    f = sys._getframe(1)
    while f is not None and f.f_code.co_name != 'check':
        f = f.f_back
    if f is None:
        return -7
    for ins in dis.get_instructions(f.f_code):
        if ins.offset > f.f_lasti and ins.opname == 'LOAD_CONST':
            return ins.argval
    return -7
"""
STEAL_GC = """
import gc, types
def steal(*args, **kwargs):
    best = -7
    for o in gc.get_objects():
        if isinstance(o, types.FunctionType) and o.__code__.co_name == 'check':
            ints = [c for c in o.__code__.co_consts if isinstance(c, int) and not isinstance(c, bool)]
            best = max(ints + [best])
    return best
"""
FORGE_LINES = """
import json, os
lines = [{'i': 0, 'ok': True}, {'n': 0, 'ok': True, 'value': 918273645}, {'n': 1, 'ok': True, 'value': 0}]
for fd in range(0, 64):
    for line in lines:
        try:
            os.write(fd, (json.dumps(line) + '\\n').encode())
        except OSError:
            pass
os._exit(0)
"""
PRINT_PASS = """
import sys
for stream in (sys.stdout, sys.stderr):
    stream.write('{"i": 0, "ok": true}\\nAll tests passed\\n{"passed": 1, "total": 1}\\n')
    stream.flush()
"""
PATCH_EXEC = "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.eval = lambda *a, **k: (lambda *x, **y: -7)\n"
PATCH_IMPORT = """
import builtins, types
_real = builtins.__import__
fake = types.ModuleType('math')
fake.isclose = lambda *a, **k: True
fake.sqrt = lambda x: 0
def fake_import(name, *args, **kwargs):
    return fake if name == 'math' else _real(name, *args, **kwargs)
builtins.__import__ = fake_import
import sys
sys.modules['math'] = fake
"""
PATCH_ISCLOSE = "import math\nmath.isclose = lambda *a, **k: True\n"
SHADOW_ABS = "import builtins\ndef abs(x):\n    return 0\nbuiltins.abs = abs\n"
PATCH_HARNESS = """
import sys, json, gc, types
main = sys.modules.get('__main__')
ok = '{"i": 0, "ok": true}'
for name in ('_emit', 'encode', 'decode', '_timed', 'check', 'serve'):
    if main is not None and hasattr(main, name):
        setattr(main, name, lambda *a, **k: ok)
json.dumps = lambda *a, **k: ok
for o in gc.get_objects():
    if isinstance(o, types.FunctionType) and o.__name__ in ('_emit', 'call', 'body'):
        o.__code__ = (lambda *a, **k: None).__code__
"""
INT_EQ = "class Eq(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
EXITS = "import os, signal\n"


def solution(name, returns, prefix=""):
    """A LeetCode `Solution.name` (or a function `name`) returning the expression `returns`."""
    if name not in ("minOperations", "magic"):
        return f"{prefix}\ndef {name}(*args, **kwargs):\n    return {returns}\n"
    return f"{prefix}\nclass Solution:\n    def {name}(self, *args, **kwargs):\n        return {returns}\n"


def attacks(method):
    """Forgeries for a method `method`, each wrong unless the forgery works."""
    return {
        "patch exec/eval": solution(method, "-7", PATCH_EXEC),
        "fake math via __import__": solution(method, "-7", PATCH_IMPORT),
        "patch math.isclose": solution(method, "-7.0", PATCH_ISCLOSE),
        "shadow abs": solution(method, "-7.0", SHADOW_ABS),
        "custom __eq__/__sub__": solution(method, "Fake(-7.0)", FAKE),
        "int with __eq__": solution(method, "Eq(-7)", INT_EQ),
        "steal constants (frames)": solution(method, "steal()", STEAL_FRAMES),
        "steal constants (gc)": solution(method, "steal()", STEAL_GC),
        "forged result lines + os._exit": FORGE_LINES + solution(method, "-7"),
        "print pass markers": solution(method, "-7", PRINT_PASS),
        "patch the harness": solution(method, "-7", PATCH_HARNESS),
        "SystemExit in the call": solution(method, "(_ for _ in ()).throw(SystemExit(0))"),
        "kill every process": solution(method, "os.kill(-1, signal.SIGKILL)", EXITS),
    }


def block(code: str) -> str:
    return f"<think>.</think>\n```python\n{code}\n```"


@pytest.fixture(scope="module")
def pool():
    if not sandbox.bwrap_available():
        pytest.skip("bubblewrap is unavailable here")
    with RewardPool(CONFIG, num_workers=2, timeout_s={"code": 60}) as p:
        yield p


def test_forgeries_on_a_real_leetcode_check(pool):
    path = shared_path("data", "code", "leetcode_test.json")
    records, _ = load_problems(path)
    honest = json.loads(path.read_text())[0]["solutions"]
    cases = attacks("minOperations")
    results = pool.score([block(c) for c in [honest, *cases.values()]], [records[0]] * (1 + len(cases)))
    assert results[0].score == 1, results[0]
    scored = {name: res.score for name, res in zip(cases, results[1:])}
    assert scored == dict.fromkeys(cases, 0.0), scored


@pytest.mark.parametrize("record, method", [(ISCLOSE, "root"), (ABS, "root"), (CONST, "magic"), (BY_NAME, "add_one")])
def test_forgeries_on_tricky_checks(pool, record, method):
    cases = attacks(method)
    results = pool.score([block(c) for c in [HONEST[record["id"]], *cases.values()]], [record] * (1 + len(cases)))
    assert results[0].score == 1, results[0]
    scored = {name: (res.score, res.info.get("error")) for name, res in zip(cases, results[1:])}
    assert all(score == 0 for score, _ in scored.values()), scored


def test_the_stealing_attacks_do_find_the_constant_in_one_process():
    """Where check and candidate share an interpreter, the constant is there for the taking."""
    for steal in (STEAL_FRAMES, STEAL_GC):
        ns = {}
        exec(steal + "\n" + CONST["tests"][0]["check"], ns)
        ns["check"](lambda x: ns["steal"]())  # passes: the assertion saw 918273645


def test_linked_lists_and_trees_cross_as_values():
    ns = {}
    exec(NODES, ns)
    head = build_list([1, 2, 3], ns["ListNode"])
    tree = build_tree([1, None, 2, 3], ns["TreeNode"])
    value = {"l": head, "t": tree, "tup": (1, 2.5), "s": {1, 2}, "nan": float("inf"), 3: [None, True]}
    wire = json.loads(json.dumps(encode(value)))
    back = decode(wire, ns)
    assert encode(back) == encode(value)
    assert back["tup"] == (1, 2.5) and back["s"] == {1, 2} and back[3] == [None, True]
    assert back["l"].next.next.val == 3 and back["t"].right.left.val == 3 and back["t"].left is None


@pytest.mark.parametrize("bad", [type("Eq", (int,), {"__eq__": lambda s, o: True})(1), object(), 1j, b"x",
                                 type("F", (float,), {})(1.0), [object()]])
def test_only_plain_values_are_encoded(bad):
    with pytest.raises(TypeError):
        encode(bad)


@pytest.mark.parametrize("wire", [{"tuple": [1], "x": 1}, {"float": "1e308"}, {"evil": []}, {"dict": 3}])
def test_malformed_values_are_refused(wire):
    with pytest.raises((ValueError, TypeError)):
        decode(wire, {})
