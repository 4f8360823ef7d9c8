"""Run untrusted Python in a fresh, locked-down interpreter.

Every call starts a new `python3 -I` under bubblewrap:

    bwrap --unshare-all --die-with-parent --new-session
          --ro-bind /usr /usr  (+ /bin, /lib*, /sbin as symlinks or read-only binds,
                                 /etc/alternatives, /etc/ld.so.cache, /etc/localtime)
          --dev /dev --proc /proc
          --size T --tmpfs /tmp  --size S --tmpfs /dev/shm  --size W --tmpfs /sandbox
          --file FD /sandbox/NAME ...  --chdir /sandbox

i.e. no network, no IPC, its own PID namespace (when the sandbox's init dies every process
the candidate started dies with it), and a filesystem holding only the interpreter, its
libraries and a private, size-capped working dir filled from memory (memfd), never a host
directory. Nothing else of the host is visible: no dataset, checkout, home or cache path,
and no other process (its /proc is its own). The interpreter must live under /usr or in
its own installation prefix, which is then bound read-only too.

When the grader runs as root, bwrap is started as the unprivileged uid/gid 65534
(`nobody`): RLIMIT_NPROC is ignored for root, and in bwrap's own user namespace it counts
only that sandbox's processes, so a fork bomb stops at `nproc` processes. Where the grader
may create cgroups (cgroup.py), each sample also runs in its own memory + pids cgroup, so
its processes and tmpfs pages together stay under `Limits.sample_memory_mb`.

Rlimits (address space, CPU, processes, file size, open files, no core dumps) are set by
the sandbox's first lines of Python (`_PRELUDE`) before any candidate code runs, so no
`preexec_fn` is needed and the caller may be multi-threaded (e.g. a JAX process).

Fail closed: if bwrap is missing or its probe fails, `run_python` raises
`SandboxUnavailable` unless the process opted in with `configure(allow_unsandboxed=True)`
(config `rewards.allow_unsandboxed`). The opt-in fallback runs the same interpreter as a
plain subprocess (same rlimits, scrubbed environment, new session, private host temp dir,
uid 65534 as root) and logs a loud warning; what it does NOT protect is listed in
`UNSANDBOXED_GAPS`. Only a working probe is cached: a probe that was killed or timed out,
or a bwrap start that failed (bwrap's own error, exit 1 before the candidate ran), is
retried, never remembered as "no sandbox".

The caller gets stdout/stderr (each capped; the process group is killed beyond the cap),
whatever the candidate wrote to an optional result pipe ("channel"), the exit code, and
why it was killed. Nothing here interprets the output: graders decide.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from dsrl_jax.rewards import cgroup

log = logging.getLogger(__name__)

NOBODY = 65534
SANDBOX_DIR = "/sandbox"  # the private working dir inside bwrap (a sized tmpfs)
CLEAN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "HOME": "/tmp",
}
_TOP_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # symlinks into /usr on most systems
_ETC_FILES = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime")
UNSANDBOXED_GAPS = (
    "no filesystem isolation: the candidate reads every file the uid can (problem files with "
    "their tests included) and other concurrent samples' working dirs and /tmp",
    "no network isolation: 127.0.0.1 services and the internet are reachable",
    "no process isolation: it sees the grader's command line and can signal other samples "
    "running as the same uid",
    "no tmpfs or disk quota: only the per-file size limit bounds what it writes",
    "a daemon that calls setsid() escapes the process-group kill",
)

# Runs first in the sandboxed interpreter: apply rlimits, then run the target script as
# __main__ with the remaining argv. Kept tiny; it is written into the working dir.
_PRELUDE = """\
import json, resource, runpy, sys
for _name, _value in json.loads(sys.argv[1]).items():
    _soft, _hard = _value
    resource.setrlimit(getattr(resource, _name), (_soft, _hard))
