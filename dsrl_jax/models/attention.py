"""Grouped-query causal attention: a plain path, a blockwise (flash-style) path, and a
single-query path for decoding from a KV cache (`decode`, its own cache layout), and a
single-query path over a paged KV pool shared by decoding slots (`pool_step`).

Both take q [B, T, H, D], k/v [B, S, Hkv, D], a key-validity mask [B, S] and the slot of
the first query (`cache_index`), and return [B, T, H, D]. Query t (slot cache_index + t)
sees key slot s iff kv_mask[b, s] and s <= cache_index + t.

The plain path materialises [B, H, T, S] scores: fine for decoding and short sequences.
The blockwise path streams over key blocks with an online softmax and rematerialises each
query block in the backward pass, so memory grows linearly with sequence length.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dsrl_jax import parallel

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


class PoolKV(NamedTuple):
    """One layer's view of a paged KV pool (continuous batching). The slots and the pool are
    split into G groups (the data-parallel shards): slot s of group g owns pages of group g
    only. Row positions are slot-relative: token index t of a slot's row lives in page
    table[g, s, t // P] at offset t % P."""

    k: jax.Array  # [G, N, Hkv, D, P] keys, slot-minor as in `decode`
    v: jax.Array  # [G, N, Hkv, P, D]
    table: jax.Array  # int32 [G, S, M]: page of each slot's m-th page (0: a scratch page)
    owner: jax.Array  # int32 [G, N]: slot owning each page; S (out of range) when free
    base: jax.Array  # int32 [G, N]: token index of the page's first entry in its row
    start: jax.Array  # int32 [G, S]: first visible token index of each slot (left padding)


def pool_step(q, k, v, pool: PoolKV, pos):
    """Writes one new token per slot into the pool and attends over it. q [G*S, 1, H, D],
    k/v [G*S, 1, Hkv, D], pos int32 [G*S]: the token index being written. Returns
    ([G*S, 1, H, D], (new k pool, new v pool)).

    Every page is scored against its owner slot's query and softmax-normalised per owner
    (segment max / sum), so a step reads the pool once, whatever the rows' lengths: the pool
    is sized by the tokens that are live, and no [slots, longest row] block is gathered.
    Under a mesh, each data-parallel shard runs it on its own groups (parallel.per_batch_shard)."""
    row = ("batch", None, "heads", None)
    grp = ("batch",)
    pool_spec = PoolKV(("batch", None, "heads", None, None), ("batch", None, "heads", None, None), grp, grp, grp, grp)
    pool_spec = tuple(pool_spec)
    out_spec = (row, (pool_spec[0], pool_spec[1]))
    fn = lambda q, k, v, pl, pos: _pool_step(q, k, v, PoolKV(*pl), pos)
    return parallel.per_batch_shard(fn, (q, k, v, tuple(pool), pos), (row, row, row, pool_spec, grp), out_spec,
                                    heads=pool.k.shape[2])


def _pool_step(q, k, v, pool: PoolKV, pos):
    g_, n, hkv, d, p = pool.k.shape
    s = pool.table.shape[1]
    h = q.shape[2]
    pos = pos.reshape(g_, s)
    page = jnp.take_along_axis(pool.table, (pos // p)[..., None], axis=-1)[..., 0]  # [G, S]
    off = pos % p
    kn = k[:, 0].reshape(g_, s, hkv, d).astype(pool.k.dtype)
    vn = v[:, 0].reshape(g_, s, hkv, d).astype(pool.v.dtype)
    kp = jax.vmap(lambda a, pg, o, x: a.at[pg, :, :, o].set(x))(pool.k, page, off, kn)
    vp = jax.vmap(lambda a, pg, o, x: a.at[pg, :, o, :].set(x))(pool.v, page, off, vn)
    qg = q[:, 0].reshape(g_, s, hkv, h // hkv, d)

    def group(qg, kp, vp, owner, base, start, pos):
        own = jnp.minimum(owner, s - 1)
        t = base[:, None] + jnp.arange(p)  # [N, P] token index of each entry
        visible = (owner < s)[:, None] & (t >= start[own][:, None]) & (t <= pos[own][:, None])
        sc = jnp.einsum("nhgd,nhdp->nhgp", qg[own], kp.astype(qg.dtype), preferred_element_type=jnp.float32)
        sc = jnp.where(visible[:, None, None], sc * d**-0.5, _NEG)
        m = jax.ops.segment_max(sc.max(-1), owner, s)  # [S, Hkv, g]; free pages dropped
        e = jnp.where(visible[:, None, None], jnp.exp(sc - m[own][..., None]), 0.0)
        l = jax.ops.segment_sum(e.sum(-1), owner, s)
        pv = jnp.einsum("nhgp,nhpd->nhgd", e.astype(qg.dtype), vp.astype(qg.dtype),
                        preferred_element_type=jnp.float32)
        acc = jax.ops.segment_sum(pv, owner, s)  # [S, Hkv, g, D]
        return acc / jnp.maximum(l, 1e-30)[..., None]

    out = jax.vmap(group)(qg, kp, vp, pool.owner, pool.base, pool.start, pos)
    return out.reshape(g_ * s, 1, h, d).astype(q.dtype), (kp, vp)


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
