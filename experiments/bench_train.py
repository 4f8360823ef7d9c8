"""Update throughput (tokens/s, MFU against this machine's measured matmul peak) and the
compiled peak memory of one update versus sequence length.

    python experiments/bench_train.py [--quick] [--parts=peak,mfu,memory]

Writes experiments/results/bench_train.json and prints markdown tables.

MFU counts model FLOPs only (no rematerialisation): 6 x (non-embedding + LM-head params)
per token plus causal attention 6 x L x T x H x D per token (QK^T and PV, forward and
backward, half the square). The peak is the best of a few large jitted fp32 matmuls.
Memory is compiled `memory_analysis()` on CPU (arguments + outputs + temporaries, less
donated aliases), one update of a single sequence, remat=full, blockwise attention.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dsrl_jax import parallel  # noqa: E402
from dsrl_jax.models import qwen2  # noqa: E402
from dsrl_jax.models.config import param_count, preset  # noqa: E402
from dsrl_jax.rl import grpo, update  # noqa: E402
from dsrl_jax.rl.batch import TrainBatch  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_train.json")


def _time(fn, *args, reps=3):
    out = fn(*args)
    jax.block_until_ready(out)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n=2048, reps=5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / _time(f, a, a, reps=reps)


def model_flops_per_token(cfg, seq_len: int) -> float:
    embed = cfg.vocab_size * cfg.hidden_size
    n = param_count(cfg) - embed + (embed if cfg.tie_word_embeddings else 0)  # + head, - input embedding
    attn = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.dim_per_head  # causal: half of 12
    return 6 * n + attn


def _setup(cfg, micro, num_micro, plen, mlen):
    mesh = parallel.make_mesh({"fsdp": 1}, jax.devices()[:1])
    from configs import base

    c = base.get_config()
    tx, _ = update.make_optimizer(c.optim)
    params = qwen2.init_params(cfg, 0)
    state = update.init_state(params, tx, jax.random.key(0))
    state_sh = update.state_shardings(jax.device_put(state, parallel.replicated(mesh)), mesh)
    loss_cfg = grpo.default_loss_config()
    loss_cfg.kl_coef = 0.0
    rng = np.random.default_rng(0)
    t = plen + mlen
    batch = TrainBatch(tokens=rng.integers(1, cfg.vocab_size, (num_micro, micro, t), dtype=np.int32),
                       kv_mask=np.ones((num_micro, micro, t), bool),
                       loss_mask=np.ones((num_micro, micro, mlen), np.float32),
                       truncated=np.zeros((num_micro, micro), bool),
                       advantages=rng.normal(size=(num_micro, micro)).astype(np.float32),
                       normalizer=np.float32(num_micro * micro * mlen))
    batch_sh = update.batch_shardings(mesh, None, batch)
    fn = update.make_train_step(cfg, loss_cfg, tx, state_sh, batch_sh, plen, min(1024, mlen))
    return mesh, fn, state, batch, state_sh, batch_sh


def bench_update(name, micro, seq_len, remat="none", attention="plain", reps=2, **opts):
    cfg = preset(name, remat=remat, attention_impl=attention, **opts)
    plen = 16
    mesh, fn, state, batch, state_sh, batch_sh = _setup(cfg, micro, 1, plen, seq_len - plen)
    state = jax.device_put(state, state_sh)
    batch = jax.device_put(batch, batch_sh)
    state, _ = fn(state, batch)  # compile + warm-up (the state is donated)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        state, m = fn(state, batch)
        jax.block_until_ready(state)
        best = min(best, time.perf_counter() - t0)
    tokens = micro * seq_len
    return {"preset": name, "params": param_count(cfg), "micro_batch": micro, "seq_len": seq_len, "remat": remat,
            "attention": attention, "step_s": best, "tokens_per_s": tokens / best,
            "model_flops_per_s": model_flops_per_token(cfg, seq_len) * tokens / best}


def memory_vs_length(lengths, name="medium", **opts):
    rows = []
    for t in lengths:
        cfg = preset(name, remat="full", attention_impl="blockwise", dtype="bfloat16", **opts)
        plen = 16
        mesh, fn, state, batch, state_sh, batch_sh = _setup(cfg, 1, 1, plen, t - plen)
        sds = lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s)
        compiled = fn.lower(jax.tree.map(sds, state, state_sh), jax.tree.map(sds, batch, batch_sh)).compile()
        m = compiled.memory_analysis()
        peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        rows.append({"seq_len": t, "temp_bytes": m.temp_size_in_bytes, "argument_bytes": m.argument_size_in_bytes,
                     "peak_bytes": peak})
        print(f"  memory {name} T={t}: temp {m.temp_size_in_bytes / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB",
              flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", default="peak,mfu,memory")
    a = ap.parse_args()
    parts = a.parts.split(",")
    res = json.load(open(RESULTS)) if os.path.exists(RESULTS) else {}
    res["device"] = f"{jax.devices()[0].device_kind} x{os.cpu_count()} cores"
    if "peak" in parts:
        res["matmul_peak_flops"] = max(matmul_peak(n) for n in ((1024,) if a.quick else (1024, 2048)))
        print(f"fp32 matmul peak: {res['matmul_peak_flops'] / 1e9:.1f} GFLOP/s", flush=True)
    if "mfu" in parts:
        runs = [("small", 8, 512, "none", "plain"), ("medium", 4, 512, "none", "plain")]
        if not a.quick:
            runs += [("medium", 8, 512, "none", "plain"), ("medium", 2, 2048, "none", "blockwise"),
                     ("medium", 4, 512, "full", "plain")]
        res["update"] = []
        for name, micro, t, remat, attn in runs:
            r = bench_update(name, micro, t, remat, attn)
            r["mfu"] = r["model_flops_per_s"] / res["matmul_peak_flops"]
            res["update"].append(r)
            print(f"  {name} B={micro} T={t} remat={remat} {attn}: {r['tokens_per_s']:.0f} tok/s, "
                  f"MFU {100 * r['mfu']:.1f}%", flush=True)
    if "memory" in parts:
        lengths = (1024, 2048, 4096) if a.quick else (1024, 2048, 4096, 8192, 16384)
        res["memory_vs_length"] = memory_vs_length(lengths)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(res, f, indent=1)
    print(tables(res))


def tables(res) -> str:
    out = []
    if "update" in res:
        out += [f"fp32 matmul peak {res['matmul_peak_flops'] / 1e9:.1f} GFLOP/s ({res['device']})", "",
                "| preset | params | micro x seq | remat | attention | tokens/s | MFU |", "|---|---|---|---|---|---|---|"]
        out += [f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['micro_batch']} x {r['seq_len']} | {r['remat']} |"
                f" {r['attention']} | {r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f}% |" for r in res["update"]]
    if "memory_vs_length" in res:
        rows = res["memory_vs_length"]
        base = rows[0]
        out += ["", "| seq len | temp MiB | peak MiB | temp / seq len (KiB/token) |", "|---|---|---|---|"]
        out += [f"| {r['seq_len']} | {r['temp_bytes'] / 2**20:.0f} | {r['peak_bytes'] / 2**20:.0f} |"
                f" {r['temp_bytes'] / r['seq_len'] / 1024:.1f} |" for r in rows]
        del base
    return "\n".join(out)


if __name__ == "__main__":
    main()
