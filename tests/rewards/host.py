"""Watch the host while attacks run: RAM, disk, /tmp, processes and 127.0.0.1 listeners.

    with HostWatch() as watch:
        ...                                  # run attacks
    watch.assert_untouched(ram_mb=1024, disk_mb=256)

RAM (MemAvailable) and free disk of / and /tmp are sampled every 20 ms during the run, so
a transient 2 GiB file that is deleted again still shows; the bounds are generous because
other jobs share the machine, but far below what the attacks try to take.
"""
from __future__ import annotations

import os
import shutil
import threading
import time


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def disk_free_mb(path: str) -> float:
    return shutil.disk_usage(path).free / (1 << 20)


def loopback_listeners() -> set[tuple[str, int]]:
    """(address, port) of TCP sockets listening on the host (IPv4 and IPv6)."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A":  # LISTEN
                addr, port = local.split(":")
                found.add((addr, int(port, 16)))
    return found


def processes_named(prefix: str) -> list[int]:
    """Live (not zombie) processes whose name starts with `prefix`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
        if comm.startswith(prefix) and state != "Z":
            pids.append(int(pid))
    return pids


class HostWatch:
    """Samples the host during a run; `ports` are ports the attacks try to listen on."""

    def __init__(self, ports: tuple[int, ...] = (), period_s: float = 0.02):
        self.ports, self.period_s = set(ports), period_s
        self.seen_ports: set[int] = set()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.min_mem = min(self.min_mem, mem_available_mb())
            self.min_disk = min(self.min_disk, disk_free_mb("/"))
            self.min_tmp = min(self.min_tmp, disk_free_mb("/tmp"))
            self.seen_ports |= {port for _, port in loopback_listeners()} & self.ports
            time.sleep(self.period_s)

    def __enter__(self) -> "HostWatch":
        self.mem0, self.disk0, self.tmp0 = mem_available_mb(), disk_free_mb("/"), disk_free_mb("/tmp")
        self.min_mem, self.min_disk, self.min_tmp = self.mem0, self.disk0, self.tmp0
        self.tmp0_entries = set(os.listdir("/tmp"))
        assert not {port for _, port in loopback_listeners()} & self.ports, "attack port already in use"
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # let killed sandboxes be reaped, then look once more
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        return {"ram_drop_mb": round(self.mem0 - self.min_mem), "disk_drop_mb": round(self.disk0 - self.min_disk),
                "tmp_drop_mb": round(self.tmp0 - self.min_tmp)}  # fmt: skip

    def assert_untouched(self, ram_mb: float, disk_mb: float, name: str = "dsrlatk") -> None:
        """RAM and disk never dropped by the bounds; no file, process or listener left."""
        report = self.report()
        print(f"host during the attacks: {report}")
        assert report["ram_drop_mb"] < ram_mb, report
        assert report["disk_drop_mb"] < disk_mb and report["tmp_drop_mb"] < disk_mb, report
        leftovers = [e for e in set(os.listdir("/tmp")) - self.tmp0_entries if e.startswith(("dsrl_sbx", name))]
        leftovers += [e for e in os.listdir("/dev/shm") if e.startswith(name)]
        assert not leftovers, leftovers
        assert not self.seen_ports, self.seen_ports  # never listening on the host, even briefly
        assert processes_named(name) == []
