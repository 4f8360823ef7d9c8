"""Qwen2 causal language model in Flax NNX, with a pure functional entry point.

Modules define the parameters (with logical axis names for sharding) and the math. The
decoder layers are created stacked along a leading "layers" axis, so the parameter tree
is the same whether the forward pass scans over layers or unrolls them, and a checkpoint
written by one loads in the other.

Hot paths never hold a module: they call

    forward(cfg, params, tokens, positions, kv_mask, cache=None, cache_index=0)

with `params` a plain nested dict of arrays (see `init_params`). The NNX graph is rebuilt
from `cfg` at trace time only, so there is no per-call Python graph walking.

Attention masking covers left-padded batches and incremental decoding alike: key slot s is
visible to the query written at slot t iff `kv_mask[b, s]` and `s <= t`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dsrl_jax import parallel
from dsrl_jax.models import attention
from dsrl_jax.models.config import Qwen2Config

Params = dict[str, Any]
Cache = dict[str, tuple]  # {"k": per layer, chunks [B, Hkv, D, S_c]; "v": ... [B, Hkv, S_c, D]}
# (or a paged pool, see init_pool)


def _param(rngs: nnx.Rngs, shape, axes, dtype, scale: float | None = None) -> nnx.Param:
    if scale is None:  # norms start at one
        value = jnp.ones(shape, dtype)
    elif scale == 0.0:  # biases start at zero
        value = jnp.zeros(shape, dtype)
    else:
        value = scale * jax.random.normal(rngs.params(), shape, dtype)
    # Logical axis names ride along as metadata and are mapped to mesh axes later
    # (dsrl_jax.parallel), so creating a parameter must not shard it (nor need a mesh).
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, param_dtype, *, rngs: nnx.Rngs):
        self.scale = _param(rngs, (dim,), ("norm",), param_dtype)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        # Same order of operations as the reference: normalise in fp32, cast, then scale.
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * h.astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [B, T, head_dim] for integer positions [B, T] (fp32)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [B, T, H, D]; rotates pairs (i, i + D/2) as the reference implementation does."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    xf = x.astype(jnp.float32)
    out = xf * cos[:, :, None, :] + rotated.astype(jnp.float32) * sin[:, :, None, :]
    return out.astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: Qwen2Config, *, rngs: nnx.Rngs):
        e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head
        pd, s = cfg.param_dtype, 0.02
        self.q_proj = _param(rngs, (e, h, d), ("embed", "q_heads", "head_dim"), pd, s)
        self.k_proj = _param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), pd, s)
        self.v_proj = _param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), pd, s)
        self.q_bias = _param(rngs, (h, d), ("q_heads", "head_dim"), pd, 0.0)
        self.k_bias = _param(rngs, (kv, d), ("kv_heads", "head_dim"), pd, 0.0)
        self.v_bias = _param(rngs, (kv, d), ("kv_heads", "head_dim"), pd, 0.0)
        self.o_proj = _param(rngs, (h, d, e), ("q_heads", "head_dim", "embed"), pd, s)
        self.cfg = cfg

    def __call__(self, x, cos, sin, kv_mask, cache_kv, cache_index):
        cfg, dt = self.cfg, x.dtype
        q = jnp.einsum("bte,ehd->bthd", x, self.q_proj[...].astype(dt)) + self.q_bias[...].astype(dt)
        k = jnp.einsum("bte,ehd->bthd", x, self.k_proj[...].astype(dt)) + self.k_bias[...].astype(dt)
        v = jnp.einsum("bte,ehd->bthd", x, self.v_proj[...].astype(dt)) + self.v_bias[...].astype(dt)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache_kv is None:
            out = attention.attend(q, k, v, kv_mask, 0, impl=cfg.attention_impl, block_size=cfg.attention_block_size)
            return jnp.einsum("bthd,hde->bte", out, self.o_proj[...].astype(dt)), None
        if isinstance(cache_kv, attention.PoolKV):  # a paged pool; cache_index: per-row positions
            out, kv = attention.pool_step(q, k, v, cache_kv, cache_index)
            return jnp.einsum("bthd,hde->bte", out, self.o_proj[...].astype(dt)), kv
        # Write this step's keys/values at their slots (keys slot-minor, see init_cache),
        # which lie in the last chunk of the cache.
        ck, cv = cache_kv
        offset = sum(c.shape[-1] for c in ck[:-1])
        at = cache_index - offset
        ck = ck[:-1] + (jax.lax.dynamic_update_slice(ck[-1], k.transpose(0, 2, 3, 1).astype(ck[-1].dtype), (0, 0, 0, at)),)
        cv = cv[:-1] + (jax.lax.dynamic_update_slice(cv[-1], v.transpose(0, 2, 1, 3).astype(cv[-1].dtype), (0, 0, at, 0)),)
        if q.shape[1] == 1:  # decoding: read the cache in its own layout
            out = attention.decode(q, [c.astype(dt) for c in ck], [c.astype(dt) for c in cv], kv_mask, cache_index)
        elif isinstance(cache_index, int) and cache_index == 0:  # prefill: later slots are invisible
            t = q.shape[1]
            out = attention.attend(q, k, v, kv_mask[:, :t], 0, impl=cfg.attention_impl,
                                   block_size=cfg.attention_block_size)
        else:  # a chunk written after earlier slots
            keys = jnp.concatenate([c.transpose(0, 3, 1, 2) for c in ck], axis=1).astype(dt)
            values = jnp.concatenate([c.transpose(0, 2, 1, 3) for c in cv], axis=1).astype(dt)
            out = attention.attend(q, keys, values, kv_mask, cache_index, impl=cfg.attention_impl,
                                   block_size=cfg.attention_block_size)
        return jnp.einsum("bthd,hde->bte", out, self.o_proj[...].astype(dt)), (ck, cv)


class MLP(nnx.Module):
    def __init__(self, cfg: Qwen2Config, *, rngs: nnx.Rngs):
        e, f, pd, s = cfg.hidden_size, cfg.intermediate_size, cfg.param_dtype, 0.02
        self.gate_proj = _param(rngs, (e, f), ("embed", "mlp"), pd, s)
        self.up_proj = _param(rngs, (e, f), ("embed", "mlp"), pd, s)
        self.down_proj = _param(rngs, (f, e), ("mlp", "embed"), pd, s)

    def __call__(self, x):
        dt = x.dtype
        gate = jax.nn.silu(x @ self.gate_proj[...].astype(dt))
        return (gate * (x @ self.up_proj[...].astype(dt))) @ self.down_proj[...].astype(dt)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: Qwen2Config, *, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, cos, sin, kv_mask, cache_kv, cache_index):
        h, cache_kv = self.attn(self.input_norm(x), cos, sin, kv_mask, cache_kv, cache_index)
        x = x + h
        return x + self.mlp(self.post_attn_norm(x)), cache_kv


_REMAT_POLICY = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _prefetch(x, current, layer, i, num_layers, gather_per_layer):
    """(x, layer i's weights, layer i+1's weights) for an unrolled layer loop. Under FSDP
    each layer's sharded weights are all-gathered where they are used, and nothing orders
    those gathers: XLA may issue every layer's at the start of a decode step (the whole model
    gathered on every device). With `gather_per_layer`, layer i+1's shards are made to depend
    on layer i's input (plus a zero derived from it: one scalar all-reduce and one pass over
    the shards), so its gather overlaps layer i and at most two layers' gathered weights are
    live. (An optimization barrier expresses the same order but XLA:CPU drops it before
    scheduling.) Only for weights sharded over the data axes: on replicated weights the pass
    would copy them."""
    if i + 1 >= num_layers:
        return current, None
    nxt = layer(i + 1)
    if gather_per_layer:
        zero = jnp.minimum(jnp.abs(x[:, -1, 0]).max(), 0)
        nxt = jax.tree.map(lambda w: w + zero.astype(w.dtype) if jnp.issubdtype(w.dtype, jnp.floating) else w, nxt)
    return current, nxt


class Qwen2ForCausalLM(nnx.Module):
    def __init__(self, cfg: Qwen2Config, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), cfg.param_dtype, 0.02)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs):
            return DecoderLayer(cfg, rngs=rngs)

        self.layers = make_layers(rngs)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype, 0.02)

    def hidden_states(self, tokens, positions, kv_mask, cache=None, cache_index=0, layers=None,
                      gather_per_layer=False):
        """Final normalised hidden states [B, T, E] and the updated cache. `layers`: the
        layer parameters as one pure dict per layer (see `unstack_layers`); the layers are
        then unrolled and self.layers only supplies the structure."""
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        x = parallel.constrain_batch(jnp.take(self.embed[...], tokens, axis=0).astype(dt))
        cos, sin = rope_tables(positions, cfg.dim_per_head, cfg.rope_theta)
        graphdef, layer_state = nnx.split(self.layers)

        def layer_fn(x, state, cache_kv):
            x, cache_kv = nnx.merge(graphdef, state)(x, cos, sin, kv_mask, cache_kv, cache_index)
            return parallel.constrain_batch(x), cache_kv

        if cfg.remat != "none":
            layer_fn = jax.checkpoint(layer_fn, policy=_REMAT_POLICY[cfg.remat])

        def layer(i):
            if layers is None:
                return jax.tree.map(lambda a: a[i], layer_state)
            state = jax.tree.map(lambda a: a, layer_state)
            state.replace_by_pure_dict(layers[i])
            return state

        if cache is None:
            def body(x, state):
                return layer_fn(x, state, None)[0], None

            if cfg.scan_layers and layers is None:
                x, _ = jax.lax.scan(body, x, layer_state)
            else:
                for i in range(cfg.num_layers):
                    x, _ = body(x, layer(i))
            return self.final_norm(x), None

        if "owner" in cache:  # a paged pool shared by decoding slots (see init_pool)
            ks, vs = list(cache["k"]), list(cache["v"])
            view = lambda i: attention.PoolKV(ks[i], vs[i], cache["table"], cache["owner"], cache["base"],
                                              cache["start"])
            nxt = layer(0)
            for i in range(cfg.num_layers):
                state, nxt = _prefetch(x, nxt, layer, i, cfg.num_layers, gather_per_layer)
                x, (ks[i], vs[i]) = layer_fn(x, state, view(i))
            return self.final_norm(x), {**cache, "k": tuple(ks), "v": tuple(vs)}

        prefill = (isinstance(cache_index, int) and cache_index == 0 and layers is None and cfg.scan_layers
                   and all(len(c) == 1 for c in cache["k"]))
        if prefill:  # fresh single-chunk caches: scan the layers (one layer's temporaries live
            # at a time), each filling its cache chunk, stacked by the scan and split after.
            def body_prefill(x, xs):
                state, ck, cv = xs
                x, ((ck,), (cv,)) = layer_fn(x, state, ((ck,), (cv,)))
                return x, (ck, cv)

            stack = lambda chunks: jnp.stack([c[0] for c in chunks])
            x, (ks, vs) = jax.lax.scan(body_prefill, x, (layer_state, stack(cache["k"]), stack(cache["v"])))
            split = lambda a: tuple((a[i],) for i in range(cfg.num_layers))
            return self.final_norm(x), {"k": split(ks), "v": split(vs)}

        # Otherwise the layers are unrolled: each layer's cache is its own arrays, so the
        # decode loop updates them in place (a stacked cache carried through a layer scan
        # costs a copy of a layer's slice per step).
        ks, vs = list(cache["k"]), list(cache["v"])
        nxt = layer(0)
        for i in range(cfg.num_layers):
            state, nxt = _prefetch(x, nxt, layer, i, cfg.num_layers, gather_per_layer)
            x, (ks[i], vs[i]) = layer_fn(x, state, (ks[i], vs[i]))
        return self.final_norm(x), {"k": tuple(ks), "v": tuple(vs)}

    def head_weight(self) -> jax.Array:
        """[E, V] output projection (the transposed embedding when tied)."""
        return self.embed[...].T if self.cfg.tie_word_embeddings else self.lm_head[...]

    def __call__(self, tokens, positions, kv_mask, cache=None, cache_index=0, layers=None, gather_per_layer=False):
        h, cache = self.hidden_states(tokens, positions, kv_mask, cache, cache_index, layers, gather_per_layer)
        return h @ self.head_weight().astype(h.dtype), cache


# ---- pure functional API ----------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _abstract(cfg: Qwen2Config):
    """(graphdef, abstract state) of the model for `cfg`; shapes only, no arrays."""
    return nnx.split(nnx.eval_shape(lambda: Qwen2ForCausalLM(cfg, rngs=nnx.Rngs(0))))


def init_params(cfg: Qwen2Config, rng: jax.Array | int = 0) -> Params:
    """Random parameters (normal, std 0.02; norms one; biases zero) as a plain dict."""
    if isinstance(rng, int):
        rng = jax.random.key(rng)
    model = Qwen2ForCausalLM(cfg, rngs=nnx.Rngs(params=rng))
    return nnx.split(model)[1].to_pure_dict()


def abstract_params(cfg: Qwen2Config) -> Params:
    """jax.ShapeDtypeStruct for every parameter, in the `init_params` layout."""
    return _abstract(cfg)[1].to_pure_dict()


def logical_axes(cfg: Qwen2Config) -> Params:
    """Logical axis names (tuple of str) for every parameter, in the `init_params` layout."""
    state = _abstract(cfg)[1]
    names = nnx.get_partition_spec(state).to_pure_dict()
    return jax.tree.map(tuple, names, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def bind(cfg: Qwen2Config, params: Params) -> Qwen2ForCausalLM:
    """An NNX module view of `params` (inside jit this costs trace time only)."""
    graphdef, state = _abstract(cfg)
    state = jax.tree.map(lambda x: x, state)  # a fresh copy to fill
    state.replace_by_pure_dict(params)
    return nnx.merge(graphdef, state)


def forward(cfg: Qwen2Config, params: Params, tokens, positions, kv_mask, cache=None, cache_index=0,
            *, return_hidden: bool = False, gather_per_layer: bool = False):
    """Logits [B, T, V] (or final hidden states [B, T, E]) and the updated cache.

    tokens, positions: int [B, T]. kv_mask: bool [B, S], which key slots hold real tokens
    (S = T without a cache, the cache length with one). With a cache, the T new tokens are
    written at slots [cache_index, cache_index + T), which must lie in the cache's last
    chunk (see add_cache_chunk). `params` may hold its layers stacked
    (as stored) or as a tuple of per-layer dicts (`unstack_layers`). `gather_per_layer`: the
    layer weights are sharded over the data axes (FSDP): a cached (decode) pass gathers them
    one layer at a time (see `_prefetch`).
    """
    layers = params["layers"]
    if isinstance(layers, (tuple, list)):
        params = {**params, "layers": abstract_params(cfg)["layers"]}  # structure only
    else:
        layers = None
    model = bind(cfg, params)
    if return_hidden:
        return model.hidden_states(tokens, positions, kv_mask, cache, cache_index, layers, gather_per_layer)
    return model(tokens, positions, kv_mask, cache, cache_index, layers, gather_per_layer)


def unstack_layers(params: Params) -> Params:
    """`params` with the stacked layers split into a tuple of per-layer dicts. A decode loop
    takes these slices once, outside the loop: slicing the stack inside it copies every
    layer's weights on every step. (Slicing inside a program still copies each layer out of
    the stack once; parameters already unstacked, as Sampler.prepare returns them, are
    returned as they are.)"""
    if isinstance(params["layers"], (tuple, list)):
        return params
    n = jax.tree.leaves(params["layers"])[0].shape[0]
    return {**params, "layers": tuple(jax.tree.map(lambda a: a[i], params["layers"]) for i in range(n))}


def head_weight(cfg: Qwen2Config, params: Params) -> jax.Array:
    """[E, V] LM head (for chunked log-prob computation from hidden states)."""
    return params["embed"].T if cfg.tie_word_embeddings else params["lm_head"]


def init_cache(cfg: Qwen2Config, batch: int, length: int, dtype="bfloat16") -> Cache:
    """Zeroed KV cache with `length` slots. Per layer, a tuple of chunks (one here; see
    `add_cache_chunk`): keys stored slot-minor [B, Hkv, D, S] and values [B, Hkv, S, D],
    the layouts in which a decode step reads them with contiguous dots (attention.decode)."""
    kv, d = cfg.num_kv_heads, cfg.dim_per_head
    return {
        "k": tuple((jnp.zeros((batch, kv, d, length), dtype),) for _ in range(cfg.num_layers)),
        "v": tuple((jnp.zeros((batch, kv, length, d), dtype),) for _ in range(cfg.num_layers)),
    }


def add_cache_chunk(cache: Cache, length: int) -> Cache:
    """`cache` with `length` more (zeroed) slots, as a new chunk per layer. forward() writes
    new tokens into the last chunk and attends over all chunks, so a decode loop that grows
    the cache chunk by chunk reads only the slots filled so far, without copying them."""
    grow = lambda chunks, axis: chunks + (jnp.zeros(
        chunks[0].shape[:axis] + (length,) + chunks[0].shape[axis + 1:], chunks[0].dtype),)
    return {"k": tuple(grow(c, 3) for c in cache["k"]), "v": tuple(grow(c, 2) for c in cache["v"])}


def init_pool(cfg: Qwen2Config, groups: int, pages: int, page_size: int, dtype="bfloat16") -> dict:
    """Zeroed paged KV pool: per layer keys [G, N, Hkv, D, P] and values [G, N, Hkv, P, D]
    (the decode layout, one page per P tokens). forward() takes it as a cache together with
    "table", "owner", "base" and "start" (see attention.PoolKV) and per-row positions as
    cache_index, for one token per row."""
    kv, d = cfg.num_kv_heads, cfg.dim_per_head
    return {
        "k": tuple(jnp.zeros((groups, pages, kv, d, page_size), dtype) for _ in range(cfg.num_layers)),
        "v": tuple(jnp.zeros((groups, pages, kv, page_size, d), dtype) for _ in range(cfg.num_layers)),
    }


def write_pages(pool: jax.Array, chunk: jax.Array, pages: jax.Array, values: bool) -> jax.Array:
    """Copies a prefilled contiguous cache chunk into pool pages. pool [G, N, ...] (as
    init_pool), chunk [G, A, Hkv, D, L] keys or [G, A, Hkv, L, D] values with L a multiple of
    the page size, pages int32 [G, A, L / P] (out of range: dropped)."""
    p = pool.shape[-2] if values else pool.shape[-1]
    g, a, h = chunk.shape[:3]
    if values:  # [G, A, Hkv, L, D] -> [G, A, L/P, Hkv, P, D]
        x = chunk.reshape(g, a, h, -1, p, chunk.shape[-1]).transpose(0, 1, 3, 2, 4, 5)
    else:  # [G, A, Hkv, D, L] -> [G, A, L/P, Hkv, D, P]
        x = chunk.reshape(g, a, h, chunk.shape[3], -1, p).transpose(0, 1, 4, 2, 3, 5)
    return jax.vmap(lambda pl, pg, v: pl.at[pg].set(v.astype(pl.dtype), mode="drop"))(pool, pages, x)


def cache_length(cache: Cache) -> int:
    return sum(c.shape[-1] for c in cache["k"][0])


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """Rope positions for a (left- or right-) padded batch: 0, 1, ... over real tokens."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)
