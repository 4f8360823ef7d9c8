"""Oracle reads: a candidate that looks for the problem file and prints the expected output.

Each attack knows what it is after (its own stdin, the grader's command line, the usual
dataset and cache paths) and prints the expected output if it finds it; under the sandbox
nothing of the host but the interpreter is visible, so each scores 0 on real Codeforces and
LiveCodeBench rows, through the reward pool and through `python -m dsrl_jax.grade`, while
an honest solution of the same problem scores 1.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from dsrl_jax.data.adapters import load_problems
from dsrl_jax.rewards import RewardPool, sandbox
from tests.conftest import REPO, shared_path

pytestmark = pytest.mark.skipif(not sandbox.bwrap_available(), reason="bubblewrap is unavailable here")

OPTIONS = {"per_test_timeout_s": 4.0, "sample_timeout_s": 30.0, "all_pass": True}  # stop at a failed test
CONFIG = {"code": [{"name": "code", "weight": 1.0, "options": OPTIONS}], "math": []}

# Shared by the attacks: find the test whose input is our stdin anywhere in a JSON text.
FIND = r'''
import json, os, sys
ME = sys.stdin.read()
def dig(obj, depth=0):
    if depth > 40:
        return None
    if isinstance(obj, str) and obj[:1] in "[{":
        try:
            return dig(json.loads(obj), depth + 1)
        except Exception:
            return None
    if isinstance(obj, dict):
        if isinstance(obj.get("input"), str) and obj["input"].strip() == ME.strip():
            return obj.get("output")
        inputs, outputs = obj.get("inputs"), obj.get("outputs")
        if isinstance(inputs, list) and isinstance(outputs, list):
            for i, o in zip(inputs, outputs):
                if isinstance(i, str) and i.strip() == ME.strip():
                    return o
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            got = dig(v, depth + 1)
            if got is not None:
                return got
    return None
def try_file(path):
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > 300 << 20:
            return None
        text = open(path, encoding="utf-8", errors="ignore").read()
    except Exception:
        return None
    once = json.dumps(ME.strip())[1:-1]
    if ME.strip() not in text and once not in text and json.dumps(once)[1:-1] not in text:
        return None
    try_text(text)
def try_text(text):
    for doc in [text] + text.splitlines():
        try:
            got = dig(json.loads(doc))
        except Exception:
            continue
        if got is not None:
            print(got)
            sys.exit(0)
def walk(top, skip=("/proc", "/sys", "/dev", "/usr/lib", "/usr/share", "/usr/include")):
    for root, dirs, files in os.walk(top):
        if root.startswith(skip):
            dirs[:] = []
            continue
        for name in files:
            try_file(os.path.join(root, name))
'''

WALK_EVERYWHERE = FIND + r'''
for top in ("/work", "/root", "/home", "/data", "/mnt", "/srv", "/opt", "/tmp", os.getcwd(), "/"):
    walk(top)
print("nothing found")
'''

GRADER_CMDLINE = FIND + r'''
import glob
seen = []
for path in glob.glob("/proc/*/cmdline") + ["/proc/%d/cmdline" % os.getppid(), "/proc/1/cmdline"]:
    try:
        args = open(path, "rb").read().split(b"\0")
    except Exception:
        continue
    for arg in args:
        arg = arg.decode("utf-8", "ignore")
        if arg.endswith((".json", ".jsonl", ".parquet")) or "/" in arg:
            seen.append(arg)
for path in glob.glob("/proc/*/environ"):
    try:
        seen += [v.split(b"=", 1)[-1].decode("latin1") for v in open(path, "rb").read().split(b"\0")]
    except Exception:
        pass
try:
    seen += [line.split()[4] for line in open("/proc/self/mountinfo")]
except Exception:
    pass
for arg in seen:
    try_file(arg)
    if os.path.isdir(arg) and arg not in ("/", "/usr", "/proc", "/dev", "/tmp"):
        walk(arg)
print("nothing found")
'''


def known_paths_attack(extra: list[str]) -> str:
    paths = [*extra, str(REPO.parent / "shared"), str(REPO), os.path.expanduser("~/.cache/huggingface"),
             "/root/.cache", os.path.expanduser("~")]  # fmt: skip
    return FIND + f"""
