"""Run a benchmark command and say whether the machine was idle while it ran.

    python experiments/idle_run.py python experiments/bench_rollout.py

Prints one line after the command ends: its wall time, the CPU-seconds it (and its
children) used, and the CPU-seconds every other process used meanwhile (busy time from
/proc/stat minus the command's own), with the load average before and after. A ratio
between two timings counts only when both ran on a machine whose `others_cpu` was near 0.
Linux only (/proc/stat).
"""
import os
import resource
import subprocess
import sys
import time


def busy_seconds() -> float:
    """CPU-seconds all processes spent busy since boot (user + nice + system + irq + ...)."""
    with open("/proc/stat") as f:
        fields = list(map(int, f.readline().split()[1:]))
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python experiments/idle_run.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    load0, busy0, t0 = os.getloadavg()[0], busy_seconds(), time.time()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc = subprocess.call(sys.argv[1:])
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, busy1 = time.time() - t0, busy_seconds()
    own = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    print(f"IDLE_CHECK rc={rc} wall={wall:.0f}s own_cpu={own:.0f}s others_cpu={max(0.0, busy1 - busy0 - own):.1f}s "
          f"load_before={load0:.2f} load_after={os.getloadavg()[0]:.2f}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
