"""Rollout throughput plans (continuous batching) for the memory tool, and rows-per-call
plans of the sampling programs (scoring, evaluation):

    python -m dsrl_jax.tools.throughput --config=configs/score.py --topology=v5e-8
    python -m dsrl_jax.tools.throughput --config=configs/eval.py --topology=v4-8

Rollout plan of a training config on a topology (`plan_rollout`):
  - rows in flight: `rows_per_chip` x chips decoding slots, KV pool of `kv_fraction` x slots
    x (prompt + response) tokens, weights in the sampling layout (Sampler.prepare: compute
    dtype, replicated over the data axes);
  - the compiled continuous-batching programs' memory (decode loop and the largest prefill
    of a round, SampleOptions.prefill_rows rows per shard), and one decode step's FLOPs and
    bytes accessed (cost_analysis of the compiled loop, whose body XLA counts once: one step), with the in-place pool writes
    counted at the bytes they write (`pool_write_overcount`; the raw figure is kept as
    decode_step_bytes_counted_by_xla);
  - modeled step time = max(bytes / HBM bandwidth, FLOPs / bf16 peak) (topology table);
  - modeled rollout seconds of one GRPO step (batch_prompts x group_size rows) for the
    length model below, against the static design: calls of prompts_per_sample_call
    prompts, each decoding to the cap (a call of 32 rows holds a truncated row with
    probability 1 - 0.85^32 > 99%), one step of which is the same program at the static
    call's rows, the training weights (FSDP-sharded, gathered per step) and a cache read
    at half its length on average (the static loop grows its cache by segments).

Length model (R1-Distill-like): 15% of responses reach the cap, the rest are uniform on
[0, 0.706 cap), so the mean is 45% of the cap. A slot then holds on average
E[l^2] / (2 E[l]) = 32% of the cap (length-biased), so a pool of half of slots x cap
rarely fills (the sampler preempts and later resumes the youngest row when it does).
Continuous rollout steps = all tokens / slots + one cap for the drain at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from dsrl_jax import continuous, parallel
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import param_count, preset
from dsrl_jax.sampling import SampleOptions, Sampler, bucket, gathers_weights
from dsrl_jax.tools import planning, topologies

TRUNCATED = 0.15  # fraction of responses cut at the cap
MEAN = 0.45  # mean response length / cap


def sampling_params(sampler, replicate: bool, training_params=None):
    """Abstract parameters as the sampler decodes from them: Sampler.prepare's output
    (compute dtype, layers unstacked; replicated over the data axes, or with `replicate`
    False the training shardings of `training_params`)."""
    dtype = sampler.cfg.dtype
    abstract = jax.eval_shape(qwen2.unstack_layers, qwen2.abstract_params(sampler.cfg))
    if replicate:
        shardings = sampler.sampling_shardings()
    else:
        sh = jax.tree.map(lambda a: a.sharding, training_params)
        layer = jax.tree.map(lambda s: NamedSharding(s.mesh, P(*s.spec[1:])), sh["layers"])
        shardings = {**sh, "layers": tuple(layer for _ in range(sampler.cfg.num_layers))}
    return jax.tree.map(lambda a, s: planning.sds(a.shape, dtype, s), abstract, shardings)


def compile_continuous(sampler, layout, params, opts, prompt_len: int, prefill: bool = True, cpu_raw: bool = True):
    """(decode stats, prefill stats) of the decode loop and a round's largest prefill, as a
    TPU would hold them. XLA:CPU computes bf16 dots in f32 and materialises f32 copies of
    their bf16 operands (the whole KV pool and the weights, per layer), which a TPU does
    not; so each program is compiled twice: as given (raw figures, "cpu_*" keys) and all in
    f32 (weights, cache, activations: no upcasts). Reported: peak = the bf16 program's
    arguments and unaliased outputs + the f32 program's temporaries (an upper bound of the
    bf16 ones); bytes accessed = half the f32 program's (every array at twice its size)."""
    if jnp.dtype(sampler.cfg.dtype) == jnp.float32 and opts.cache_dtype == "float32":
        return _compile_continuous(sampler, layout, params, opts, prompt_len, prefill)
    if cpu_raw:
        raw = _compile_continuous(sampler, layout, params, opts, prompt_len, prefill)
    else:  # arguments from the abstract shapes (the donated state aliases the outputs)
        state = abstract_state(sampler, layout, opts.cache_dtype)
        args = planning.per_device_bytes(params) + planning.per_device_bytes(state)
        st = {"argument_bytes": args, "output_bytes": 0, "alias_bytes": 0}
        raw = [dict(st), dict(st) if prefill else None]
    f32 = Sampler(dataclasses.replace(sampler.cfg, dtype="float32", param_dtype="float32"), sampler.mesh,
                  sampler.rules)
    params32 = jax.tree.map(lambda a: planning.sds(a.shape, jnp.float32, a.sharding), params)
    full = _compile_continuous(f32, layout, params32, dataclasses.replace(opts, cache_dtype="float32"), prompt_len,
                               prefill)
    out = []
    for r, f in zip(raw, full):
        if r is None:
            out.append(None)
            continue
        st = {f"cpu_{k}": v for k, v in r.items()}
        st.update(r)
        st["temp_bytes"] = f["temp_bytes"]
        st["peak_bytes_per_device"] = r["argument_bytes"] + r["output_bytes"] - r["alias_bytes"] + f["temp_bytes"]
        st["bytes_accessed"] = f["bytes_accessed"] / 2
        st["flops"] = f["flops"]
        out.append(st)
    return out