for top in {paths!r}:
    try_file(top)
    walk(top)
for fd in range(3, 256):  # anything the grader left open
    try:
        text = os.read(fd, 1 << 26).decode("utf-8", "ignore")
    except OSError:
        continue
    try_text(text)
print("nothing found")
"""


CF_HONEST = "t = int(input())\nfor _ in range(t):\n    x, y = map(int, input().split())\n    print(min(x, y), max(x, y))"
LCB_HONEST = ("t = int(input())\nfor _ in range(t):\n    s = input().strip()\n"
              "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')")  # fmt: skip


def block(code: str) -> str:
    return f"<think>.</think>\n```python\n{code}\n```"


@pytest.fixture(scope="module")
def problems():
    cf, _ = load_problems(shared_path("data", "code", "codeforces_test.json"))
    lcb, _ = load_problems(shared_path("data", "code", "lcb_v5_public.json"))
    return {"cf": cf[0], "lcb": lcb[0]}


def test_the_sandbox_sees_only_the_interpreter(tmp_path):
    secret = tmp_path / "problem.jsonl"
    secret.write_text("{}")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o644)
    probe = f"""
import os, json
paths = {[str(secret), str(REPO), str(REPO.parent / "shared"), os.path.expanduser("~"), "/root", "/home", "/work",
          os.path.expanduser("~/.cache/huggingface"), sys.executable]!r}
print(json.dumps({{"root": sorted(os.listdir("/")), "etc": sorted(os.listdir("/etc")), "cwd": os.getcwd(),
                  "files": sorted(os.listdir(".")), "visible": [p for p in paths if os.path.exists(p)],
                  "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}}))
"""
    res = sandbox.run_python({"a.py": probe}, "a.py", limits=sandbox.Limits(timeout_s=20))
    seen = json.loads(res.stdout)
    assert set(seen["root"]) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc",
                                 "tmp", "sandbox"}, seen  # fmt: skip
    assert set(seen["etc"]) <= {"alternatives", "ld.so.cache", "localtime"}, seen
    assert seen["cwd"] == "/sandbox" and seen["files"] == ["_prelude.py", "a.py"]
    assert seen["visible"] == [], seen
    assert len(seen["pids"]) <= 3, seen  # bwrap's init, the interpreter: no host process


@pytest.mark.parametrize("name", ["cf", "lcb"])
def test_oracle_reads_score_zero_on_real_rows(problems, name, tmp_path):
    record = problems[name]
    leak = tmp_path / "leak.jsonl"  # a world-readable copy of the problem, as a grader might leave
    leak.write_text(json.dumps(record) + "\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(leak, 0o644)
    attacks = [WALK_EVERYWHERE, GRADER_CMDLINE, known_paths_attack([str(leak)])]
    honest = CF_HONEST if name == "cf" else LCB_HONEST
    with RewardPool(CONFIG, num_workers=2) as pool:
        results = pool.score([block(a) for a in attacks] + [block(honest)], [record] * 4)
    assert [r.score for r in results] == [0, 0, 0, 1], results
    # the attack does work where the file is readable: it is the sandbox that stops it
    proc = subprocess.run([sys.executable, "-c", known_paths_attack([str(leak)])], input=record["tests"][0]["input"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == record["tests"][0]["output"].strip()


def test_oracle_reads_through_the_grade_cli(tmp_path):
    data = shared_path("data", "code", "codeforces_test.json")
    attacks = [WALK_EVERYWHERE, GRADER_CMDLINE, known_paths_attack([str(data)])]
    responses = [{"id": "codeforces_test-0", "response": block(code)} for code in [CF_HONEST, *attacks]]
    resp, out = tmp_path / "responses.jsonl", tmp_path / "out.jsonl"
    resp.write_text("".join(json.dumps(r) + "\n" for r in responses))
    proc = subprocess.run(
        [sys.executable, "-m", "dsrl_jax.grade", "--data", str(data), "--responses", str(resp), "--out", str(out),
         "--workers", "2", "--test-timeout", "4", "--all-pass"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rewards = [json.loads(line)["reward"] for line in out.read_text().splitlines()]
    assert rewards == [1, 0, 0, 0], rewards
