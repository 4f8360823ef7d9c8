"""Rows-per-call plans of sampling programs (dsrl_jax.tools.throughput) on 8 fake devices,
and the FSDP decode program gathering one layer's weights at a time."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsrl_jax import continuous, parallel
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import preset
from dsrl_jax.sampling import SampleOptions, Sampler, gathers_weights
from dsrl_jax.tools import throughput, topologies


def _plan(hbm_gib, **kw):
    cfg = preset("tiny", dtype="bfloat16", param_dtype="bfloat16", num_layers=3)
    mesh = parallel.make_mesh({"fsdp": -1})
    small = dataclasses.replace(topologies.get("cpu-8"), hbm_gib=hbm_gib)
    return throughput.plan_sampling_program(cfg, mesh, None, small, 64, 512, **kw), small


@pytest.mark.slow  # two plans of 8 compiles each (~20-40 s)
def test_rows_per_call_is_the_largest_that_fits_and_grows_with_hbm():
    plan, small = _plan(0.05)  # 51 MiB per device
    rows = plan["rows_per_call"]
    assert rows > 0 and rows % 8 == 0 and plan["fits"]
    assert plan["peak_bytes_per_device"] <= small.hbm_bytes
    assert plan["layout"].startswith("fsdp, gathered per layer")
    assert plan["next_peak_bytes_per_device"] > small.hbm_bytes  # the largest: 8 more rows do not fit
    per_device = plan["rows_per_device"]
    assert per_device & (per_device - 1) == 0 and per_device * 8 <= rows < 2 * per_device * 8
    assert plan["per_row_bytes"]["decode"] > 0 and plan["per_layer_bytes"]["decode"] > 0
    bigger, _ = _plan(0.1)
    assert bigger["rows_per_call"] > rows  # monotone in HBM


def _decode_temp_bytes(cfg, mesh, num_layers):
    """temp bytes of the compiled continuous decode loop, FSDP-sharded f32 weights."""
    small = dataclasses.replace(cfg, num_layers=num_layers)
    sampler = Sampler(small, mesh)
    abstract = qwen2.abstract_params(small)
    sh = parallel.param_shardings(qwen2.logical_axes(small), abstract, mesh)
    train = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, sh)
    params = throughput.sampling_params(sampler, False, train)
    assert gathers_weights(params, mesh) and not gathers_weights(throughput.sampling_params(sampler, True), mesh)
    opts = SampleOptions(max_new_tokens=64, cache_dtype="float32", max_in_flight=16, page_size=16)
    lay = continuous.plan_layout(sampler, 16, None, 16, 16, 64)
    dec, _ = throughput._compile_continuous(sampler, lay, params, opts, 16, prefill=False)
    return dec["temp_bytes"]


def test_fsdp_decode_gathers_one_layer_at_a_time():
    # Wide layers, a small vocabulary: one layer's gathered weights dwarf everything else.
    cfg = preset("small", dtype="float32", param_dtype="float32", vocab_size=512, hidden_size=512,
                 intermediate_size=4096)
    mesh = parallel.make_mesh({"fsdp": -1})
    layer_bytes = sum(int(np.prod(x.shape[1:])) * 4 for x in jax.tree.leaves(qwen2.abstract_params(cfg)["layers"]))
    two, six = (_decode_temp_bytes(cfg, mesh, n) for n in (2, 6))
    # Gathered all at once, 4 more layers would add ~4 layers' weights per device; one at a
    # time they add only their small per-layer temporaries.
    assert six - two < 0.5 * layer_bytes, (six - two, layer_bytes)
    assert two > layer_bytes  # a layer's weights are gathered (the test measures something)