def abstract_state(sampler, layout, cache_dtype):
    """Sharded ShapeDtypeStructs of the continuous-batching device state."""
    progs = continuous.Programs(sampler, layout)
    shapes = jax.eval_shape(functools.partial(progs.init_state, cache_dtype=cache_dtype))
    pool_sh = progs.pool_sharding()
    return {k: (tuple(planning.sds(x.shape, x.dtype, pool_sh) for x in v) if k in ("k", "v")
                else planning.sds(v.shape, v.dtype, progs.slot_sharding(v.ndim))) for k, v in shapes.items()}


def _compile_continuous(sampler, layout, params, opts, prompt_len: int, prefill: bool = True):
    progs = continuous.Programs(sampler, layout)
    state = abstract_state(sampler, layout, opts.cache_dtype)
    g, s, n, m = layout.G, layout.S, layout.N, layout.M
    sh = progs.slot_sharding
    rep = parallel.replicated(sampler.mesh)
    key = jax.eval_shape(lambda: jax.random.key(0))
    gather = gathers_weights(params, sampler.mesh, sampler.rules)
    dec = progs.decode.lower(
        params, state, planning.sds((g, s, m), jnp.int32, sh(3)), planning.sds((g, n), jnp.int32, sh(2)), planning.sds((g, n), jnp.int32, sh(2)),
        planning.sds((g * s,), jnp.bool_, sh(1)), planning.sds(key.shape, key.dtype, rep), planning.sds((), jnp.int32, rep),
        planning.sds((), jnp.float32, rep), planning.sds((), jnp.float32, rep), steps=opts.steps_per_call, opts=opts.static(),
        gather_per_layer=gather).compile()
    length = -(-bucket(prompt_len, sampler.min_prompt_bucket) // layout.P) * layout.P
    a = bucket(min(s, opts.prefill_rows), 1)  # the largest prefill of a round
    pre = None if not prefill else progs.prefill.lower(
        params, state, planning.sds((g * a, length), jnp.int32, sh(2)), planning.sds((g * a, length), jnp.bool_, sh(2)),
        planning.sds((g, a), jnp.int32, sh(2)), planning.sds((g, a, length // layout.P), jnp.int32, sh(3)),
        planning.sds((g, a), jnp.int32, sh(2)), planning.sds((g, a), jnp.int32, sh(2)), cache_dtype=opts.cache_dtype,
        gather_per_layer=gather).compile()
    out = []
    for compiled in (dec, pre):
        if compiled is None:
            out.append(None)
            continue
        st = planning.stats(compiled)
        st["flops"], st["bytes_accessed"] = planning.cost(compiled)
        out.append(st)
    out[0]["bytes_accessed_raw"] = out[0]["bytes_accessed"]
    out[0]["bytes_accessed"] -= pool_write_overcount(sampler, layout, opts.cache_dtype)
    return out


def pool_write_overcount(sampler, layout, cache_dtype: str) -> float:
    """Bytes that cost_analysis adds for the decode step's pool writes beyond what they
    write. XLA counts a scatter at about its whole operand (here, per layer, the pool),
    while a donated, loop-carried pool is updated in place on TPU: the scatters of one step
    (k and v, one token per slot, every layer) compiled alone on one device's shard, minus
    the bytes they really write."""
    cfg, mesh = sampler.cfg, sampler.mesh
    tensor = mesh.shape.get("tensor", 1)
    hkv = cfg.num_kv_heads // tensor if cfg.num_kv_heads % tensor == 0 else cfg.num_kv_heads
    d, s, n, p = cfg.dim_per_head, layout.S, layout.N, layout.P
    dt = jnp.dtype(cache_dtype)

    def write(kp, vp, page, off, x):
        return kp.at[page, :, :, off].set(x), vp.at[page, :, off, :].set(x)

    sd = lambda shape, t=dt: jax.ShapeDtypeStruct(shape, t)
    compiled = jax.jit(write, donate_argnums=(0, 1)).lower(
        sd((n, hkv, d, p)), sd((n, hkv, p, d)), sd((s,), jnp.int32), sd((s,), jnp.int32), sd((s, hkv, d))).compile()
    counted = planning.cost(compiled)[1]
    written = 2 * s * hkv * d * np.dtype(dt).itemsize
    return cfg.num_layers * max(counted - written, 0.0)


def step_seconds(flops: float, bytes_accessed: float, topology) -> float:
    return max(bytes_accessed / (topology.hbm_gbps * 1e9), flops / (topology.bf16_tflops * 1e12))


def plan_rollout(cfg, c, mesh, rules, state, stage, topology, *, rows_per_chip=24, kv_fraction=0.5,
                 steps_per_call=32, page_size=64, prefill_rows=2) -> dict:
    """The "rollout" entry of the memory plan (see the module docstring)."""
    r = c.rollout
    plen, cap = int(stage["max_prompt_len"]), int(stage["max_response_len"])
    sampler = Sampler(cfg, mesh, rules)
    slots = rows_per_chip * topology.devices
    row_tokens = bucket(plen, sampler.min_prompt_bucket) + cap
    kv_tokens = int(kv_fraction * slots * row_tokens)
    opts = SampleOptions(max_new_tokens=cap, temperature=max(r.temperature, 1e-3), top_p=r.top_p, top_k=r.top_k,
                         stop_token_ids=(1,), cache_dtype=r.cache_dtype, max_in_flight=slots,
                         kv_cache_tokens=kv_tokens, page_size=page_size, steps_per_call=steps_per_call,
                         prefill_rows=prefill_rows)
    lay = continuous.plan_layout(sampler, slots, kv_tokens, page_size, plen, cap)
    dec, pre = compile_continuous(sampler, lay, sampling_params(sampler, True), opts, plen)
    # The static design: one call's rows, the training weights, half the cache read per step.
    static_rows = sampler.batch_bucket(r.prompts_per_sample_call or r.batch_prompts, r.group_size) * r.group_size
    static_opts = dataclasses.replace(opts, max_in_flight=static_rows, kv_cache_tokens=static_rows * row_tokens // 2)
    static_lay = continuous.plan_layout(sampler, static_rows, static_opts.kv_cache_tokens, page_size, plen, cap)
    sdec, _ = compile_continuous(sampler, static_lay, sampling_params(sampler, False, state["params"]), static_opts,
                                 plen, prefill=False)
    step_s = step_seconds(dec["flops"], dec["bytes_accessed"], topology)
    prefill_s = step_seconds(pre["flops"], pre["bytes_accessed"], topology)
    static_step_s = step_seconds(sdec["flops"], sdec["bytes_accessed"], topology)
    rows = r.batch_prompts * r.group_size
    steps = rows * MEAN * cap / (lay.G * lay.S) + cap
    rollout_s = steps * step_s + rows / (lay.G * min(lay.S, prefill_rows)) * prefill_s
    calls = math.ceil(r.batch_prompts / (r.prompts_per_sample_call or r.batch_prompts))
    static_s = calls * cap * static_step_s
    peak = max(dec["peak_bytes_per_device"], pre["peak_bytes_per_device"])
    resident = planning.per_device_bytes(state["params"]) + planning.per_device_bytes(state["opt_state"])
    return {
        "rows_in_flight_per_chip": rows_per_chip, "slots": lay.G * lay.S, "kv_cache_tokens": kv_tokens,
        "kv_fraction": kv_fraction, "page_size": page_size, "steps_per_call": steps_per_call,
        "prefill_rows": prefill_rows,
        "decode_step_bytes": dec["bytes_accessed"], "decode_step_flops": dec["flops"],
        "decode_step_bytes_counted_by_xla": dec.get("cpu_bytes_accessed_raw", dec["bytes_accessed_raw"]),
        "cpu_decode_peak_bytes": dec.get("cpu_peak_bytes_per_device", dec["peak_bytes_per_device"]),
        "cpu_prefill_peak_bytes": pre.get("cpu_peak_bytes_per_device", pre["peak_bytes_per_device"]),
        "decode_peak_bytes": dec["peak_bytes_per_device"], "prefill_peak_bytes": pre["peak_bytes_per_device"],
        "peak_bytes_per_device": peak, "resident_other_bytes": resident, "total_bytes_per_device": peak + resident,
        "fits": peak + resident <= topology.hbm_bytes,
        "modeled_step_s": step_s, "modeled_prefill_s": prefill_s,
        "modeled_rollout_s_per_grpo_step": rollout_s,
        "static_rows_per_call": static_rows, "static_calls_per_grpo_step": calls,
        "static_decode_step_bytes": sdec["bytes_accessed"], "static_decode_step_flops": sdec["flops"],
        "static_modeled_step_s": static_step_s, "static_modeled_rollout_s_per_grpo_step": static_s,
        "speedup_vs_static": static_s / rollout_s,
    }


def format_rollout(p: dict) -> str:
    g = 1024**3
    return (f"rollout: {p['rows_in_flight_per_chip']} rows in flight per chip ({p['slots']} slots), KV pool "
            f"{p['kv_cache_tokens']} tokens; peak {p['peak_bytes_per_device'] / g:.2f} GiB + resident "
            f"{p['resident_other_bytes'] / g:.2f} = {p['total_bytes_per_device'] / g:.2f} GiB "
            f"({'fits' if p['fits'] else 'DOES NOT FIT'}); decode step {p['decode_step_bytes'] / 1e9:.2f} GB, "
            f"{p['decode_step_flops'] / 1e12:.2f} TFLOP -> {p['modeled_step_s'] * 1e3:.1f} ms; rollout per GRPO step "
            f"{p['modeled_rollout_s_per_grpo_step']:.0f} s vs static {p['static_modeled_rollout_s_per_grpo_step']:.0f} s "
            f"({p['static_calls_per_grpo_step']} calls x {p['static_rows_per_call']} rows, step "
            f"{p['static_modeled_step_s'] * 1e3:.1f} ms): {p['speedup_vs_static']:.1f}x")


# ---- sampling programs: scoring and evaluation -------------------------------------------


def plan_sampling_program(cfg, mesh, rules, topology, prompt_len: int, new_tokens: int, *, kv_fraction=1.0,
                          cache_dtype="bfloat16", page_size=64, steps_per_call=32, replicate=False,
                          layers=(2, 4)) -> dict:
    """The largest rows per call (rows on the data-parallel devices at once) that fit HBM for
    a sampling-only program (no optimizer state), as `score` and `evaluate` run it: weights
    in the compute dtype with the shardings the policy loads them in (the config's mesh:
    FSDP x tensor, gathered one layer at a time inside the decode loop), or with `replicate`
    Sampler.prepare's layout (replicated over the data axes). The program compiled is the
    continuous-batching one configured like a static call: a KV pool of `kv_fraction` x rows
    x (prompt + new tokens) (1: every row's whole cache, as the static path holds it) and
    every row prefilled at once. Its per-device peak = max(decode loop, prefill) is linear
    in layers and in rows: fitted from compiles at `layers` (the first layer alone hides the
    next layer's gather, which is why not 1 and 2) and two row counts, and solved for the
    model's layers (every fitted figure is a compiled one; only the extrapolation is
    modeled). `rows_per_device` is the largest power of two <= rows per call / data-parallel
    devices (prompts per call = rows_per_device x devices / samples stays a power of two)."""
    weight_bytes = param_count(cfg) * np.dtype(cfg.dtype).itemsize
    dp = parallel.data_parallel_size(mesh, rules)
    row_tokens = bucket(prompt_len, 16) + new_tokens
    pool_tokens = lambda slots: int(kv_fraction * slots * row_tokens) + 2 * page_size * dp
    points = {}
    lo, hi = layers
    for n_layers in layers:
        small = dataclasses.replace(cfg, num_layers=n_layers)
        sampler = Sampler(small, mesh, rules)
        abstract = qwen2.abstract_params(small)
        train_sh = parallel.param_shardings(qwen2.logical_axes(small), abstract, mesh, rules)
        train = jax.tree.map(lambda a, s: planning.sds(a.shape, a.dtype, s), abstract, train_sh)
        params = sampling_params(sampler, replicate, train)
        for slots in (2 * dp, 4 * dp):
            kv = pool_tokens(slots)
            opts = SampleOptions(max_new_tokens=new_tokens, temperature=0.6, top_p=0.95, stop_token_ids=(1,),
                                 cache_dtype=cache_dtype, max_in_flight=slots, kv_cache_tokens=kv,
                                 page_size=page_size, steps_per_call=steps_per_call, prefill_rows=slots // dp)
            lay = continuous.plan_layout(sampler, slots, kv, page_size, prompt_len, new_tokens)
            dec, pre = compile_continuous(sampler, lay, params, opts, prompt_len, cpu_raw=False)
            points[n_layers, slots] = (dec["peak_bytes_per_device"], pre["peak_bytes_per_device"])

    def predict(which, n_layers, slots):  # bilinear in (layers, slots) through the 4 compiles
        f = lambda l, s: points[l, s][which]
        per_slot = lambda l: (f(l, 4 * dp) - f(l, 2 * dp)) / (2 * dp)
        at = lambda l, s: f(l, 2 * dp) + per_slot(l) * (s - 2 * dp)
        return at(lo, slots) + (at(hi, slots) - at(lo, slots)) * (n_layers - lo) / (hi - lo)

    peak = lambda s: max(predict(0, cfg.num_layers, s), predict(1, cfg.num_layers, s))
    rows = 0
    while peak(rows + dp) <= topology.hbm_bytes and rows < 1 << 16:
        rows += dp
    per_device = 1 << (rows // dp).bit_length() - 1 if rows else 0
    tensor = mesh.shape.get("tensor", 1)
    layout = ("fsdp, gathered per layer" if gathers_weights(params, mesh, rules) else
              f"tensor-parallel x{tensor}" if tensor > 1 else "replicated") + f", rows over {dp} devices"
    f = lambda l, s, w: points[l, s][w]
    return {"rows_per_call": rows, "rows_per_device": per_device,
            "peak_bytes_per_device": int(peak(rows or dp)), "next_peak_bytes_per_device": int(peak(rows + dp)),
            "peak_bytes_per_device_at_rows_per_device": int(peak(per_device * dp)) if rows else None,
            "fits": rows > 0, "layout": layout,
            "weight_bytes": int(weight_bytes), "data_parallel": dp,
            "per_layer_bytes": {"decode": int((f(hi, 2 * dp, 0) - f(lo, 2 * dp, 0)) / (hi - lo)),
                                "prefill": int((f(hi, 2 * dp, 1) - f(lo, 2 * dp, 1)) / (hi - lo))},
            "per_row_bytes": {"decode": int((f(hi, 4 * dp, 0) - f(hi, 2 * dp, 0)) / (2 * dp)),
                              "prefill": int((f(hi, 4 * dp, 1) - f(hi, 2 * dp, 1)) / (2 * dp))},
            "kv_fraction": kv_fraction, "kv_cache_tokens": pool_tokens(rows) if rows else 0,
            "prompt_len": prompt_len, "new_tokens": new_tokens, "mesh": dict(mesh.shape)}


def sampling_plans(c, topology, kind: str) -> dict:
    """{"score": {proxy: plan}} for configs/score.py, {"eval": {model: plan}} for configs/eval.py."""
    devices = jax.devices()[: topology.devices]
    mesh = parallel.make_mesh(dict(c.get("mesh") or {"fsdp": -1}), devices)
    rules = dict(c.get("sharding_rules") or parallel.DEFAULT_RULES)
    out = {}
    if kind == "score":
        names = {"1.5b": "deepseek-r1-distill-qwen-1.5b", "7b": "deepseek-r1-distill-qwen-7b",
                 "32b": "deepseek-r1-distill-qwen-32b"}
        only = {x.strip() for x in str(c.get("only_proxies") or "").split(",") if x.strip()}
        for p in c.proxies:
            if only and p["name"] not in only:
                continue
            size = next((k for k in names if k in p["name"].lower() or k in p["model"].lower()), None)
            if size is None:
                continue
            cfg = preset(names[size], dtype=p.get("dtype", "bfloat16"), param_dtype=p.get("dtype", "bfloat16"))
            out[p["name"]] = plan_sampling_program(cfg, mesh, rules, topology, int(p["max_prompt_len"]),
                                                   int(p["max_new_tokens"]))
    else:
        cfg = preset("deepseek-r1-distill-qwen-1.5b", dtype=c.get("dtype", "bfloat16"), param_dtype="bfloat16")
        out["r1-distill-1.5b"] = plan_sampling_program(cfg, mesh, rules, topology, int(c.get("max_prompt_len", 2048)),
                                                       int(c.max_new_tokens))
    return {kind: out}


def _main(argv):
    F = flags.FLAGS
    topo = topologies.get(F.topology)
    kind = "score" if "proxies" in F.config else "eval"
    plans = sampling_plans(F.config, topo, kind)
    g = topologies.GIB
    print(f"{kind} on {topo.name} ({topo.devices} devices x {topo.hbm_gib:g} GiB): rows sampled at once that fit, "
          f"KV cache = every row's whole (prompt + new tokens), every row prefilled at once:")
    for name, p in plans[kind].items():
        at = p["peak_bytes_per_device_at_rows_per_device"]
        print(f"  {name:<16} rows per call {p['rows_per_call']:>4} (peak {p['peak_bytes_per_device'] / g:5.2f} GiB)"
              f"  rows_per_device {p['rows_per_device']:>3} (peak {(at or 0) / g:5.2f} GiB)  {p['layout']},"
              f" {p['prompt_len']}+{p['new_tokens']} tokens, mesh {p['mesh']}")
    print(json.dumps({**plans, "topology": topo.name}))


if __name__ == "__main__":
    planning.setup_fake_devices(topologies.get(planning.preparse_topology(sys.argv)).devices)
    config_flags.DEFINE_config_file("config", "configs/score.py", "configs/score.py or configs/eval.py.")
    flags.DEFINE_string("topology", "v5e-8", "A topology of dsrl_jax.tools.topologies.")
    app.run(_main)
