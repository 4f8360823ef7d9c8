"""Jitted KV-cache sampler: one prefill per prompt, a `lax.while_loop` decode.

    out = Sampler(cfg, mesh).sample(params, prompts, rng, SampleOptions(max_new_tokens=256, n=16))

Prompts of different lengths are left-padded into a bucketed [batch, prompt_len] block, so
a long run compiles a handful of programs (one per bucket), not one per batch. The decode
loop stops as soon as every sequence has emitted a stop token. Each prompt is prefilled
once and its cache is repeated for its n samples (when the prompts divide by the
data-parallel size; else the prompts are repeated and each row prefilled, so a call only
needs prompts x n rows to divide by it). Lengths past 4096 bucket to multiples of 1024.

Returned log-probs are those of the raw policy (log-softmax of the unmodified logits at the
sampled token), whatever temperature / top-p / top-k shaped the sampling: GRPO needs them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dsrl_jax import parallel
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import Qwen2Config

FINISH_STOP, FINISH_LENGTH = 0, 1
FINISH_REASONS = ("stop", "length")


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k truncation
    greedy: bool = False
    n: int = 1  # samples per prompt, sharing one prefill
    stop_token_ids: tuple[int, ...] = ()
    cache_dtype: str = "bfloat16"
    pad_token_id: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be >= 1")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass
class SampleOutput:
    """Per sample (row = prompt_index * n + sample_index), as numpy arrays."""

    tokens: np.ndarray  # int32 [N, max_new_tokens], pad after the end
    logprobs: np.ndarray  # float32 [N, max_new_tokens], 0 after the end
    lengths: np.ndarray  # int32 [N], completion tokens including the stop token
    finish_reason: np.ndarray  # int32 [N], FINISH_STOP or FINISH_LENGTH

    def completion(self, i: int) -> list[int]:
        return self.tokens[i, : self.lengths[i]].tolist()


LINEAR_ABOVE = 4096  # past this, buckets grow by LINEAR_STEP instead of doubling
LINEAR_STEP = 1024


def bucket(n: int, minimum: int = 16, cap: int | None = None) -> int:
    """The bucket of a length or batch size n: the smallest power of two >= n (and >=
    minimum) up to 4096, above that the smallest multiple of 1024 (24,576 stays 24,576,
    not 32,768). `cap` (a stage's limit, >= n): never more than cap."""
    size = minimum
    while size < n and size < LINEAR_ABOVE:
        size *= 2
    if size < n:
        size = -(-n // LINEAR_STEP) * LINEAR_STEP
    if cap is not None and n <= cap < size:
        size = cap
    return size


def filter_logits(logits: jax.Array, top_k: int, top_p: jax.Array, use_top_p: bool):
    """(candidate logits, their token ids): the top-k, then the top-p nucleus of those.
    Tokens outside get -inf. Without either truncation all tokens are candidates."""
    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        vals, ids = jax.lax.top_k(logits, top_k)
    elif use_top_p:
        ids = jnp.argsort(-logits, axis=-1)
        vals = jnp.take_along_axis(logits, ids, axis=-1)
    else:
        return logits, None
    if use_top_p:
        probs = jax.nn.softmax(vals, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
        vals = jnp.where(before < top_p, vals, -jnp.inf)
    return vals, ids


def _choose(logits, rng, temperature, top_p, *, greedy, top_k, use_top_p):
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    vals, ids = filter_logits(logits / temperature, top_k, top_p, use_top_p)
    choice = jax.random.categorical(rng, vals, axis=-1)
    if ids is None:
        return choice.astype(jnp.int32)
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


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
        self._generate = jax.jit(self._generate_impl, static_argnames=("max_new_bucket", "opts"))

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
               opts: SampleOptions) -> SampleOutput:
        tokens, mask = self.pad_prompts(prompts, opts.n)
        sharding = self.input_sharding(tokens.shape[0])
        with parallel.activation_sharding(self.mesh, self.rules):  # read while tracing
            out = self._generate(
                params, jax.device_put(tokens, sharding), jax.device_put(mask, sharding), rng,
                jnp.int32(opts.max_new_tokens), jnp.float32(opts.temperature), jnp.float32(opts.top_p),
                max_new_bucket=self.new_tokens_bucket(opts.max_new_tokens), opts=_static(opts),
            )
        rows = len(prompts) * opts.n
        toks, lps, lens, fin = (np.asarray(x)[:rows] for x in out)
        return SampleOutput(toks[:, : opts.max_new_tokens], lps[:, : opts.max_new_tokens], lens, fin)

    def compiled_programs(self) -> int:
        """How many programs the sampler has compiled (one per bucket and static option set)."""
        return self._generate._cache_size()

    # -- device side -----------------------------------------------------------------------
    def _cache_sharding(self, length_axis: int):
        spec = [None] * 5
        batch = parallel.batch_sharding(self.mesh, 1, self.rules).spec[0]
        spec[1] = batch
        tensor = self.mesh.shape.get("tensor", 1)
        if tensor > 1 and self.cfg.num_kv_heads % tensor == 0:
            spec[3] = "tensor"
        return NamedSharding(self.mesh, P(*spec))

    def _generate_impl(self, params, tokens, mask, rng, max_new, temperature, top_p, *, max_new_bucket, opts):
        cfg = self.cfg
        n, greedy, top_k, use_top_p, stops, cache_dtype, pad_id = opts
        b, plen = tokens.shape
        total = plen + max_new_bucket
        constrain = lambda c: jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, self._cache_sharding(1)), c)

        rows = b * n
        # Row i*n + j is sample j of prompt i. Prompts that divide by the data-parallel size
        # are prefilled once and their caches repeated per sample; otherwise (e.g. 1 prompt
        # x 16 samples on 8 devices) the prompts are repeated first and the rows prefilled.
        shared = b % self.dp == 0
        if n > 1 and not shared:
            tokens, mask = jnp.repeat(tokens, n, axis=0), jnp.repeat(mask, n, axis=0)
            b = rows
        cache = constrain(qwen2.init_cache(cfg, b, total, cache_dtype))
        kv_mask = jnp.concatenate([mask, jnp.ones((b, max_new_bucket), bool)], axis=1)
        positions = qwen2.positions_from_mask(mask)
        # Only the last position's logits: no [B, P, V] block.
        hidden, cache = qwen2.forward(cfg, params, tokens, positions, kv_mask, cache, 0, return_hidden=True)
        head = qwen2.head_weight(cfg, params)
        last = (hidden[:, -1] @ head.astype(hidden.dtype)).astype(jnp.float32)
        next_pos = positions[:, -1] + 1

        if n > 1 and shared:
            rep = lambda x: jnp.repeat(x, n, axis=0)
            cache = constrain({k: jnp.repeat(v, n, axis=1) for k, v in cache.items()})
            last, kv_mask, next_pos = rep(last), rep(kv_mask), rep(next_pos)
        stop_ids = jnp.asarray(stops if stops else (-1,), jnp.int32)
        choose = functools.partial(_choose, greedy=greedy, top_k=top_k, use_top_p=use_top_p)

        def cond(state):
            i, _, _, done, *_ = state
            return (i < max_new) & ~jnp.all(done)

        def body(state):
            i, out_tok, out_lp, done, lengths, last, cache, rng = state
            rng, key = jax.random.split(rng)
            tok = choose(last, key, temperature, top_p)
            lp = jnp.take_along_axis(jax.nn.log_softmax(last, axis=-1), tok[:, None], axis=-1)[:, 0]
            tok = jnp.where(done, pad_id, tok)
            out_tok = out_tok.at[:, i].set(tok)
            out_lp = out_lp.at[:, i].set(jnp.where(done, 0.0, lp))
            lengths = lengths + (~done).astype(jnp.int32)
            done = done | jnp.isin(tok, stop_ids)
            logits, cache = qwen2.forward(
                cfg, params, tok[:, None], (next_pos + i)[:, None], kv_mask, cache, plen + i)
            return i + 1, out_tok, out_lp, done, lengths, logits[:, -1].astype(jnp.float32), cache, rng

        state = (
            jnp.int32(0),
            jnp.full((rows, max_new_bucket), pad_id, jnp.int32),
            jnp.zeros((rows, max_new_bucket), jnp.float32),
            jnp.zeros((rows,), bool),
            jnp.zeros((rows,), jnp.int32),
            last, cache, rng,
        )
        _, out_tok, out_lp, done, lengths, *_ = jax.lax.while_loop(cond, body, state)
        finish = jnp.where(done, FINISH_STOP, FINISH_LENGTH).astype(jnp.int32)
        return out_tok, out_lp, lengths, finish


def _static(opts: SampleOptions) -> tuple:
    """The options that shape the compiled program (temperature/top_p/max_new are traced)."""
    return (opts.n, opts.greedy, int(opts.top_k), (not opts.greedy) and opts.top_p < 1.0,
            tuple(sorted(set(opts.stop_token_ids))), opts.cache_dtype, opts.pad_token_id)
