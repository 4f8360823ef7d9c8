"""Rows-per-call plans of sampling programs (dsrl_jax.tools.throughput) on 8 fake devices."""
import dataclasses

from dsrl_jax import parallel
from dsrl_jax.models.config import preset
from dsrl_jax.tools import throughput, topologies


def test_rows_per_call_is_the_largest_that_fits():
    cfg = preset("tiny", dtype="bfloat16", param_dtype="bfloat16", num_layers=3)
    mesh = parallel.make_mesh({"fsdp": -1})
    small = dataclasses.replace(topologies.get("cpu-8"), hbm_gib=0.05)  # 51 MiB per device
    plan = throughput.plan_sampling_program(cfg, mesh, None, small, 64, 512)
    rows = plan["rows_per_call"]
    assert rows > 0 and rows % 16 == 0 and plan["fits"]
    assert plan["peak_bytes_per_device"] <= small.hbm_bytes
    assert plan["weights"] == "replicated"
    assert plan["next_peak_bytes_per_device"] > small.hbm_bytes  # the largest: 16 more rows do not fit