del _name, _value, _soft, _hard
sys.argv = sys.argv[2:]
sys.path[0] = "."
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class SandboxUnavailable(RuntimeError):
    """No working bubblewrap here and unsandboxed execution was not opted in to."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource bounds for one sandboxed run (see the README's sandbox section)."""

    timeout_s: float = 6.0  # wall clock; the whole process group is killed at the deadline
    cpu_s: int = 10  # RLIMIT_CPU per process (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS per process
    nproc: int = 32  # RLIMIT_NPROC: processes + threads in the sandbox's user namespace
    fsize_mb: int = 16  # RLIMIT_FSIZE: largest file the candidate may write
    nofile: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 4 << 20  # cap on stdout + stderr + channel together
    workdir_mb: int = 64  # tmpfs size of the working dir (bwrap)
    tmp_mb: int = 64  # tmpfs size of /tmp (bwrap)
    shm_mb: int = 16  # tmpfs size of /dev/shm (bwrap)

    @property
    def sample_memory_mb(self) -> int:
        """The cgroup bound on a sample's total RAM: its processes plus its tmpfs mounts."""
        return self.memory_mb + self.workdir_mb + self.tmp_mb + self.shm_mb

    def rlimits(self) -> dict[str, tuple[int, int]]:
        mb = 1 << 20
        return {
            "RLIMIT_AS": (self.memory_mb * mb, self.memory_mb * mb),
            "RLIMIT_CPU": (self.cpu_s, self.cpu_s + 1),
            "RLIMIT_NPROC": (self.nproc, self.nproc),
            "RLIMIT_FSIZE": (self.fsize_mb * mb, self.fsize_mb * mb),
            "RLIMIT_NOFILE": (self.nofile, self.nofile),
            "RLIMIT_CORE": (0, 0),
        }


@dataclasses.dataclass
class SandboxResult:
    stdout: str
    stderr: str
    channel: str  # what the process wrote to the result pipe (fd given as argv), if any
    returncode: int | None
    timed_out: bool
    killed_reason: str | None  # "timeout", "output_limit", "cancelled" or None
    elapsed_s: float
    start_failed: bool = False  # bwrap's own error before the candidate ran
    peak_memory_mb: float | None = None  # the sample's peak RAM (processes + tmpfs) where a cgroup measured it


def _drop_privileges() -> dict:
    if os.geteuid() == 0:
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    return {}


def _prefix(python: str) -> str:
    """The installation prefix of an interpreter (/usr for /usr/bin/python3)."""
    return os.path.dirname(os.path.dirname(os.path.realpath(python)))


def _bwrap_argv(python: str, files: dict[str, int], limits: Limits) -> list[str]:
    """bwrap options binding only the interpreter, its libraries and a sized private tmpfs."""
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr"]  # fmt: skip
    for top in _TOP_DIRS:
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _ETC_FILES:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    prefix = _prefix(python)
    if not (prefix + "/").startswith("/usr/"):
        if prefix in ("/", os.path.expanduser("~")) or (os.getcwd() + "/").startswith(prefix + "/"):
            raise SandboxUnavailable(f"interpreter prefix {prefix} would expose a home or checkout")
        argv += ["--ro-bind", prefix, prefix]
    mb = str(1 << 20)
    argv += [
        "--dev", "/dev", "--proc", "/proc",
        "--size", str(limits.tmp_mb * int(mb)), "--tmpfs", "/tmp",
        "--size", str(limits.shm_mb * int(mb)), "--tmpfs", "/dev/shm",
        "--size", str(limits.workdir_mb * int(mb)), "--tmpfs", SANDBOX_DIR,
    ]  # fmt: skip
    for name, fd in files.items():
        argv += ["--perms", "0644", "--file", str(fd), f"{SANDBOX_DIR}/{name}"]
    return argv + ["--chdir", SANDBOX_DIR]


def _memfd(name: str, text: str) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, text.encode("utf-8"))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# -- choosing the sandbox (cached only on success) -----------------------------------------
_allow_unsandboxed = False
_chosen: dict[tuple, tuple[bool, str]] = {}
_warned = False
_lock = threading.Lock()


def configure(allow_unsandboxed: bool = False) -> None:
    """Set this process's policy: may code run without bubblewrap (with a loud warning)?"""
    global _allow_unsandboxed
    _allow_unsandboxed = bool(allow_unsandboxed)


def _probe(python: str, use_bwrap: bool) -> bool:
    """Whether `python` starts (under bwrap if asked) as the sandbox user."""
    try:
        res = _spawn({}, [python, "-I", "-c", "print(6*7)"], b"", Limits(timeout_s=30), use_bwrap, python)
    except (OSError, SandboxUnavailable):
        return False
    return res.returncode == 0 and res.stdout.strip() == "42"


def _candidates(python: str | None) -> list[str]:
    if python:
        return [python]
    return [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]


