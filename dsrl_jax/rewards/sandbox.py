"""Run untrusted Python in a fresh, locked-down interpreter.

Every call starts a new `python3 -I` in a private temporary working directory. Where
bubblewrap works (probed once per process) the interpreter runs inside
`bwrap --unshare-all --die-with-parent --new-session --ro-bind / / --dev /dev --proc /proc
--tmpfs /tmp`, i.e. with no network, a read-only root, a private /tmp, and its own PID
namespace: when the sandbox's init dies every process the candidate started dies with it,
so a double-forked daemon cannot outlive the run.

Why the privilege drop: RLIMIT_NPROC is ignored for root, and a root-owned bwrap maps the
candidate back to root. When the grader runs as root we therefore start bwrap as the
unprivileged uid/gid 65534 (`nobody`); bwrap then creates its own user namespace, in which
RLIMIT_NPROC counts only that sandbox's processes, so a fork bomb stops at a few dozen
processes instead of eating the host.

Rlimits (address space, CPU, processes, file size, open files) are set by the sandbox's
first lines of Python (`_prelude` below) before any candidate code runs, so no
`preexec_fn` is needed and the caller may be multi-threaded (e.g. a JAX process).

Fallback (documented, logged once): if bwrap is missing or fails its probe, the same
interpreter runs as a plain subprocess with the same rlimits, scrubbed environment, new
session (process group), private cwd and (as root) uid 65534. It has no network or
filesystem isolation beyond file permissions, and a daemon that calls setsid() can escape
the process-group kill; use it for development only.

The caller gets stdout/stderr (each capped; the process group is killed beyond the cap),
whatever the candidate wrote to an optional result pipe ("channel"), the exit code, and
why it was killed. Nothing here interprets the output: graders decide.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

log = logging.getLogger(__name__)

NOBODY = 65534
SANDBOX_DIR = "/tmp/work"  # where the private working dir appears inside bwrap (on its tmpfs)
CLEAN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "HOME": "/tmp",
}

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


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource bounds for one sandboxed process."""

    timeout_s: float = 6.0  # wall clock; the whole process group is killed at the deadline
    cpu_s: int = 10  # RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS
    nproc: int = 32  # RLIMIT_NPROC (effective only for non-root, see module doc)
    fsize_mb: int = 16  # RLIMIT_FSIZE: largest file the candidate may write
    nofile: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 4 << 20  # cap on stdout + stderr + channel together

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
    killed_reason: str | None  # "timeout", "output_limit" or None
    elapsed_s: float


def _drop_privileges() -> dict:
    if os.geteuid() == 0:
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    return {}


def _bwrap_argv(workdir: str) -> list[str]:
    return [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--bind", workdir, SANDBOX_DIR, "--chdir", SANDBOX_DIR,
    ]  # fmt: skip


@functools.lru_cache(maxsize=None)
def _probe(python: str, use_bwrap: bool) -> bool:
    """Whether `python` starts (under bwrap if asked) as the sandbox user."""
    if use_bwrap and shutil.which("bwrap") is None:
        return False
    workdir = tempfile.mkdtemp(prefix="dsrl_probe_")
    try:
        os.chmod(workdir, 0o777)
        argv = (_bwrap_argv(workdir) if use_bwrap else []) + [python, "-I", "-c", "print(6*7)"]
        out = subprocess.run(
            argv, env=CLEAN_ENV, cwd=workdir, capture_output=True, timeout=30,
            start_new_session=True, **_drop_privileges(),
        )  # fmt: skip
        return out.returncode == 0 and out.stdout.strip() == b"42"
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def resolve(use_bwrap: bool | None = None, python: str | None = None) -> tuple[bool, str]:
    """Pick (bwrap?, interpreter) once per process.

    The grader's own interpreter may live where the sandbox user cannot read it (e.g. under
    /root), so the system python3 is tried second. `use_bwrap=None` means auto, unless the
    environment variable DSRL_SANDBOX is "bwrap" (require it) or "plain" (the fallback).
    """
    if use_bwrap is None:
        use_bwrap = {"bwrap": True, "plain": False}.get(os.environ.get("DSRL_SANDBOX", "auto"))
    return _resolve(use_bwrap, python)


_warned = False


@functools.lru_cache(maxsize=None)
def _resolve(use_bwrap: bool | None, python: str | None) -> tuple[bool, str]:
    global _warned
    pythons = [python] if python else [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    modes = [use_bwrap] if use_bwrap is not None else [True, False]
    for mode in modes:
        for py in pythons:
            if py and os.path.exists(py) and _probe(py, mode):
                if not mode and not _warned:
                    _warned = True
                    log.warning(
                        "bubblewrap is unavailable or fails here: untrusted code runs as a plain "
                        "subprocess (rlimits, new session, private cwd, no network isolation). "
                        "Install bubblewrap for real isolation."
                    )
                return mode, py
    raise RuntimeError(f"no usable sandbox interpreter among {pythons} (bwrap={modes})")


def bwrap_available() -> bool:
    """Whether run_python (in auto mode) will use bubblewrap here."""
    try:
        return resolve()[0]
    except RuntimeError:
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
) -> SandboxResult:
    """Write `files` into a fresh private dir and run `python3 -I main *args` there.

    With `channel=True` a pipe is opened and its write end's fd number is appended to the
    argv; the trusted harness inside writes its results there, separate from stdout.
    """
    bwrap, py = resolve(use_bwrap, python)
    workdir = tempfile.mkdtemp(prefix="dsrl_sbx_")
    read_fd = write_fd = None
    try:
        for name, text in {**files, "_prelude.py": _PRELUDE}.items():
            with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                f.write(text)
        if os.geteuid() == 0:  # the sandbox user owns its working dir, nothing else
            for name in os.listdir(workdir):
                os.chown(os.path.join(workdir, name), NOBODY, NOBODY)
            os.chown(workdir, NOBODY, NOBODY)
        argv = [py, "-I", "_prelude.py", json.dumps(limits.rlimits()), main, *args]
        pass_fds: tuple[int, ...] = ()
        if channel:
            read_fd, write_fd = os.pipe()
            argv.append(str(write_fd))
            pass_fds = (write_fd,)
        if bwrap:
            argv = _bwrap_argv(workdir) + argv
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=workdir, env=CLEAN_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=pass_fds, start_new_session=True,
            **_drop_privileges(),
        )  # fmt: skip
        _LIVE.add(proc.pid)
        if write_fd is not None:
            os.close(write_fd)
            write_fd = None
        try:
            return _communicate(proc, stdin.encode("utf-8", "replace"), read_fd, limits, start)
        finally:
            _kill_group(proc)
            _LIVE.discard(proc.pid)
    finally:
        for fd in (read_fd, write_fd):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _communicate(
    proc: subprocess.Popen, stdin: bytes, channel_fd: int | None, limits: Limits, start: float
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
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break  # main process is gone; a straggler holding a pipe open gets no more time
        for key, _ in sel.select(timeout=min(0.1, deadline - now)):
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
