"""What the memory plan (tools/memory.py) and the throughput plans (tools/throughput.py)
share: fake CPU devices shaped like a topology, set up before JAX starts its backends, and
the per-device figures of compiled programs and of sharded trees. memory.py imports
throughput.py, so these live here rather than in either."""

from __future__ import annotations

import os

import jax
import numpy as np


def sds(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
    """An abstract array with a sharding: what the planners compile programs on."""
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def preparse_topology(argv) -> str:
    """The --topology flag's value in argv (default v5e-8), read before flags are parsed:
    the fake devices must exist before JAX starts its backends."""
    for i, a in enumerate(argv):
        if a.startswith("--topology="):
            return a.split("=", 1)[1]
        if a == "--topology" and i + 1 < len(argv):
            return argv[i + 1]
    return "v5e-8"


def setup_fake_devices(num_devices: int) -> None:
    """`num_devices` CPU devices. Must run before JAX starts its backends (any JAX
    operation): jax.config refuses the device count afterwards (RuntimeError)."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(kept)
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", num_devices)


def cost(compiled) -> tuple[float, float]:
    """(FLOPs, bytes accessed) of a compiled program (cost_analysis)."""
    c = compiled.cost_analysis()
    if isinstance(c, (list, tuple)):
        c = c[0] if c else {}
    c = c or {}
    return float(c.get("flops", 0.0)), float(c.get("bytes accessed", 0.0))


def stats(compiled) -> dict:
    """Per-device bytes (memory_analysis) and FLOPs of a compiled program."""
    mem = compiled.memory_analysis()
    # XLA:CPU's peak_memory_in_bytes counts arguments only; use the buffer-assignment sum
    # (live arguments + outputs not aliased to donated arguments + temporaries).
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    return {
        "peak_bytes_per_device": int(peak),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "flops": cost(compiled)[0],
    }


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape)
        total += int(np.prod(shard)) * np.dtype(x.dtype).itemsize
    return total