def resolve(use_bwrap: bool | None = None, python: str | None = None) -> tuple[bool, str]:
    """Pick (bwrap?, interpreter); a working choice is cached for the process.

    The grader's own interpreter may live where the sandbox user cannot read it (e.g. under
    /root), so the system python3 is tried next. `use_bwrap=None` means bwrap, falling back
    to a plain subprocess only if `configure(allow_unsandboxed=True)` was called; the
    environment variable DSRL_SANDBOX="bwrap" requires bwrap, "plain" asks for the fallback
    (still only with the opt-in). Raises SandboxUnavailable otherwise.
    """
    if use_bwrap is None:
        use_bwrap = {"bwrap": True, "plain": False}.get(os.environ.get("DSRL_SANDBOX", "auto"))
    key = (use_bwrap, python)
    with _lock:
        if key in _chosen:
            return _chosen[key]
    has_bwrap = shutil.which("bwrap") is not None
    if use_bwrap is not False:
        for attempt in range(3):  # a probe that was killed or timed out is retried
            for py in _candidates(python):
                if os.path.exists(py) and has_bwrap and _probe(py, True):
                    with _lock:
                        _chosen[key] = (True, py)
                    return True, py
            if not has_bwrap:
                break
            time.sleep(0.2 * (attempt + 1))
        if use_bwrap is True or not _allow_unsandboxed:
            why = "is not installed" if not has_bwrap else "fails its probe here"
            raise SandboxUnavailable(
                f"bubblewrap {why}: code rewards refuse to run untrusted code unsandboxed "
                "(install bubblewrap, or set rewards.allow_unsandboxed=True to accept the risks "
                "listed in the README's sandbox section)"
            )
    elif not _allow_unsandboxed:
        raise SandboxUnavailable(
            "DSRL_SANDBOX=plain needs rewards.allow_unsandboxed=True (unsandboxed execution)"
        )
    for py in _candidates(python):
        if os.path.exists(py) and _probe(py, False):
            _warn_unsandboxed()
            with _lock:
                _chosen[key] = (False, py)
            return False, py
    raise SandboxUnavailable(f"no usable interpreter among {_candidates(python)} (unsandboxed)")


def _warn_unsandboxed() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "UNSANDBOXED CODE EXECUTION (rewards.allow_unsandboxed=True): untrusted code runs as "
            "a plain subprocess with rlimits only. Not protected: %s. Use it for development only.",
            "; ".join(UNSANDBOXED_GAPS),
        )


def bwrap_available() -> bool:
    """Whether bubblewrap works here (what run_python will use unless told otherwise)."""
    try:
        return resolve(True)[0]
    except SandboxUnavailable:
        return False


_LIVE: set[int] = set()  # process groups started and not yet reaped (see kill_live)


def kill_live() -> None:
    """Kill every sandbox this process still runs (a pool worker being stopped calls this)."""
    for pgid in list(_LIVE):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


def run_python(
    files: dict[str, str],
    main: str,
    args: tuple[str, ...] = (),
    stdin: str = "",
    limits: Limits = Limits(),
    channel: bool = False,
    use_bwrap: bool | None = None,
    python: str | None = None,
    pass_fds: tuple[int, ...] = (),
    cancel: threading.Event | None = None,
) -> SandboxResult:
    """Run `python3 -I main *args` in a fresh sandbox whose working dir holds `files`.

    With `channel=True` a pipe is opened and its write end's fd number is appended to the
    argv; the trusted harness inside writes its results there, separate from stdout.
    `pass_fds` are further descriptors handed over to the process (the caller names them
    in `args`); they are closed here once it has them, so the other ends see EOF when it
    exits. Setting `cancel` kills the run early (killed_reason "cancelled").
    `start_failed` on the result says bwrap itself failed to set up the sandbox; runs
    without handed-over fds are retried then.
    """
    try:
        bwrap, py = resolve(use_bwrap, python)
    except BaseException:
        for fd in pass_fds:
            os.close(fd)
        raise
    argv = [py, "-I", "_prelude.py", json.dumps(limits.rlimits()), main, *args]
    files = {**files, "_prelude.py": _PRELUDE}
    data = stdin.encode("utf-8", "replace")
    for attempt in range(3):
        res = _spawn(files, argv, data, limits, bwrap, py, channel, pass_fds, cancel)
        res.start_failed = bwrap and res.returncode == 1 and res.stderr.startswith("bwrap:")
        if not res.start_failed or pass_fds:  # handed-over fds are gone: the caller retries
            return res
        log.warning("bwrap failed to start a sandbox (%s); retrying", res.stderr.strip()[:200])
        time.sleep(0.1 * (attempt + 1))
    return res  # still bwrap's own failure: the sample fails, nothing is cached


