"""Memory plan of a training config on a TPU topology, without the TPU.

    python -m dsrl_jax.tools.memory --config=configs/stage2.py --topology=v5e-8

Builds fake CPU devices shaped like the topology (set before JAX starts its backends),
the config's mesh over them, abstract sharded parameters and optimizer state,
and lowers + compiles, with `jax.jit(...).lower(ShapeDtypeStructs).compile()`:

  train_step    the real update (rl/update.train_step) of the largest curriculum stage:
                rl.batch.abstract_batch [num_micro, micro_batch, prompt + response], the
                sizes of rl.batch.batch_plan, the stage's loss
  sampler       the real generate program (Sampler.generate_program) for one sampler call:
                rollout.prompts_per_sample_call prompts (padded as the Sampler pads them)
                x group_size samples, cache length prompt bucket + response bucket
  ref_logprobs  the no-gradient log-prob program, for `--logprob_rows` sequences
  rollout       the continuous-batching sampler (tools/throughput.py): rows in flight per
                chip, its peak, one decode step's bytes and FLOPs, modeled rollout seconds
                per GRPO step against the static design

The compiled programs' memory_analysis() and cost_analysis() give per-device bytes and
FLOPs. Besides its own arguments, each program shares HBM with buffers that stay resident
(optimizer state during sampling, the frozen reference parameters when kl_coef > 0), so
"resident" adds those and "fits" compares the sum with the topology's HBM per device.
The last printed line is a JSON object with the figures.

Config fields read: model.{init,dtype,param_dtype,scan_layers,remat,attention_impl},
mesh, sharding_rules, rollout.{batch_prompts,group_size,prompts_per_sample_call,
cache_dtype,top_k,top_p}, train.{mini_batch_size,micro_batch_size,epochs_per_batch,
logprob_chunk}, loss, optim, curriculum.stages[*].{max_prompt_len,max_response_len,loss}.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

from dsrl_jax import parallel, settings
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import Qwen2Config, preset
from dsrl_jax.rl import batch as batch_lib
from dsrl_jax.rl import update
from dsrl_jax.sampling import SampleOptions, Sampler, bucket
from dsrl_jax.tools import planning, throughput, topologies


# ---- library ----------------------------------------------------------------------------


def model_config(c, preset_name: str | None = None, num_layers: int | None = None):
    """The Qwen2Config the trainer would build, without reading weights: the `preset:`
    named in model.init, a local HF dir's config.json, or `preset_name` (default: the
    DeepSeek-R1-Distill-Qwen-1.5B architecture, which every paper config starts from)."""
    m = c.model
    options = dict(dtype=m.dtype, param_dtype=m.param_dtype, scan_layers=m.scan_layers, remat=m.remat,
                   attention_impl=m.attention_impl)
    if num_layers:
        options["num_layers"] = num_layers
    if m.init.startswith("preset:"):
        return preset(m.init.split(":", 1)[1], **options)
    path = os.path.join(m.init, "config.json")
    if not preset_name and os.path.exists(path):
        return Qwen2Config.from_file(path, **options)
    return preset(preset_name or "deepseek-r1-distill-qwen-1.5b", **options)


def abstract_state(cfg, c, mesh, rules):
    """Sharded ShapeDtypeStructs of the train state {params, opt_state, step, rng}."""
    abstract = qwen2.abstract_params(cfg)
    shardings = parallel.param_shardings(qwen2.logical_axes(cfg), abstract, mesh, rules)
    params = jax.tree.map(lambda a, s: planning.sds(a.shape, a.dtype, s), abstract, shardings)
    tx, _ = update.make_optimizer(c.optim)
    # Adam moments take their parameter's sharding (as `jax.jit(tx.init)` on sharded
    # arrays gives at run time); counters and the like are replicated.
    rep = parallel.replicated(mesh)
    opt_shapes = jax.eval_shape(tx.init, params)
    opt_state = optax.tree_map_params(
        tx, lambda a, s: planning.sds(a.shape, a.dtype, s), opt_shapes, shardings,
        transform_non_params=lambda a: planning.sds(a.shape, a.dtype, rep))
    key = jax.eval_shape(lambda: jax.random.key(0))
    state = {"params": params, "opt_state": opt_state, "step": planning.sds((), jnp.int32, rep),
             "rng": planning.sds(key.shape, key.dtype, rep)}
    return state, tx


def _batch_plan(c, mesh, rules) -> batch_lib.BatchPlan:
    """The trainer's mini/micro-batch sizes for one rollout batch of the config."""
    return batch_lib.batch_plan(c.rollout.batch_prompts * c.rollout.group_size, c.train,
                                parallel.data_parallel_size(mesh, rules))


