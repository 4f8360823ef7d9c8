"""GRPO maths against values worked out by hand with plain Python arithmetic."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsrl_jax.rl import grpo


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def cfg(**kw):
    c = grpo.default_loss_config()
    c.update(kw)
    grpo.validate_loss_config(c)
    return c


# ---------------------------------------------------------------- advantages
REWARDS = [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.3]]


def test_group_advantages_group_std():
    # group 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3)
    s = math.sqrt(1.0 / 3.0)
    a = 0.5 / (s + 1e-6)
    expected = [[a, -a, -a, a], [0] * 4, [0] * 4]
    close(grpo.group_advantages(jnp.array(REWARDS), 4, std_mode="group"), expected)


def test_group_advantages_batch_std():
    r = REWARDS[:2]
    flat = [x for g in r for x in g]
    mean = sum(flat) / 8
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / 7)  # 0.4629
    a = 0.5 / (std + 1e-6)
    close(grpo.group_advantages(jnp.array(r), 4, std_mode="batch"),
          [[a, -a, -a, a], [0] * 4])


def test_group_advantages_none_is_dr_grpo_and_flat_shape_kept():
    flat = jnp.array([x for g in REWARDS for x in g])
    adv = grpo.group_advantages(flat, 4, std_mode="none")
    assert adv.shape == (12,)
    close(adv, [0.5, -0.5, -0.5, 0.5] + [0.0] * 8)


@pytest.mark.parametrize("mode", ["group", "batch", "none"])
def test_equal_groups_give_exact_zero_not_nan(mode):
    r = jnp.array([[0.3, 0.3, 0.3], [0.7, 0.7, 0.7], [0.1, 0.1, 0.1]])
    adv = grpo.group_advantages(r, 3, std_mode=mode)
    assert np.all(np.asarray(adv) == 0.0)


def test_group_stats():
    r = jnp.array([1, 1, 0, 0, 1, 0, 0.5, 0.5])
    st = grpo.group_stats(r, 2)
    close(st["solve_all"], 0.25)
    close(st["solve_none"], 0.5)  # [0, 0] and [0.5, 0.5]: 0.5 is not solved
    close(st["solve_partial"], 0.25)
    assert st["has_variance"].tolist() == [False, False, True, False]


# ---------------------------------------------------------------- policy loss
# (advantage, ratio) per token, with clip_low=0.2, clip_high=0.28 and the expected loss.
CASES = [
    (+1.0, 1.1, -1.1, "none"),     # inside the clip range
    (+1.0, 1.5, -1.28, "high"),    # positive advantage, ratio above 1+clip_high
    (+1.0, 0.5, -0.5, "none"),     # positive advantage below 1-clip_low: not clipped
    (-1.0, 0.5, 0.8, "low"),       # negative advantage, ratio below 1-clip_low
    (-1.0, 1.5, 1.5, "none"),      # negative advantage above 1+clip_high: not clipped
    (-2.0, 0.9, 1.8, "none"),
]


def _case_arrays():
    adv = jnp.array([[c[0] for c in CASES]])
    old = jnp.full((1, len(CASES)), -1.0)
    lp = old + jnp.log(jnp.array([[c[1] for c in CASES]]))
    return lp, old, adv, jnp.ones_like(old)


def test_policy_loss_clip_both_sides():
    lp, old, adv, mask = _case_arrays()
    loss, m = grpo.policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    close(loss[0], [c[2] for c in CASES])
    close(m["clip_frac_high"], 1 / 6)
    close(m["clip_frac_low"], 1 / 6)
    close(m["ratio_mean"], sum(c[1] for c in CASES) / 6)
    k3 = sum(r - 1 - math.log(r) for r in (c[1] for c in CASES)) / 6
    close(m["approx_kl"], k3)


def test_policy_loss_gradient_zero_where_clipped():
    lp, old, adv, mask = _case_arrays()
    g = jax.grad(lambda x: grpo.policy_loss(x, old, adv, mask, clip_low=0.2,
                                            clip_high=0.28)[0].sum())(lp)
    # d(-A r)/d logp = -A r where unclipped, 0 where the clip is active
    expected = [0.0 if c[3] != "none" else -c[0] * c[1] for c in CASES]
    close(g[0], expected)


def test_dual_clip_caps_negative_advantage_loss():
    adv = jnp.array([[-1.0, -1.0, 1.0]])
    old = jnp.zeros((1, 3))
    lp = jnp.log(jnp.array([[4.0, 2.0, 4.0]]))
    loss, m = grpo.policy_loss(lp, old, adv, jnp.ones((1, 3)), dual_clip=3.0)
    # -A r = 4 > 3 capped; 2 < 3 kept; positive advantage: clipped to -(1.2)
    close(loss[0], [3.0, 2.0, -1.2])
    close(m["clip_frac_dual"], 1 / 3)


def test_sequence_and_token_advantages_agree():
    lp, old, _, mask = _case_arrays()
    adv_seq = jnp.array([0.7])
    a, _ = grpo.policy_loss(lp, old, adv_seq, mask)
    b, _ = grpo.policy_loss(lp, old, jnp.full(lp.shape, 0.7), mask)
    close(a, b)


# ---------------------------------------------------------------- KL, entropy
@pytest.mark.parametrize("lp,ref", [(-1.0, -1.5), (-2.0, -1.0)])
def test_kl_estimators(lp, ref):
    log_r = lp - ref
    expected = {"k1": log_r, "k2": 0.5 * log_r ** 2, "k3": math.exp(-log_r) - 1 + log_r}
    assert set(grpo.KL_ESTIMATORS) == set(expected)
    for kind, want in expected.items():
        close(grpo.kl_penalty(jnp.array(lp), jnp.array(ref), kind), want)


def test_kl_estimator_expected_gradients_match_exact_kl_gradients():
    """On a small categorical, E_{x~pi}[grad k(x)] with the samples held fixed (the loss's
    gradient in expectation) against autodiff of the exact divergences:
    k1 -> 0, k2 -> grad KL(pi||ref), k3 -> grad KL(ref||pi); k1 and k3 values -> KL(pi||ref)."""
    theta = jnp.array([0.3, -1.2, 0.8, 0.0, 2.0])
    ref = jax.nn.log_softmax(jnp.array([1.0, 0.5, -0.7, 0.2, 0.9]))

    def expected(kind, th):  # exact expectation over the 5 outcomes, pi(x) not differentiated
        lp = jax.nn.log_softmax(th)
        weights = jax.lax.stop_gradient(jnp.exp(lp))
        return jnp.sum(weights * grpo.kl_penalty(lp, ref, kind))

    def kl_pi_ref(th):
        lp = jax.nn.log_softmax(th)
        return jnp.sum(jnp.exp(lp) * (lp - ref))

    def kl_ref_pi(th):
        return jnp.sum(jnp.exp(ref) * (ref - jax.nn.log_softmax(th)))

    grad = {k: jax.grad(lambda th, k=k: expected(k, th))(theta) for k in grpo.KL_ESTIMATORS}
    g_rev, g_fwd = jax.grad(kl_pi_ref)(theta), jax.grad(kl_ref_pi)(theta)
    assert float(jnp.abs(g_rev - g_fwd).max()) > 0.05  # the two targets are distinguishable here
    np.testing.assert_allclose(grad["k1"], 0.0, atol=1e-6)
    np.testing.assert_allclose(grad["k2"], g_rev, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad["k3"], g_fwd, rtol=1e-5, atol=1e-6)
    for kind in ("k1", "k3"):  # the values are unbiased estimates of KL(pi||ref)
        np.testing.assert_allclose(expected(kind, theta), kl_pi_ref(theta), rtol=1e-5)
    assert abs(float(expected("k2", theta) - kl_pi_ref(theta))) > 1e-3  # k2's value is biased


def test_entropy_from_logits():
    logits = jnp.array([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    close(grpo.entropy_from_logits(logits), [[math.log(4), 0.0]])


# ---------------------------------------------------------------- aggregation
X = jnp.array([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
M = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], jnp.float32)  # row 2 fully masked


def test_aggregations():
    close(grpo.aggregate(X, M, "token-mean"), (1 + 2 + 3 + 4) / 4)
    close(grpo.aggregate(X, M, "seq-mean-token-mean"), ((6 / 3) + 4) / 2)
    close(grpo.aggregate(X, M, "seq-mean-token-sum-norm", max_len=4), (6 / 4 + 4 / 4) / 2)
    close(grpo.aggregate(X, M, "token-mean", normalizer=10.0), 1.0)
    with pytest.raises(ValueError):
        grpo.aggregate(X, M, "seq-mean-token-sum-norm")


# ---------------------------------------------------------------- grpo_loss
def _batch(seed=0, b=8, t=6):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    lp = -jax.random.uniform(k[0], (b, t), minval=0.1, maxval=3.0)
    old = lp + 0.3 * jax.random.normal(k[1], (b, t))
    ref = lp + 0.3 * jax.random.normal(k[2], (b, t))
    adv = jax.random.normal(k[3], (b,))
    lengths = jax.random.randint(k[4], (b,), 1, t + 1)
    mask = (jnp.arange(t)[None] < lengths[:, None]).astype(jnp.float32)
    ent = jax.random.uniform(k[5], (b, t))
    truncated = jnp.arange(b) % 3 == 0
    return dict(logprobs=lp, old_logprobs=old, ref_logprobs=ref, advantages=adv, mask=mask,
                truncated=truncated, entropies=ent)


def test_grpo_loss_combines_terms():
    d = _batch()
    c = cfg(kl_coef=0.1, entropy_coef=0.01, clip_high=0.28)
    loss, m = grpo.grpo_loss(**d, cfg=c)
    pg, _ = grpo.policy_loss(d["logprobs"], d["old_logprobs"], d["advantages"], d["mask"],
                             clip_low=0.2, clip_high=0.28)
    n = d["mask"].sum()
    kl = (grpo.kl_k3(d["logprobs"], d["ref_logprobs"]) * d["mask"]).sum() / n
    ent = (d["entropies"] * d["mask"]).sum() / n
    close(loss, pg.sum() / n + 0.1 * kl - 0.01 * ent)
    close(m["kl"], kl)
    close(m["entropy"], ent)
    close(m["num_tokens"], n)


def test_truncated_rows_masked_only_when_asked():
    d = _batch()
    keep = ~d["truncated"]
    sub = {k: (v[keep] if k != "truncated" else None) for k, v in d.items()}
    c_on, c_off = cfg(mask_truncated=True), cfg(mask_truncated=False)
    close(grpo.grpo_loss(**d, cfg=c_on)[0], grpo.grpo_loss(**sub, cfg=c_on)[0])
    full_no_trunc = grpo.grpo_loss(**{**d, "truncated": None}, cfg=c_off)[0]
    close(grpo.grpo_loss(**d, cfg=c_off)[0], full_no_trunc)
    assert abs(float(grpo.grpo_loss(**d, cfg=c_on)[0]) - float(full_no_trunc)) > 1e-4
    g = jax.grad(lambda x: grpo.grpo_loss(**{**d, "logprobs": x}, cfg=c_on)[0])(d["logprobs"])
    assert np.all(np.asarray(g)[np.asarray(d["truncated"])] == 0.0)


@pytest.mark.parametrize("agg", list(grpo.LOSS_AGGREGATIONS))
def test_gradient_exactly_zero_at_masked_positions(agg):
    d = _batch()
    pad = d["mask"] == 0
    # padding holds garbage: -inf / huge values must not leak NaN into values or gradients
    d["logprobs"] = jnp.where(pad, -jnp.inf, d["logprobs"])
    d["old_logprobs"] = jnp.where(pad, -jnp.inf, d["old_logprobs"])
    d["ref_logprobs"] = jnp.where(pad, 1e9, d["ref_logprobs"])
    d["entropies"] = jnp.where(pad, jnp.nan, d["entropies"])
    c = cfg(loss_agg=agg, kl_coef=0.1, entropy_coef=0.01, dual_clip=3.0, max_response_len=6)
    loss, m = grpo.grpo_loss(**d, cfg=c)
    assert all(np.isfinite(np.asarray(v)).all() for v in m.values())
    g = jax.grad(lambda x: grpo.grpo_loss(**{**d, "logprobs": x}, cfg=c)[0])(d["logprobs"])
    g = np.asarray(g)
    assert np.all(g[np.asarray(pad)] == 0.0)
    assert np.isfinite(g).all() and np.abs(g[~np.asarray(pad)]).sum() > 0


@pytest.mark.parametrize("agg", list(grpo.LOSS_AGGREGATIONS))
def test_microbatch_losses_sum_to_full_batch(agg):
    d = _batch(seed=1)
    c = cfg(loss_agg=agg, kl_coef=0.1, entropy_coef=0.01, mask_truncated=True,
            max_response_len=6)
    full, _ = grpo.grpo_loss(**d, cfg=c)
    norm = grpo.loss_normalizer(d["mask"], d["truncated"], c)
    micro = [{k: v[i:i + 2] for k, v in d.items()} for i in range(0, 8, 2)]
    f = lambda lp, mb: grpo.grpo_loss(**{**mb, "logprobs": lp}, cfg=c, normalizer=norm)[0]
    close(sum(f(mb["logprobs"], mb) for mb in micro), full)
    g_full = jax.grad(lambda lp: grpo.grpo_loss(**{**d, "logprobs": lp}, cfg=c)[0])(d["logprobs"])
    g_micro = jnp.concatenate([jax.grad(f)(mb["logprobs"], mb) for mb in micro])
    close(g_micro, g_full)
    # Without the global normalizer each micro-batch divides by its own count: wrong sum.
    naive = sum(grpo.grpo_loss(**mb, cfg=c)[0] for mb in micro)
    assert abs(float(naive) - float(full)) > 1e-3


def test_kl_coef_zero_accepts_no_ref_and_jits():
    d = _batch()
    c = cfg(kl_coef=0.0, entropy_coef=0.0)
    loss, m = jax.jit(lambda x: grpo.grpo_loss(**{**x, "ref_logprobs": None,
                                                   "entropies": None}, cfg=c))(d)
    assert "kl" not in m and np.isfinite(float(loss))
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo.grpo_loss(**{**d, "ref_logprobs": None}, cfg=cfg(kl_coef=0.1))


def test_on_policy_old_none_is_plain_policy_gradient():
    d = _batch()
    c = cfg(kl_coef=0.0, entropy_coef=0.0)
    f = lambda lp: grpo.grpo_loss(lp, None, None, d["advantages"], d["mask"], None, None, c)[0]
    n = d["mask"].sum()
    close(f(d["logprobs"]), -(d["advantages"][:, None] * d["mask"]).sum() / n)
    close(jax.grad(f)(d["logprobs"]), -d["advantages"][:, None] * d["mask"] / n)


def test_validate_loss_config_rejects_bad_values():
    for bad in (dict(kl_estimator="k9"), dict(loss_agg="mean"), dict(dual_clip=0.5),
                dict(loss_agg="seq-mean-token-sum-norm"), dict(adv_std_mode="x")):
        c = grpo.default_loss_config()
        c.update(bad)
        with pytest.raises(ValueError):
            grpo.validate_loss_config(c)