def _spawn(files, argv, stdin, limits, bwrap, py, channel=False, pass_fds=(), cancel=None) -> SandboxResult:
    """Start one sandboxed process with `files` in its working dir and collect its outputs."""
    workdir, fds, read_fd, write_fd, group = None, {}, None, None, None
    try:
        if bwrap:
            fds = {name: _memfd(name, text) for name, text in files.items()}
            cwd = "/"
        else:
            workdir = cwd = tempfile.mkdtemp(prefix="dsrl_sbx_")
            for name, text in files.items():
                with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                    f.write(text)
            if os.geteuid() == 0:  # the sandbox user owns its working dir, nothing else
                for name in os.listdir(workdir):
                    os.chown(os.path.join(workdir, name), NOBODY, NOBODY)
                os.chown(workdir, NOBODY, NOBODY)
        argv = list(argv)
        if channel:
            read_fd, write_fd = os.pipe()
            argv.append(str(write_fd))
        inherit = tuple(pass_fds) + ((write_fd,) if channel else ()) + tuple(fds.values())
        privileges = _drop_privileges()
        if bwrap:
            argv = _bwrap_argv(py, fds, limits) + argv
            if cgroup.available():  # the sample's total RAM and tasks, not just per process
                group = cgroup.Group(limits.sample_memory_mb, limits.nproc + 4)
                argv, privileges = group.wrap(argv), {}  # joins as root, then drops to 65534
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=CLEAN_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=inherit, start_new_session=True, **privileges,
        )  # fmt: skip
        _LIVE.add(proc.pid)
        for fd in [write_fd, *fds.values(), *pass_fds]:
            if fd is not None:
                os.close(fd)
        write_fd, fds, pass_fds = None, {}, ()
        try:
            res = _communicate(proc, stdin, read_fd, limits, start, cancel)
        finally:
            _kill_group(proc)
            _LIVE.discard(proc.pid)
        if group is not None:
            res.peak_memory_mb = group.peak_mb()
        return res
    finally:
        for fd in [read_fd, write_fd, *fds.values(), *pass_fds]:
            if fd is not None:
                os.close(fd)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if group is not None:
            group.close()


def _communicate(
    proc: subprocess.Popen, stdin: bytes, channel_fd: int | None, limits: Limits, start: float,
    cancel: threading.Event | None = None,
) -> SandboxResult:
    """Feed stdin, read outputs with a size cap, kill the group at the deadline."""
    deadline = start + limits.timeout_s
    sel = selectors.DefaultSelector()
    bufs: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray(), "channel": bytearray()}
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    if channel_fd is not None:
        sel.register(channel_fd, selectors.EVENT_READ, "channel")
    if stdin:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
    else:
        proc.stdin.close()
    sent, total, killed, exited_at = 0, 0, None, None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            killed = "timeout"
            break
        if cancel is not None and cancel.is_set():
            killed = "cancelled"
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break  # main process is gone; a straggler holding a pipe open gets no more time
        for key, _ in sel.select(timeout=min(0.05, deadline - now)):
            if key.data == "stdin":
                try:
                    sent += os.write(key.fileobj.fileno(), stdin[sent : sent + 65536])
                except (BrokenPipeError, OSError):
                    sent = len(stdin)
                if sent >= len(stdin):
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                continue
            fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
            chunk = os.read(fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            bufs[key.data] += chunk
            total += len(chunk)
            if total > limits.output_bytes:
                killed = "output_limit"
                break
        if killed:
            break
    _kill_group(proc)  # always: also reaps anything the candidate left in its group
    try:
        returncode = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        returncode = None
    for f in (proc.stdout, proc.stderr, proc.stdin):
        if not f.closed:
            f.close()
    sel.close()
    cap = limits.output_bytes
    return SandboxResult(
        stdout=bytes(bufs["stdout"][:cap]).decode("utf-8", "replace"),
        stderr=bytes(bufs["stderr"][:cap]).decode("utf-8", "replace"),
        channel=bytes(bufs["channel"][:cap]).decode("utf-8", "replace"),
        returncode=returncode if killed is None else None,
        timed_out=killed == "timeout",
        killed_reason=killed,
        elapsed_s=time.monotonic() - start,
    )