def stage_loss(c, stage: dict) -> settings.Loss:
    """The loss options the trainer uses for `stage` (a stage dict of config `c`): settings.stage_loss."""
    return settings.stage_loss(settings.from_config(c), settings.parse_stages([stage])[0])


def stage_lengths(stage, exact: bool = False) -> tuple[int, int]:
    """(prompt, response) lengths of the update's arrays: rl.batch.train_batch pads both to
    buckets capped at the stage's limits (`exact`: the raw limits instead)."""
    p, m = int(stage["max_prompt_len"]), int(stage["max_response_len"])
    return (p, m) if exact else (bucket(p, cap=p), bucket(m, cap=m))


def plan_train_step(cfg, c, mesh, rules, state, tx, stage, *, micro_batch=None, seq_len=None, num_micro=None,
                    exact_lengths=False):
    """Lowers and compiles update.train_step for one stage; returns (stats, info)."""
    loss_cfg = stage_loss(c, stage)
    plen, mlen = stage_lengths(stage, exact_lengths)
    if seq_len:
        mlen = seq_len - plen
    plan = _batch_plan(c, mesh, rules)
    micro = min(micro_batch, plan.mini) if micro_batch else plan.micro
    nm = num_micro or plan.mini // micro
    abstract = batch_lib.abstract_batch(nm, micro, plen, mlen, old_logprobs=plan.multi_update,
                                        ref_logprobs=bool(loss_cfg.kl_coef))
    batch_axes = parallel.batch_sharding(mesh, 1, rules).spec[0]
    batch_sh = update.batch_shardings(mesh, batch_axes, abstract)
    batch = jax.tree.map(lambda a, s: planning.sds(a.shape, a.dtype, s), abstract, batch_sh)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    fn = update.make_train_step(cfg, loss_cfg, tx, state_sh, batch_sh, plen, c.train.logprob_chunk)
    t0 = time.perf_counter()
    compiled = fn.lower(state, batch).compile()
    info = {"micro_batch": micro, "num_micro": nm, "prompt_len": plen, "response_len": mlen,
            "tokens_per_micro_batch": micro * (plen + mlen), "compile_s": round(time.perf_counter() - t0, 1)}
    return planning.stats(compiled), info


def plan_sampler(cfg, c, mesh, rules, params, stage, *, prompts_per_call=None):
    """Lowers and compiles the Sampler's generate program for one call; (stats, info)."""
    r = c.rollout
    sampler = Sampler(cfg, mesh, rules)
    prompts = prompts_per_call or r.prompts_per_sample_call or r.batch_prompts
    rows = sampler.batch_bucket(prompts, r.group_size)  # as Sampler.pad_prompts pads
    plen = bucket(int(stage["max_prompt_len"]), sampler.min_prompt_bucket)
    opts = SampleOptions(max_new_tokens=int(stage["max_response_len"]), temperature=max(r.temperature, 1e-3),
                         top_p=r.top_p, top_k=r.top_k, n=r.group_size, stop_token_ids=(1,),
                         cache_dtype=r.cache_dtype)
    sh = sampler.input_sharding(rows)
    rep = parallel.replicated(mesh)
    key = jax.eval_shape(lambda: jax.random.key(0))
    args = (params, planning.sds((rows, plen), jnp.int32, sh), planning.sds((rows, plen), jnp.bool_, sh),
            planning.sds(key.shape, key.dtype, rep), planning.sds((), jnp.int32, rep), planning.sds((), jnp.float32, rep),
            planning.sds((), jnp.float32, rep), planning.sds((), jnp.int32, rep))
    t0 = time.perf_counter()
    new = sampler.new_tokens_bucket(opts.max_new_tokens)
    compiled = sampler.generate_program.lower(*args, max_new_bucket=new, opts=opts.static()).compile()
    info = {"prompts_per_call": prompts, "padded_prompts": rows, "sequences": rows * r.group_size,
            "cache_len": plen + new, "compile_s": round(time.perf_counter() - t0, 1)}
    return planning.stats(compiled), info


def plan_logprobs(cfg, c, mesh, rules, params, stage, rows: int, exact_lengths=False):
    plen, mlen = stage_lengths(stage, exact_lengths)
    sh = parallel.batch_sharding(mesh, 2, rules)
    fn = update.make_logprob_fn(cfg, plen, c.train.logprob_chunk, batch_sharding=sh)
    t0 = time.perf_counter()
    compiled = fn.lower(params, planning.sds((rows, plen + mlen), jnp.int32, sh),
                        planning.sds((rows, plen + mlen), jnp.bool_, sh)).compile()
    return planning.stats(compiled), {"rows": rows, "compile_s": round(time.perf_counter() - t0, 1)}


