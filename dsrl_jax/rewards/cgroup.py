"""Bound a sandboxed sample's total memory and task count with a cgroup, where possible.

Rlimits bound each process (RLIMIT_AS) and the number of tasks (RLIMIT_NPROC), not their
sum: 32 processes of 1 GiB each are 32 GiB. A cgroup bounds the whole sample: every
process it starts plus the tmpfs pages it writes (charged to the writer's cgroup) stay
under `memory_mb`, swap included, and at most `pids` tasks exist at once.

Used when the grader runs as root and can create cgroups (cgroup v2 with the memory and
pids controllers, or the v1 memory and pids hierarchies); elsewhere `available()` is False
and the sandbox relies on rlimits and sized tmpfs mounts alone (see the README). The
sample joins its cgroup before bwrap starts, so none of its processes runs outside it:

    /bin/sh -c 'echo $$ > .../cgroup.procs ...; exec "$@"' sh N PROCS...
        setpriv --reuid=65534 --regid=65534 --clear-groups bwrap ...
"""
from __future__ import annotations

import functools
import itertools
import os
import shutil
import time

ROOT = "/sys/fs/cgroup"
NOBODY = 65534
_JOIN = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "bwrap: cannot join cgroup $1" >&2; '
    'exit 1; }; shift; n=$((n-1)); done; exec "$@"'
)
_ids = itertools.count()


def _own_path(controller: str) -> str | None:
    """This process's cgroup path in the v1 hierarchy of `controller` ("" for v2)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _parents() -> list[tuple[str, str]]:
    """[(kind, parent dir)] under which per-sample cgroups are made: v2 or v1 memory + pids."""
    if os.path.exists(f"{ROOT}/cgroup.controllers"):  # v2: a leaf of our own next to the root
        parent = f"{ROOT}/dsrl-sandbox"
        os.makedirs(parent, exist_ok=True)
        _write(f"{ROOT}/cgroup.subtree_control", "+memory +pids")
        _write(f"{parent}/cgroup.subtree_control", "+memory +pids")
        return [("v2", parent)]
    parents = []
    for controller in ("memory", "pids"):
        own = _own_path(controller)
        if own is None or not os.path.isdir(f"{ROOT}/{controller}"):
            raise OSError(f"no cgroup v1 {controller} hierarchy")
        parent = f"{ROOT}/{controller}{own.rstrip('/')}/dsrl-sandbox"
        os.makedirs(parent, exist_ok=True)
        parents.append((controller, parent))
    return parents


@functools.lru_cache(maxsize=None)
def _setup() -> tuple | None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not os.path.exists("/bin/sh"):
        return None
    try:
        parents = tuple(_parents())
        Group(64, 8, parents).close()  # can we make one, set limits and remove it?
        return parents
    except OSError:
        return None


def available() -> bool:
    """Whether per-sample cgroups work here (root, writable memory and pids controllers)."""
    return _setup() is not None


class Group:
    """One sample's cgroup(s): memory (swap included) and task limits; `wrap` joins them."""

    def __init__(self, memory_mb: int, pids: int, parents=None):
        self.dirs: list[str] = []
        name = f"s{os.getpid()}-{next(_ids)}"
        mem = str(memory_mb << 20)
        try:
            for kind, parent in parents or _setup():
                path = f"{parent}/{name}"
                os.mkdir(path)
                self.dirs.append(path)
                if kind == "v2":
                    _write(f"{path}/memory.max", mem)
                    if os.path.exists(f"{path}/memory.swap.max"):
                        _write(f"{path}/memory.swap.max", "0")
                    _write(f"{path}/pids.max", str(pids))
                elif kind == "memory":
                    _write(f"{path}/memory.limit_in_bytes", mem)
                    if os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                        _write(f"{path}/memory.memsw.limit_in_bytes", mem)
                else:
                    _write(f"{path}/pids.max", str(pids))
        except OSError:
            self.close()
            raise

    def wrap(self, argv: list[str]) -> list[str]:
        """argv that joins the cgroup(s) as root, drops to uid 65534, then runs `argv`."""
        procs = [f"{d}/cgroup.procs" for d in self.dirs]
        drop = [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        return ["/bin/sh", "-c", _JOIN, "sh", str(len(procs)), *procs, *drop, *argv]

    def peak_mb(self) -> float | None:
        """The most memory the sample's processes and tmpfs pages held at once, if known."""
        for path in self.dirs:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):
                try:
                    with open(f"{path}/{name}") as f:
                        return int(f.read()) / (1 << 20)
                except (OSError, ValueError):
                    continue
        return None

    def close(self) -> None:
        """Remove the cgroup(s); a dying task may hold one for a moment, so retry briefly."""
        for path in self.dirs:
            for attempt in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs = []
