"""Blockwise attention and chunked log-probs against the plain (materialised) paths."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsrl_jax.models import attention, qwen2
from dsrl_jax.models.config import preset
from dsrl_jax.rl.logprobs import completion_logprobs

jax.config.update("jax_default_matmul_precision", "highest")


def _inputs(b, t, s, h, hkv, d, seed=0, pad=(0, 3)):
    ks = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(ks[0], (b, t, h, d), jnp.float32)
    k = jax.random.normal(ks[1], (b, s, hkv, d), jnp.float32)
    v = jax.random.normal(ks[2], (b, s, hkv, d), jnp.float32)
    mask = np.ones((b, s), bool)
    for i, n in enumerate(pad[:b]):  # left padding of row i
        mask[i, :n] = False
    return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize("t,block", [(64, 16), (50, 16), (37, 8), (33, 64)])
@pytest.mark.parametrize("skip", [True, False])
def test_blockwise_matches_plain(t, block, skip):
    q, k, v, mask = _inputs(2, t, t, 4, 2, 8)
    ref = attention.plain(q, k, v, mask)
    out = attention.blockwise(q, k, v, mask, 0, block, skip=skip)
    valid = np.asarray(mask)[:, :, None, None]  # padded query rows are don't-care
    np.testing.assert_allclose(np.where(valid, out, 0), np.where(valid, ref, 0), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("cache_index,t,s,block", [(0, 5, 40, 16), (7, 9, 40, 8), (24, 1, 40, 16), (11, 13, 29, 6)])
def test_blockwise_cache_offsets(cache_index, t, s, block):
    """Queries written at slots [cache_index, cache_index + t) of a longer cache."""
    q, k, v, mask = _inputs(2, t, s, 6, 2, 8, seed=1, pad=(2, 0))
    ref = attention.plain(q, k, v, mask, cache_index)
    out = attention.blockwise(q, k, v, mask, cache_index, block)
    valid = np.asarray(mask)[:, cache_index:cache_index + t, None, None]  # queries at padding slots: don't care
    np.testing.assert_allclose(np.where(valid, out, 0), np.where(valid, ref, 0), atol=2e-5, rtol=2e-5)
    # A traced cache index (as in the decode loop) gives the same result.
    out_traced = jax.jit(lambda ci: attention.blockwise(q, k, v, mask, ci, block))(jnp.int32(cache_index))
    np.testing.assert_allclose(np.where(valid, out_traced, 0), np.where(valid, ref, 0), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("t,block", [(48, 16), (45, 16)])
def test_blockwise_gradients_match_plain(t, block):
    q, k, v, mask = _inputs(2, t, t, 4, 2, 8, seed=2)
    w = jax.random.normal(jax.random.key(3), (2, t, 4, 8))
    valid = mask[:, :, None, None]

    def loss(fn, q, k, v):
        return jnp.sum(jnp.where(valid, fn(q, k, v) * w, 0.0))

    g_ref = jax.grad(lambda *a: loss(lambda q, k, v: attention.plain(q, k, v, mask), *a), argnums=(0, 1, 2))(q, k, v)
    g_blk = jax.grad(lambda *a: loss(lambda q, k, v: attention.blockwise(q, k, v, mask, 0, block), *a),
                     argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_blk, g_ref):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)


def test_fully_masked_rows_are_finite():
    q, k, v, _ = _inputs(1, 16, 16, 2, 1, 4)
    mask = jnp.zeros((1, 16), bool)
    out = attention.blockwise(q, k, v, mask, 0, 8)
    g = jax.grad(lambda q: attention.blockwise(q, k, v, mask, 0, 8).sum())(q)
    assert np.isfinite(np.asarray(out)).all() and np.isfinite(np.asarray(g)).all()


def test_attend_dispatch():
    q, k, v, mask = _inputs(1, 40, 40, 4, 2, 8)
    np.testing.assert_allclose(attention.attend(q, k, v, mask, impl="auto", block_size=16),
                               attention.attend(q, k, v, mask, impl="plain"), atol=2e-5, rtol=2e-5)
    with pytest.raises(ValueError, match="unknown attention impl"):
        attention.attend(q, k, v, mask, impl="nope")


def _full_logprobs(cfg, params, tokens, kv_mask, prompt_len):
    positions = qwen2.positions_from_mask(kv_mask)
    logits, _ = qwen2.forward(cfg, params, tokens, positions, kv_mask)
    logits = logits.astype(jnp.float32)[:, prompt_len - 1:-1]
    logp = jax.nn.log_softmax(logits, -1)
    lp = jnp.take_along_axis(logp, tokens[:, prompt_len:, None], -1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp) * logp, -1)
    return lp, ent


@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_chunked_logprobs_and_grads_match_full(chunk):
    cfg = preset("tiny-untied", attention_impl="blockwise", attention_block_size=8)
    params = qwen2.init_params(cfg, 0)
    plen, m = 8, 12
    tokens = jax.random.randint(jax.random.key(4), (2, plen + m), 0, cfg.vocab_size)
    mask = jnp.ones((2, plen + m), bool).at[0, :3].set(False)
    lp, ent = completion_logprobs(cfg, params, tokens, mask, plen, chunk)
    plain_cfg = cfg.replace(attention_impl="plain")
    lp_ref, ent_ref = _full_logprobs(plain_cfg, params, tokens, mask, plen)
    np.testing.assert_allclose(lp, lp_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ent, ent_ref, atol=1e-4, rtol=1e-4)

    def loss(fn, p):
        lp, ent = fn(p)
        return jnp.sum(lp * jnp.arange(m)) + 0.1 * jnp.sum(ent)

    g = jax.grad(lambda p: loss(lambda p: completion_logprobs(cfg, p, tokens, mask, plen, chunk), p))(params)
    g_ref = jax.grad(lambda p: loss(lambda p: _full_logprobs(plain_cfg, p, tokens, mask, plen), p))(params)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-3)


def test_pool_step_matches_decode_over_a_contiguous_cache():
    """A paged pool (pages scattered, other slots' pages interleaved, free pages holding
    garbage) attends like the contiguous decode path over each row's own slots."""
    from dsrl_jax.models.attention import PoolKV, decode, pool_step

    rs = np.random.RandomState(0)
    g, s, hkv, h, d, p, n = 2, 3, 2, 4, 8, 4, 16
    lengths = np.array([[5, 11, 1], [8, 3, 12]])  # tokens already written per slot
    start = np.array([[0, 2, 0], [1, 0, 4]])  # left padding: first visible token
    k_pool = rs.randn(g, n, hkv, d, p).astype(np.float32)  # garbage everywhere
    v_pool = rs.randn(g, n, hkv, p, d).astype(np.float32)
    table = np.zeros((g, s, 4), np.int32)
    owner = np.full((g, n), s, np.int32)
    base = np.zeros((g, n), np.int32)
    free = [list(rs.permutation(np.arange(1, n))) for _ in range(g)]
    for gi in range(g):
        for si in range(s):
            for j in range(lengths[gi, si] // p + 1):
                page = free[gi].pop()
                table[gi, si, j], owner[gi, page], base[gi, page] = page, si, j * p
    q = rs.randn(g * s, 1, h, d).astype(np.float32)
    k_new = rs.randn(g * s, 1, hkv, d).astype(np.float32)
    v_new = rs.randn(g * s, 1, hkv, d).astype(np.float32)
    pos = lengths.reshape(-1).astype(np.int32)
    pool = PoolKV(jnp.asarray(k_pool), jnp.asarray(v_pool), jnp.asarray(table), jnp.asarray(owner),
                  jnp.asarray(base), jnp.asarray(start))
    out, (kp, vp) = pool_step(jnp.asarray(q), jnp.asarray(k_new), jnp.asarray(v_new), pool, jnp.asarray(pos))
    for b in range(g * s):
        gi, si = divmod(b, s)
        t = lengths[gi, si] + 1
        keys = np.stack([np.asarray(kp)[gi, table[gi, si, i // p], :, :, i % p] for i in range(t)], -1)
        vals = np.stack([np.asarray(vp)[gi, table[gi, si, i // p], :, i % p, :] for i in range(t)], -2)
        np.testing.assert_array_equal(keys[..., -1], k_new[b, 0])  # the new token was written
        mask = (np.arange(t) >= start[gi, si])[None]
        ref = decode(jnp.asarray(q[b:b + 1]), [jnp.asarray(keys[None])], [jnp.asarray(vals[None])],
                     jnp.asarray(mask), t - 1)
        np.testing.assert_allclose(np.asarray(out[b]), np.asarray(ref[0]), atol=1e-5)