def largest_stage(c) -> tuple[int, dict]:
    stages = [dict(s) for s in c.curriculum.stages]
    i = max(range(len(stages)), key=lambda j: (stages[j]["max_prompt_len"] + stages[j]["max_response_len"]))
    return i, stages[i]


def run_plan(c, topology: "topologies.Topology", *, micro_batch=None, seq_len=None, num_micro=None,
             prompts_per_call=None, num_layers=None, preset_name=None, logprob_rows=None, exact_lengths=False,
             programs=("train_step", "sampler", "ref_logprobs", "rollout"), rollout_options=None) -> dict:
    rules = c.sharding_rules.to_dict()
    devices = jax.devices()[: topology.devices]
    mesh = parallel.make_mesh(c.mesh.to_dict(), devices)
    cfg = model_config(c, preset_name, num_layers)
    return _run_plan(c, topology, mesh, rules, cfg, micro_batch, seq_len, num_micro, prompts_per_call,
                     logprob_rows, exact_lengths, programs, rollout_options or {})


def _run_plan(c, topology, mesh, rules, cfg, micro_batch, seq_len, num_micro, prompts_per_call, logprob_rows,
              exact_lengths, programs, rollout_options):
    state, tx = abstract_state(cfg, c, mesh, rules)
    si, stage = largest_stage(c)
    loss_cfg = stage_loss(c, stage)
    param_b = planning.per_device_bytes(state["params"])
    opt_b = planning.per_device_bytes(state["opt_state"])
    ref_b = param_b if any(stage_loss(c, dict(s)).kl_coef for s in c.curriculum.stages) else 0
    out = {"topology": topology.name, "devices": topology.devices, "hbm_bytes_per_device": topology.hbm_bytes,
           "mesh": dict(mesh.shape), "stage": stage.get("name", si), "model_params": int(sum(
               x.size for x in jax.tree.leaves(state["params"]))),
           "remat": cfg.remat, "attention_impl": cfg.attention_impl,
           "resident": {"params": param_b, "opt_state": opt_b, "ref_params": ref_b}}
    if "train_step" in programs:
        s, info = plan_train_step(cfg, c, mesh, rules, state, tx, stage, micro_batch=micro_batch, seq_len=seq_len,
                                  num_micro=num_micro, exact_lengths=exact_lengths)
        s["resident_other_bytes"] = ref_b  # the reference params live beside the update
        out["train_step"] = {**s, **info}
    if "sampler" in programs:
        s, info = plan_sampler(cfg, c, mesh, rules, state["params"], stage, prompts_per_call=prompts_per_call)
        s["resident_other_bytes"] = opt_b + ref_b  # Adam moments (+ reference) stay in HBM
        out["sampler"] = {**s, **info}
    if "ref_logprobs" in programs and (loss_cfg.kl_coef or _batch_plan(c, mesh, rules).multi_update):
        rows = logprob_rows or _batch_plan(c, mesh, rules).micro  # the trainer's rows per log-prob call
        s, info = plan_logprobs(cfg, c, mesh, rules, state["params"], stage, rows, exact_lengths)
        s["resident_other_bytes"] = opt_b + param_b  # the policy's state beside the reference
        out["ref_logprobs"] = {**s, **info}
    if "rollout" in programs:
        rollout = throughput.plan_rollout(cfg, c, mesh, rules, state, stage, topology, **rollout_options)
        rollout["resident_other_bytes"] += ref_b
        rollout["total_bytes_per_device"] = rollout["peak_bytes_per_device"] + rollout["resident_other_bytes"]
        rollout["fits"] = rollout["total_bytes_per_device"] <= topology.hbm_bytes
        out["rollout"] = rollout
    for name in ("train_step", "sampler", "ref_logprobs"):
        if name in out:
            p = out[name]
            p["total_bytes_per_device"] = p["peak_bytes_per_device"] + p["resident_other_bytes"]
            p["fits"] = p["total_bytes_per_device"] <= topology.hbm_bytes
    return out


