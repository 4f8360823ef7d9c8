"""Accelerator topologies for memory planning: devices JAX sees and HBM per device.

`devices` is what `jax.devices()` lists on one slice (v4 and v5p chips have two
TensorCores fused into one megacore device, so a v4-8 or v5p-8 shows 4 devices); `hbm_gib`
is the memory of one such device. Sources: cloud.google.com/tpu/docs/system-architecture
(v4: 32 GiB/chip, v5e: 16 GiB, v5p: 95 GiB, v6e Trillium: 32 GiB).

`hbm_gbps` (HBM bandwidth, GB/s) and `bf16_tflops` (peak dense bf16) per device feed the
throughput model (modeled step time = max(bytes / bandwidth, FLOPs / peak)), from the same
pages: v4 1228 GB/s, 275 TFLOP/s; v5e 819 GB/s, 197; v5p 2765 GB/s, 459; v6e 1640 GB/s,
918; H100 SXM 3350 GB/s, 989. cpu-8 has nominal figures for tests.
"""

from __future__ import annotations

import dataclasses

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    devices: int
    hbm_gib: float
    note: str = ""
    hbm_gbps: float = 0.0
    bf16_tflops: float = 0.0

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm_gib * GIB)


TOPOLOGIES: dict[str, Topology] = {t.name: t for t in [
    Topology("v4-8", 4, 32, "4 chips (2 TensorCores each, one megacore device)", 1228, 275),
    Topology("v4-16", 8, 32, "8 chips, 2 hosts", 1228, 275),
    Topology("v4-32", 16, 32, "16 chips, 4 hosts", 1228, 275),
    Topology("v5e-4", 4, 16, "4 chips", 819, 197),
    Topology("v5e-8", 8, 16, "8 chips, 1 host", 819, 197),
    Topology("v5e-16", 16, 16, "16 chips, 4 hosts", 819, 197),
    Topology("v5p-8", 4, 95, "4 chips (megacore)", 2765, 459),
    Topology("v5p-16", 8, 95, "8 chips, 2 hosts", 2765, 459),
    Topology("v6e-4", 4, 32, "4 chips", 1640, 918),
    Topology("v6e-8", 8, 32, "8 chips, 1 host", 1640, 918),
    Topology("v6e-16", 16, 32, "16 chips, 4 hosts", 1640, 918),
    Topology("h100-8", 8, 80, "8 x H100 80GB", 3350, 989),
    Topology("cpu-8", 8, 16, "8 fake CPU devices, 16 GiB each (tests)", 50, 1),
]}


def get(name: str) -> Topology:
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[name]


def markdown_table() -> str:
    rows = ["| topology | devices | HBM per device | note |", "|---|---|---|---|"]
    rows += [f"| {t.name} | {t.devices} | {t.hbm_gib:g} GiB | {t.note} |" for t in TOPOLOGIES.values()]
    return "\n".join(rows)
