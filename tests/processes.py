"""Tests that start several Python processes at once (multi-process JAX runs)."""
from __future__ import annotations

import socket
import subprocess

from tests.conftest import REPO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(commands: list[list[str]], envs: list[dict], timeout: float, what: str = "process") -> list[str]:
    """Start every command at once (cwd: the checkout), wait for all, kill any still running
    after `timeout`; assert each exited 0. Returns each one's output (stdout and stderr)."""
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in zip(commands, envs)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{what} failed (rc {p.returncode}):\n{log[-4000:]}"
    return logs