def format_table(plan: dict) -> str:
    g = lambda b: f"{b / topologies.GIB:7.2f}"
    lines = [
        f"topology {plan['topology']}: {plan['devices']} devices x {plan['hbm_bytes_per_device'] / topologies.GIB:g} GiB,"
        f" mesh {plan['mesh']}, stage {plan['stage']}, {plan['model_params'] / 1e9:.3f}B params,"
        f" remat={plan['remat']}, attention={plan['attention_impl']}",
        f"resident per device (GiB): params {g(plan['resident']['params'])}, opt_state"
        f" {g(plan['resident']['opt_state'])}, ref_params {g(plan['resident']['ref_params'])}",
        f"{'program':<13} {'shape':<34} {'arg GiB':>8} {'out GiB':>8} {'temp GiB':>8} {'peak GiB':>8}"
        f" {'+resid':>8} {'HBM GiB':>8} {'fits':>5} {'TFLOP':>9} {'compile':>8}",
    ]
    for name in ("train_step", "sampler", "ref_logprobs"):
        if name not in plan:
            continue
        p = plan[name]
        if name == "train_step":
            shape = f"{p['num_micro']}x{p['micro_batch']}x({p['prompt_len']}+{p['response_len']})"
        elif name == "sampler":
            shape = f"{p['padded_prompts']}p x{p['sequences'] // p['padded_prompts']} cache {p['cache_len']}"
        else:
            shape = f"{p['rows']} rows"
        lines.append(
            f"{name:<13} {shape:<34} {g(p['argument_bytes'])} {g(p['output_bytes'])} {g(p['temp_bytes'])}"
            f" {g(p['peak_bytes_per_device'])} {g(p['total_bytes_per_device'])}"
            f" {g(plan['hbm_bytes_per_device'])} {'yes' if p['fits'] else 'NO':>5} {p['flops'] / 1e12:9.1f}"
            f" {p['compile_s']:7.1f}s")
    if "rollout" in plan:
        lines.append(throughput.format_rollout(plan["rollout"]))
    return "\n".join(lines)


def summary_json(plan: dict) -> dict:
    keys = ("peak_bytes_per_device", "argument_bytes", "output_bytes", "temp_bytes", "flops",
            "total_bytes_per_device", "fits")
    out = {name: {k: plan[name][k] for k in keys} for name in ("train_step", "sampler", "ref_logprobs")
           if name in plan}
    if "rollout" in plan:
        out["rollout"] = plan["rollout"]
    out["topology"] = plan["topology"]
    out["hbm_bytes_per_device"] = plan["hbm_bytes_per_device"]
    return out


# ---- command line -----------------------------------------------------------------------


def _define_flags():
    config_flags.DEFINE_config_file("config", "configs/stage2.py", "Training config file.")
    flags.DEFINE_string("topology", "v5e-8", f"One of: {', '.join(topologies.TOPOLOGIES)}.")
    flags.DEFINE_integer("micro_batch", None, "Override train.micro_batch_size.")
    flags.DEFINE_integer("num_micro", None, "Micro-batches in the compiled step (memory does not depend on it"
                         " beyond the batch arguments; default: the config's mini-batch / micro-batch).")
    flags.DEFINE_integer("seq_len", None, "Override the update's total sequence length (prompt + response).")
    flags.DEFINE_integer("prompts_per_call", None, "Override rollout.prompts_per_sample_call.")
    flags.DEFINE_integer("logprob_rows", None, "Rows of the reference log-prob program (default micro_batch).")
    flags.DEFINE_integer("num_layers", None, "Fewer layers (quick checks only).")
    flags.DEFINE_string("preset", None, "Model preset instead of the config's model.init.")
    flags.DEFINE_bool("exact_lengths", False, "Unbucketed prompt/response lengths in the update.")
    flags.DEFINE_list("programs", ["train_step", "sampler", "ref_logprobs", "rollout"], "Programs to compile.")
    flags.DEFINE_integer("rows_in_flight_per_chip", 24, "Continuous-batching slots per chip (rollout plan).")
    flags.DEFINE_float("kv_fraction", 0.5, "KV pool size as a fraction of slots x (prompt + response) tokens.")
    flags.DEFINE_integer("prefill_rows", 2, "Rows admitted per data-parallel shard per round (rollout plan).")


def main(argv):
    del argv
    F = flags.FLAGS
    topo = topologies.get(F.topology)
    plan = run_plan(F.config, topo, micro_batch=F.micro_batch, seq_len=F.seq_len, num_micro=F.num_micro,
                    prompts_per_call=F.prompts_per_call, num_layers=F.num_layers, preset_name=F.preset,
                    logprob_rows=F.logprob_rows, exact_lengths=F.exact_lengths, programs=tuple(F.programs),
                    rollout_options=dict(rows_per_chip=F.rows_in_flight_per_chip, kv_fraction=F.kv_fraction,
                                         prefill_rows=F.prefill_rows))
    print(format_table(plan))
    print(json.dumps(summary_json(plan)))


if __name__ == "__main__":
    _topo = topologies.get(planning.preparse_topology(sys.argv))
    planning.setup_fake_devices(_topo.devices)
    _define_flags()
    app.run(main)
