"""Rollout throughput on a long-tailed length workload: static batches vs continuous batching.

    python experiments/bench_rollout.py            # 256 rows, 64 slots, cap 1024 (minutes)
    python experiments/bench_rollout.py --quick    # 64 rows, 16 slots, cap 256

Random weights of the `small` preset (fp32, CPU) sample at temperature 1; a set of stop ids
holding about 1 / mean_len of the next-token mass makes response lengths roughly geometric
(mean ~mean_len, a long tail up to the cap). Both paths get the same weights, the same rows
and the same per-row draws, so they generate the same tokens up to rounding: their
attention sums in a different order (a paged pool vs one cache per call), and a draw that
lands within rounding of a token's boundary in the inverse CDF can pick its neighbour, after
which that row goes its own way (`same tokens` in the output says whether every row agreed;
greedy decoding agrees row for row, tests/test_continuous.py):

  static       SampleOptions(max_in_flight=None) in calls of `slots` rows; each call decodes
               until its longest row stops (the sampler's static path)
  continuous   SampleOptions(max_in_flight=slots): finished rows' slots are refilled

Useful tokens are generated, unpadded tokens (sum of lengths). Each path runs twice; the
second (compiled) run is timed. Prints a table and writes experiments/results/bench_rollout.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import jax
import numpy as np

from dsrl_jax.models import qwen2
from dsrl_jax.models.config import preset
from dsrl_jax.sampling import SampleOptions, Sampler

RESULTS = os.path.join(os.path.dirname(__file__), "results", "bench_rollout.json")


def run(sampler, params, prompts, opts, slots, continuous):
    t = time.perf_counter()
    if continuous:
        out = sampler.sample(params, prompts, jax.random.key(1), dataclasses.replace(opts, max_in_flight=slots))
        parts = [out]
    else:
        parts = [sampler.sample(params, prompts[i:i + slots], jax.random.key(1), opts, first_row=i)
                 for i in range(0, len(prompts), slots)]
    return time.perf_counter() - t, parts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--cap", type=int, default=1024)
    ap.add_argument("--mean_len", type=int, default=128)
    ap.add_argument("--prompt_len", type=int, default=64)
    ap.add_argument("--kv_cache_tokens", type=int, default=0, help="0: slots x (prompt + 2.5 x mean_len)")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.slots, args.cap, args.mean_len = 64, 16, 256, 48
    cfg = preset("small", dtype="float32", scan_layers=True)
    params = qwen2.init_params(cfg, 0)
    rs = np.random.RandomState(0)
    prompts = [rs.randint(1, cfg.vocab_size, rs.randint(args.prompt_len // 2, args.prompt_len + 1)).tolist()
               for _ in range(args.rows)]
    # Random weights give a near-uniform next-token distribution: k stop ids hold ~k / V of it.
    stops = tuple(int(x) for x in rs.choice(np.arange(1, cfg.vocab_size), cfg.vocab_size // args.mean_len, replace=False))
    kv = args.kv_cache_tokens or int(args.slots * (args.prompt_len + 2.5 * args.mean_len))
    opts = SampleOptions(max_new_tokens=args.cap, temperature=1.0, stop_token_ids=stops, cache_dtype="float32",
                         kv_cache_tokens=kv)
    sampler = Sampler(cfg)
    results = {}
    for name, cont in (("static", False), ("continuous", True)):
        first, _ = run(sampler, params, prompts, opts, args.slots, cont)  # compiles
        wall, parts = run(sampler, params, prompts, opts, args.slots, cont)
        lengths = np.concatenate([p.lengths for p in parts])
        tokens = np.concatenate([p.tokens[:, : args.cap] for p in parts])
        results[name] = dict(wall_s=round(wall, 2), first_run_s=round(first, 2), useful_tokens=int(lengths.sum()),
                             useful_tok_s=round(float(lengths.sum()) / wall, 1), lengths=lengths, tokens=tokens)
        print(f"{name}: {wall:.1f} s, {lengths.sum()} useful tokens, {lengths.sum() / wall:.1f} tok/s "
              f"(first run with compiles {first:.1f} s)", flush=True)
    s, c = results["static"], results["continuous"]
    same = bool((s["lengths"] == c["lengths"]).all() and (s["tokens"] == c["tokens"]).all())
    lengths = s["lengths"]
    speedup = c["useful_tok_s"] / s["useful_tok_s"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    print(f"\nmachine: {machine}, load average {load}")
    print(f"workload: {args.rows} rows, prompts {args.prompt_len // 2}-{args.prompt_len} tokens, cap {args.cap}, "
          f"{len(stops)} stop ids; lengths mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
          f"max {lengths.max()}, {np.mean(lengths >= args.cap):.1%} at the cap; KV pool {kv} tokens\n")
    print("| path | rows in flight | wall s | useful tokens | useful tok/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {args.slots} | {r['wall_s']} | {r['useful_tokens']} | {r['useful_tok_s']} | "
              f"{r['useful_tok_s'] / s['useful_tok_s']:.2f}x |")
    print(f"\nsame tokens on both paths: {same}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    summary = {k: {kk: vv for kk, vv in v.items() if kk not in ("lengths", "tokens")} for k, v in results.items()}
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "load_average": load, "args": vars(args), "kv_cache_tokens": kv,
                   "stop_ids": len(stops), "mean_length": float(lengths.mean()), "max_length": int(lengths.max()),
                   "same_tokens": same, "speedup": round(speedup, 2), **summary}, f, indent=2)
    print(json.dumps({"static_useful_tok_s": s["useful_tok_s"], "continuous_useful_tok_s": c["useful_tok_s"],
                      "speedup": round(speedup, 2), "same_tokens": same}))


if __name__ == "__main__":
    main()
