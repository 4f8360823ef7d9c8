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


# Per device of each chip family: HBM GiB, HBM GB/s, peak dense bf16 TFLOP/s.
CHIPS: dict[str, tuple[float, float, float]] = {
    "v4": (32, 1228, 275),
    "v5e": (16, 819, 197),
    "v5p": (95, 2765, 459),
    "v6e": (32, 1640, 918),
    "h100": (80, 3350, 989),
    "cpu": (16, 50, 1),
}
# Slices: name (chip family before the dash), devices JAX sees, note.
SLICES = """
v4-8    4  4 chips (2 TensorCores each, one megacore device)
v4-16   8  8 chips, 2 hosts
v4-32  16  16 chips, 4 hosts
v5e-4   4  4 chips
v5e-8   8  8 chips, 1 host
v5e-16 16  16 chips, 4 hosts
v5p-8   4  4 chips (megacore)
v5p-16  8  8 chips, 2 hosts
v6e-4   4  4 chips
v6e-8   8  8 chips, 1 host
v6e-16 16  16 chips, 4 hosts
h100-8  8  8 x H100 80GB
cpu-8   8  8 fake CPU devices, 16 GiB each (tests)
"""


def _topology(row: str) -> Topology:
    name, devices, note = row.split(None, 2)
    hbm_gib, hbm_gbps, bf16_tflops = CHIPS[name.split("-")[0]]
    return Topology(name, int(devices), hbm_gib, note, hbm_gbps, bf16_tflops)


TOPOLOGIES: dict[str, Topology] = {t.name: t for t in map(_topology, SLICES.strip().splitlines())}


def get(name: str) -> Topology:
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[name]


def markdown_table() -> str:
    rows = ["| topology | devices | HBM per device | note |", "|---|---|---|---|"]
    rows += [f"| {t.name} | {t.devices} | {t.hbm_gib:g} GiB | {t.note} |" for t in TOPOLOGIES.values()]
    return "\n".join(rows)
