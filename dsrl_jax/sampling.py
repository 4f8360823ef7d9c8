"""Jitted KV-cache sampler: one prefill per prompt, a `lax.while_loop` decode.

    out = Sampler(cfg, mesh).sample(params, prompts, rng, SampleOptions(max_new_tokens=256, n=16))

Prompts of different lengths are left-padded into a bucketed [batch, prompt_len] block, so
a long run compiles a handful of programs (one per bucket), not one per batch. The decode
loop runs in a few segments, each growing the KV cache by a chunk (attention reads only the
slots written so far), and stops as soon as every sequence has emitted a stop token. Each
prompt is prefilled once and its cache is repeated for its n samples (when the prompts divide by the
data-parallel size; else the prompts are repeated and each row prefilled, so a call only
needs prompts x n rows to divide by it). Lengths past 4096 bucket to multiples of 1024.

With `SampleOptions.max_in_flight` set, the call runs continuous batching instead
(dsrl_jax.continuous): that many slots decode over a paged KV pool, a finished row's slot is
refilled with the next waiting row, and `sample(..., on_finished=fn)` hands finished rows to
`fn(rows, output)` while the others decode. Both paths return rows in input order, draw row
r's token t from fold_in(fold_in(rng, r), t) (so samples do not depend on batching), and
give the same greedy tokens.

Returned log-probs are log_softmax(logits / temperature) at the sampled token (temperature 1
when greedy): the distribution the row was drawn from before top-k / top-p truncation. They
are for inspection (evaluation and generate files); the GRPO update does not use them: it
recomputes old / reference log-probs with the update's own program (rl/update.py), whose
layout and dtype differ from decoding's (bf16 sampling layout, blockwise attention, a KV
cache), so the two agree only to rounding.

`Sampler.prepare(params)` converts (training) parameters once per RL step, on device, into
the layout decoding reads fastest: the compute dtype, replicated over the data axes and
tensor-parallel over the `tensor` axis, so no step gathers FSDP shards.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dsrl_jax import continuous, parallel
# The call's options and output and the bucket helpers live in dsrl_jax.decoding, shared with
# continuous.py; users import them from here, the sampler's public names.
from dsrl_jax.decoding import (FINISH_LENGTH, FINISH_REASONS, FINISH_STOP, SampleOptions,  # noqa: F401
                               SampleOutput, bucket, gathers_weights, loop_params)
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import Qwen2Config
from dsrl_jax.token_choice import (BLOCK, argmax, choose, nucleus_threshold, row_uniforms,  # noqa: F401
                                   sample_weights, sampled_logprob, token_logprob)


class Sampler:
    """Holds the jitted programs for one model config and mesh."""

    def __init__(self, cfg: Qwen2Config, mesh: jax.sharding.Mesh | None = None, rules=None,
                 min_prompt_bucket: int = 16, min_batch_bucket: int = 1):
        self.cfg = cfg
        self.mesh = mesh or parallel.make_mesh({"fsdp": 1}, jax.devices()[:1])
        self.rules = rules
        self.dp = parallel.data_parallel_size(self.mesh, rules)
        self.min_prompt_bucket = min_prompt_bucket
        self.min_batch_bucket = min_batch_bucket
        self.batch_axes = parallel.batch_sharding(self.mesh, 1, rules).spec[0]
        # Activations' batch dimension pinned to the data axes in every program (parallel.pinned).
        self.generate_program = jax.jit(parallel.pinned(self._generate_impl, self.mesh, self.batch_axes),
                                        static_argnames=("max_new_bucket", "opts", "gather_per_layer"))
        self._continuous = {}  # continuous.Layout shape -> continuous.Programs
        self._prepare = {}

    # -- host side -------------------------------------------------------------------------
    def batch_bucket(self, num_prompts: int, n: int = 1) -> int:
        """Padded prompts of a call: only the num_prompts * n rows must divide by the
        data-parallel size (a call of 1 prompt x 16 samples runs on 8 devices)."""
        return bucket(num_prompts, max(self.min_batch_bucket, self.dp // math.gcd(self.dp, n)))

    def new_tokens_bucket(self, max_new_tokens: int) -> int:
        return bucket(max_new_tokens)

    def input_sharding(self, batch: int):
        """Prompt arrays: batch-sharded when the prompts divide by the data-parallel size,
        else replicated (the program repeats them per sample before the prefill)."""
        if batch % self.dp:
            return parallel.replicated(self.mesh)
        return parallel.batch_sharding(self.mesh, 2, self.rules)

    def pad_prompts(self, prompts: Sequence[Sequence[int]], n: int = 1):
        """Left-padded tokens and mask [batch_bucket, prompt_bucket] (numpy)."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        plen = bucket(max(len(p) for p in prompts), self.min_prompt_bucket)
        blen = self.batch_bucket(len(prompts), n)
        tokens = np.zeros((blen, plen), np.int32)
        mask = np.zeros((blen, plen), bool)
        for i, p in enumerate(prompts):
            tokens[i, plen - len(p):] = p
            mask[i, plen - len(p):] = True
        mask[len(prompts):, -1] = True  # padding rows: one dummy token
        return tokens, mask

    def sample(self, params, prompts: Sequence[Sequence[int]], rng: jax.Array,
               opts: SampleOptions, on_finished=None, first_row: int = 0) -> SampleOutput:
        """Samples opts.n completions per prompt; rows in input order (prompt_index * n + j).
        `on_finished(rows, output)` receives rows as they finish (the static path: all at
        the end) and may return more prompts to queue. Row r draws its tokens from
        fold_in(fold_in(rng, first_row + r), t): one queue split over several calls with
        consecutive first_row values samples as one call would."""
        if opts.max_in_flight is not None:
            return self._sample_continuous(params, prompts, rng, opts, on_finished, first_row)
        out = self._sample_static(params, prompts, rng, opts, row0=first_row)
        while on_finished is not None:
            done = len(out.lengths)
            prompts = on_finished(list(range(done - len(prompts) * opts.n, done)), _rows(out, done - len(prompts) * opts.n))
            if not prompts:
                break
            extra = self._sample_static(params, prompts, rng, opts, row0=first_row + done)
            out = SampleOutput(*(np.concatenate([a, b]) for a, b in zip(
                (out.tokens, out.logprobs, out.lengths, out.finish_reason),
                (extra.tokens, extra.logprobs, extra.lengths, extra.finish_reason))))
        return out

    def _sample_continuous(self, params, prompts, rng, opts, on_finished, first_row=0):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        lay = continuous.plan_layout(self, opts.max_in_flight, opts.kv_cache_tokens, opts.page_size,
                                     max(map(len, prompts)), opts.max_new_tokens)
        key = (lay.G, lay.S, lay.N, lay.P, lay.M)
        if key not in self._continuous:
            self._continuous[key] = continuous.Programs(self, lay)
        return continuous.Run(self._continuous[key], params, prompts, rng, opts, on_finished, first_row).run()

    def prepare(self, params, replicate: bool = True):
        """Parameters in the sampling layout, converted on device (call once per RL step):
        the model's compute dtype, the layers unstacked into one dict per layer (a program
        that slices a stacked tree holds a second copy of every layer), and with `replicate`
        every FSDP/data-sharded dimension replicated (tensor-parallel dimensions stay split
        over `tensor`), so decoding never gathers weights. replicate=False keeps the given
        sharding (a model too large to hold once per data-parallel group)."""
        if replicate not in self._prepare:
            dtype = jnp.dtype(self.cfg.dtype)
            cast = lambda p: qwen2.unstack_layers(jax.tree.map(
                lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, p))
            self._prepare[replicate] = jax.jit(cast, out_shardings=self.sampling_shardings() if replicate else None)
        return self._prepare[replicate](params)

    def sampling_shardings(self):
        """NamedShardings of `prepare(params)` (layers unstacked): the rules with the data
        axes removed from every parameter dimension (the batch still splits over them)."""
        rules = dict(parallel.DEFAULT_RULES if self.rules is None else self.rules)
        batch = rules.get("batch")
        data_axes = set((batch,) if isinstance(batch, str) else tuple(batch or ()))
        keep = lambda t: tuple(a for a in ((t,) if isinstance(t, str) else tuple(t or ())) if a not in data_axes)
        rules = {k: (v if k == "batch" else (keep(v) or None)) for k, v in rules.items()}
        stacked = parallel.param_shardings(qwen2.logical_axes(self.cfg), qwen2.abstract_params(self.cfg), self.mesh,
                                           rules)
        layer = jax.tree.map(lambda s: NamedSharding(self.mesh, P(*s.spec[1:])), stacked["layers"])
        return {**stacked, "layers": tuple(layer for _ in range(self.cfg.num_layers))}

    def _sample_static(self, params, prompts, rng, opts, row0: int = 0) -> SampleOutput:
        tokens, mask = self.pad_prompts(prompts, opts.n)
        sharding = self.input_sharding(tokens.shape[0])
        out = self.generate_program(
            params, parallel.to_global(tokens, sharding), parallel.to_global(mask, sharding), rng,
            jnp.int32(opts.max_new_tokens), jnp.float32(opts.temperature), jnp.float32(opts.top_p),
            jnp.int32(row0), max_new_bucket=self.new_tokens_bucket(opts.max_new_tokens), opts=opts.static(),
            gather_per_layer=gathers_weights(params, self.mesh, self.rules),
        )
        rows = len(prompts) * opts.n
        toks, lps, lens, fin = (parallel.to_host(x)[:rows] for x in out)
        return SampleOutput(toks[:, : opts.max_new_tokens], lps[:, : opts.max_new_tokens], lens, fin)

    def compiled_programs(self) -> int:
        """How many programs the sampler has compiled (one per bucket and static option set)."""
        return self.generate_program._cache_size() + sum(
            p.prefill._cache_size() + p.decode._cache_size() for p in self._continuous.values())

    # -- device side -----------------------------------------------------------------------
    def _cache_sharding(self):
        """Per-layer cache arrays [B, Hkv, ...]: batch over the data axes, heads over tensor."""
        spec = [None] * 4
        spec[0] = parallel.batch_sharding(self.mesh, 1, self.rules).spec[0]
        tensor = self.mesh.shape.get("tensor", 1)
        if tensor > 1 and self.cfg.num_kv_heads % tensor == 0:
            spec[1] = "tensor"
        return NamedSharding(self.mesh, P(*spec))

    def _generate_impl(self, params, tokens, mask, rng, max_new, temperature, top_p, row0, *, max_new_bucket, opts,
                       gather_per_layer=False):
        cfg = self.cfg
        n, greedy, top_k, use_top_p, stops, cache_dtype, pad_id = opts
        b, plen = tokens.shape
        constrain = lambda c: jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, self._cache_sharding()), c)

        rows = b * n
        # Row i*n + j is sample j of prompt i. Prompts that divide by the data-parallel size
        # are prefilled once and their caches repeated per sample; otherwise (e.g. 1 prompt
        # x 16 samples on 8 devices) the prompts are repeated first and the rows prefilled.
        shared = b % self.dp == 0
        if n > 1 and not shared:
            tokens, mask = jnp.repeat(tokens, n, axis=0), jnp.repeat(mask, n, axis=0)
            b = rows
        cache = constrain(qwen2.init_cache(cfg, b, plen, cache_dtype))  # the prompt's chunk
        positions = qwen2.positions_from_mask(mask)
        # Only the last position's logits: no [B, P, V] block.
        hidden, cache = qwen2.forward(cfg, params, tokens, positions, mask, cache, 0, return_hidden=True)
        head = qwen2.head_weight(cfg, params)
        last = (hidden[:, -1] @ head.astype(hidden.dtype)).astype(jnp.float32)
        next_pos = positions[:, -1] + 1
        kv_mask = jnp.concatenate([mask, jnp.ones((b, max_new_bucket), bool)], axis=1)

        if n > 1 and shared:
            rep = lambda x: jnp.repeat(x, n, axis=0)
            cache = constrain(jax.tree.map(rep, cache))
            last, kv_mask, next_pos = rep(last), rep(kv_mask), rep(next_pos)
        stop_ids = jnp.asarray(stops if stops else (-1,), jnp.int32)
        params = loop_params(cfg, params, self.mesh)
        pick = functools.partial(choose, greedy=greedy, top_k=top_k, use_top_p=use_top_p)
        row_ids = row0 + jnp.arange(rows, dtype=jnp.int32)  # output row numbers (per-row draws)

        def step(state, cache, i):
            """Choose token i of every row from `last`, then run it through the model."""
            out_tok, out_lp, done, lengths, last = state
            # Tied to the step counter, the weights look loop-variant to XLA, so it cannot
            # hoist their all-gathers (under FSDP: the whole model) out of the decode loops.
            weights, i = jax.lax.optimization_barrier((params, i))
            tok = pick(last, row_uniforms(rng, row_ids, jnp.full((rows,), i)), temperature, top_p)
            lp = sampled_logprob(last, tok, temperature, greedy=greedy)
            tok = jnp.where(done, pad_id, tok)
            out_tok = out_tok.at[:, i].set(tok)
            out_lp = out_lp.at[:, i].set(jnp.where(done, 0.0, lp))
            lengths = lengths + (~done).astype(jnp.int32)
            done = done | jnp.isin(tok, stop_ids)
            span = qwen2.cache_length(cache)
            logits, cache = qwen2.forward(
                cfg, weights, tok[:, None], (next_pos + i)[:, None], kv_mask[:, :span], cache, plen + i,
                gather_per_layer=gather_per_layer)
            return (out_tok, out_lp, done, lengths, logits[:, -1].astype(jnp.float32)), cache

        # The decode loop runs in segments; each adds a chunk to the cache for its tokens, so
        # attention reads only the slots written so far (about half of the cache on average)
        # instead of every slot of the bucket. Each segment is one while_loop that leaves as
        # soon as every row has stopped.
        state = (
            jnp.full((rows, max_new_bucket), pad_id, jnp.int32),
            jnp.zeros((rows, max_new_bucket), jnp.float32),
            jnp.zeros((rows,), bool),
            jnp.zeros((rows,), jnp.int32),
            last,
        )
        i = jnp.int32(0)
        for start, size in segments(max_new_bucket):
            written, chunk = _split_last(constrain(qwen2.add_cache_chunk(cache, size)))
            end = jnp.minimum(max_new, start + size)

            def cond(carry, end=end):
                i, state, _ = carry
                return (i < end) & ~jnp.all(state[2])  # state[2]: done

            def body(carry, written=written):  # only the new chunk is carried (and written)
                i, state, chunk = carry
                state, cache = step(state, _join(written, chunk), i)
                return i + 1, state, _split_last(cache)[1]

            i, state, chunk = jax.lax.while_loop(cond, body, (i, state, chunk))
            cache = _join(written, chunk)
        out_tok, out_lp, done, lengths, *_ = state
        finish = jnp.where(done, FINISH_STOP, FINISH_LENGTH).astype(jnp.int32)
        return out_tok, out_lp, lengths, finish


def _rows(out: SampleOutput, first: int) -> SampleOutput:
    return SampleOutput(out.tokens[first:], out.logprobs[first:], out.lengths[first:], out.finish_reason[first:])


def _split_last(cache):
    """(the cache without its last chunk, the last chunk), per layer."""
    return ({k: tuple(c[:-1] for c in v) for k, v in cache.items()},
            {k: tuple(c[-1] for c in v) for k, v in cache.items()})


def _join(cache, chunk):
    return {k: tuple(c + (x,) for c, x in zip(cache[k], chunk[k])) for k in cache}


MAX_SEGMENTS = 8
MIN_SEGMENT = 64


def segments(max_new_bucket: int) -> list[tuple[int, int]]:
    """(first step, steps) of the decode segments for a bucket: at most MAX_SEGMENTS, each
    of at least MIN_SEGMENT steps (fewer segments compile faster; more read less cache)."""
    size = max(MIN_SEGMENT, -(-max_new_bucket // MAX_SEGMENTS))
    return [(s, min(size, max_new_bucket - s)) for s in range(0, max_new_bucket, size)]
