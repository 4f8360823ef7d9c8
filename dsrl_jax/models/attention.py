"""Grouped-query causal attention: a plain path, a blockwise (flash-style) path, and a
single-query path for decoding from a KV cache (`decode`, its own cache layout).

Both take q [B, T, H, D], k/v [B, S, Hkv, D], a key-validity mask [B, S] and the slot of
the first query (`cache_index`), and return [B, T, H, D]. Query t (slot cache_index + t)
sees key slot s iff kv_mask[b, s] and s <= cache_index + t.

The plain path materialises [B, H, T, S] scores: fine for decoding and short sequences.
The blockwise path streams over key blocks with an online softmax and rematerialises each
query block in the backward pass, so memory grows linearly with sequence length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e30  # finite "minus infinity": fully masked rows stay NaN-free


def _group(q, num_kv_heads):
    b, t, h, d = q.shape
    return q.reshape(b, t, num_kv_heads, h // num_kv_heads, d)


def plain(q, k, v, kv_mask, cache_index=0):
    b, t, h, d = q.shape
    s = k.shape[1]
    qg = _group(q, k.shape[2])
    scores = jnp.einsum("bthgd,bshd->bhgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (d**-0.5)
    q_slot = cache_index + jnp.arange(t)
    visible = (jnp.arange(s)[None, :] <= q_slot[:, None])[None] & kv_mask[:, None, :].astype(bool)
    scores = jnp.where(visible[:, None, None], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhgts,bshd->bthgd", probs, v)
    return out.reshape(b, t, h, d)


def decode(q, k_chunks, v_chunks, kv_mask, cache_index):
    """One query per row against a cache in decode layout, held as chunks along the slots:
    q [B, 1, H, D], keys slot-minor [B, Hkv, D, S_c], values [B, Hkv, S_c, D]. Each
    contraction is then a batched matrix-vector product over contiguous memory (on CPU ~3x
    faster than reading a [B, S, Hkv, D] cache), and chunks are read whole, never sliced.
    kv_mask [B, sum S_c]; the query sits at slot cache_index."""
    b, _, h, d = q.shape
    hkv = k_chunks[0].shape[1]
    qg = q.reshape(b, hkv, h // hkv, d)
    scores = jnp.concatenate(
        [jnp.einsum("bhgd,bhds->bhgs", qg, k, preferred_element_type=jnp.float32) for k in k_chunks], axis=-1)
    scores = scores * (d**-0.5)
    visible = kv_mask.astype(bool) & (jnp.arange(scores.shape[-1]) <= cache_index)[None]
    scores = jnp.where(visible[:, None, None], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_chunks[0].dtype)
    out, start = 0.0, 0
    for v in v_chunks:
        out = out + jnp.einsum("bhgs,bhsd->bhgd", probs[..., start:start + v.shape[2]], v)
        start += v.shape[2]
    return out.reshape(b, 1, h, d)


def blockwise(q, k, v, kv_mask, cache_index=0, block_size=512, skip=True):
    """Flash-style attention; `skip`: key blocks wholly after a query block (causally
    invisible) are skipped with `lax.cond`, halving the work of a causal pass."""
    b, t, h, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    g = h // hkv
    bq, bk = min(block_size, t), min(block_size, s)
    tp, sp = -(-t // bq) * bq, -(-s // bk) * bk
    q = jnp.pad(q, ((0, 0), (0, tp - t), (0, 0), (0, 0)))
    k = jnp.pad(k, ((0, 0), (0, sp - s), (0, 0), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, sp - s), (0, 0), (0, 0)))
    kv_mask = jnp.pad(kv_mask.astype(bool), ((0, 0), (0, sp - s)))
    nq, nk = tp // bq, sp // bk
    qb = q.reshape(b, nq, bq, hkv, g, d).transpose(1, 0, 2, 3, 4, 5)
    kb = k.reshape(b, nk, bk, hkv, d).transpose(1, 0, 2, 3, 4)
    vb = v.reshape(b, nk, bk, hkv, d).transpose(1, 0, 2, 3, 4)
    mb = kv_mask.reshape(b, nk, bk).transpose(1, 0, 2)
    scale = d**-0.5

    @jax.checkpoint  # the backward pass recomputes one query block at a time
    def query_block(qi, qblk):
        q_slot = cache_index + qi * bq + jnp.arange(bq)
        last_q = cache_index + qi * bq + bq - 1  # causal: key blocks past it are skipped

        # Rematerialised too: the backward pass of the key scan keeps only the running
        # (max, sum, acc) per key block, not the [bq, bk] scores and probabilities.
        @jax.checkpoint
        def kv_update(carry, kblk, vblk, mblk, ki):
            m, l, acc = carry
            k_slot = ki * bk + jnp.arange(bk)
            sc = jnp.einsum("bqhgd,bkhd->bhgqk", qblk, kblk, preferred_element_type=jnp.float32) * scale
            valid = (k_slot[None, :] <= q_slot[:, None])[None] & mblk[:, None, :]
            valid = valid[:, None, None]
            sc = jnp.where(valid, sc, _NEG)
            m_new = jnp.maximum(m, sc.max(-1))
            p = jnp.where(valid, jnp.exp(sc - m_new[..., None]), 0.0)
            corr = jnp.exp(m - m_new)
            l = l * corr + p.sum(-1)
            pv = jnp.einsum("bhgqk,bkhd->bhgqd", p.astype(vblk.dtype), vblk, preferred_element_type=jnp.float32)
            return m_new, l, acc * corr[..., None] + pv

        def kv_step(carry, xs):
            kblk, vblk, mblk, ki = xs
            if not skip:
                return kv_update(carry, kblk, vblk, mblk, ki), None
            return jax.lax.cond(ki * bk <= last_q, lambda c: kv_update(c, kblk, vblk, mblk, ki),
                                lambda c: c, carry), None

        init = (
            jnp.full((b, hkv, g, bq), _NEG, jnp.float32),
            jnp.zeros((b, hkv, g, bq), jnp.float32),
            jnp.zeros((b, hkv, g, bq, d), jnp.float32),
        )
        (_, l, acc), _ = jax.lax.scan(kv_step, init, (kb, vb, mb, jnp.arange(nk)))
        out = acc / jnp.maximum(l, 1e-30)[..., None]  # [b, hkv, g, bq, d]
        return out.transpose(0, 3, 1, 2, 4).reshape(b, bq, h, d).astype(v.dtype)

    out = jax.lax.map(lambda xs: query_block(*xs), (jnp.arange(nq), qb))  # [nq, b, bq, h, d]
    return out.transpose(1, 0, 2, 3, 4).reshape(b, tp, h, d)[:, :t]


def attend(q, k, v, kv_mask, cache_index=0, *, impl="auto", block_size=512):
    """Dispatches to the plain or blockwise path (auto: blockwise for long queries)."""
    if impl == "auto":
        impl = "blockwise" if q.shape[1] > block_size else "plain"
    if impl == "plain":
        return plain(q, k, v, kv_mask, cache_index)
    if impl == "blockwise":
        return blockwise(q, k, v, kv_mask, cache_index, block_size)
    raise ValueError(f"unknown attention impl {impl!r}")
