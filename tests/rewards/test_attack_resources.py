"""RAM and disk: attacks that fill /tmp, /dev/shm, the working dir, memfds, many processes'
memory, or the output pipes stay inside the sample's bounds and leave the host untouched.

Each attack tries to take 4 GiB or more (host RAM and disk are sampled every 20 ms while they run,
see host.py); its sandbox holds 64 MiB of /tmp, 16 MiB of /dev/shm and 64 MiB of working
dir, and, where a cgroup is available, all of its processes and tmpfs pages together stay
under Limits.sample_memory_mb. Each attack scores 0 and the honest solution right after
it scores 1.
"""
import pytest

from dsrl_jax.rewards import RewardPool, cgroup, sandbox
from tests.rewards.host import HostWatch

pytestmark = pytest.mark.skipif(not sandbox.bwrap_available(), reason="bubblewrap is unavailable here")

OPTIONS = {"per_test_timeout_s": 8.0, "sample_timeout_s": 30.0, "memory_mb": 512, "nproc": 24}
CONFIG = {"code": [{"name": "code", "weight": 1.0, "options": OPTIONS}], "math": []}
SUM = {"id": "sum", "domain": "code", "problem": "print a+b",
       "tests": [{"testtype": "stdin", "input": "1 2\n", "output": "3\n"}]}  # fmt: skip
HONEST = "a, b = map(int, input().split())\nprint(a + b)"
NAME = "import ctypes\nctypes.CDLL(None).prctl(15, b'dsrlatk', 0, 0, 0)\n"  # for the process check


def fill(directory: str) -> str:
    """Write 4 GiB as 16 MiB files (the per-file limit) into `directory`; print how much went in."""
    return NAME + f"""
total = 0
try:
    for i in range(256):
        with open('{directory}/dsrlatk%d' % i, 'wb', buffering=0) as f:
            for _ in range(16):
                total += f.write(b'x' * (1 << 20))
except OSError as e:
    print('stopped:', type(e).__name__)
print('wrote', total)
"""


MANY_FILES = NAME + """
import os, time
n, end = 0, time.monotonic() + 6
try:
    while time.monotonic() < end:
        open('dsrlatk%d' % n, 'w').close()
        n += 1
except OSError as e:
    print('stopped:', type(e).__name__)
print('files', n)
"""
MEMFDS = NAME + """
import os
total = 0
try:
    for i in range(60):
        fd = os.memfd_create('dsrlatk%d' % i)
        for _ in range(16):
            total += os.write(fd, b'x' * (1 << 20))
except OSError as e:
    print('stopped:', type(e).__name__)
print('wrote', total)
"""
MEMORY_FORK = NAME + """
import os, time
for i in range(16):
    if os.fork() == 0:
        try:
            b = bytearray(400 << 20)
            for j in range(0, len(b), 4096):
                b[j] = 1
            time.sleep(5)
        finally:
            os._exit(0)
time.sleep(6)
"""
STDERR_FLOOD = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(4096):\n    sys.stderr.write(chunk)\n"
THREAD_BOMB = NAME + """
import threading, time
n = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        n += 1
except RuntimeError:
    pass
print('threads', n)
"""


def block(code: str) -> str:
    return f"<think>.</think>\n```python\n{code}\n```"


def run_all(attacks: list[str]) -> None:
    with RewardPool(CONFIG, num_workers=2, timeout_s={"code": 60}) as pool:
        results = pool.score([block(a) for a in attacks], [SUM] * len(attacks))
        assert [r.score for r in results] == [0] * len(attacks), results
        assert [r.score for r in pool.score([block(HONEST)] * 2, [SUM] * 2)] == [1, 1]


def test_filling_tmpfs_mounts_and_the_working_dir():
    with HostWatch() as watch:
        run_all([fill("/tmp"), fill("/dev/shm"), fill("."), MANY_FILES, STDERR_FLOOD, THREAD_BOMB])
    watch.assert_untouched(ram_mb=4000, disk_mb=1000)


@pytest.mark.parametrize("directory, limit_mb", [("/tmp", 64), ("/dev/shm", 16), (".", 64)])
def test_each_mount_stops_at_its_size(directory, limit_mb):
    res = sandbox.run_python({"a.py": fill(directory)}, "a.py", limits=sandbox.Limits(timeout_s=20))
    written = int(res.stdout.split("wrote")[1])
    assert "stopped: OSError" in res.stdout and 0 < written <= limit_mb << 20, res.stdout


@pytest.mark.skipif(not cgroup.available(), reason="no cgroup here: a sample's RAM is bounded only by nproc x memory_mb")
def test_memory_across_processes_and_memfds_is_bounded_by_the_cgroup():
    with HostWatch() as watch:
        run_all([MEMORY_FORK, MEMFDS])
    watch.assert_untouched(ram_mb=4000, disk_mb=1000)
    limits = sandbox.Limits(timeout_s=20, memory_mb=512, nproc=24)
    for attack in (MEMFDS, MEMORY_FORK):  # the cgroup measured each sample's peak
        res = sandbox.run_python({"a.py": attack}, "a.py", limits=limits)
        assert res.peak_memory_mb is not None and res.peak_memory_mb <= limits.sample_memory_mb, res
