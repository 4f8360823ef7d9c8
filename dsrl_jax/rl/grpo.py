"""GRPO maths: group advantages, clipped policy loss, KL estimators, loss aggregation.

Pure `jnp` functions of arrays, no model code, in the style of Tunix `rl/algo_core.py`:
each variant is one small function plus one registry line (`ADVANTAGE_STD_MODES`,
`KL_ESTIMATORS`, `LOSS_AGGREGATIONS`), chosen by name from the config.

Shapes: B sequences (= prompts x group size G), T response tokens. Per-token arrays are
[B, T]; `mask` is 1 on real response tokens and 0 on padding; `advantages` are [B]
(one per sequence, broadcast over its tokens) or [B, T].

Several updates per batch (PPO-style epochs) need nothing special: pass the policy's
log-probs from before the first update as `old_logprobs` every time (the trainer recomputes
them with the update's own forward, not the sampler's bf16 decoding numbers, which agree
only to rounding), and the ratio exp(logprobs - old_logprobs) moves away from 1 as the
policy moves, which is what the clipping acts on. Pass `old_logprobs=None` for the strictly
on-policy single update (ratio 1, gradient of the plain policy-gradient surrogate).

Micro-batch gradient accumulation: aggregations take an optional `normalizer`. Compute it
once on the whole mini-batch with `loss_normalizer(...)` and pass it to every micro-batch;
then the sum of the micro-batch losses (and gradients) equals the full-batch loss.

Config fields (see `default_loss_config`) are Python values closed over by the jitted
step, not traced: `kl_coef == 0` and `entropy_coef == 0` remove those terms at trace time.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from dsrl_jax import defaults

Array = jax.Array


# ---------------------------------------------------------------- advantages
def _grouped(rewards: Array, group_size: int) -> Array:
    """[B*G] or [B, G] -> [B, G] (float32)."""
    return jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)


# Each maps grouped rewards [N, G] and eps to the divisor of the centred rewards, [N, 1].
def _std_group(r: Array, eps: float) -> Array:
    # Unbiased (ddof=1) like the GRPO reference implementations (TRL, verl, Tunix).
    return jnp.std(r, axis=-1, keepdims=True, ddof=1) + eps


def _std_batch(r: Array, eps: float) -> Array:
    return jnp.full((r.shape[0], 1), jnp.std(r, ddof=1) + eps)


def _std_none(r: Array, eps: float) -> Array:
    # Dr. GRPO: no division, so groups are not re-weighted by their spread.
    return jnp.ones((r.shape[0], 1), r.dtype)


ADVANTAGE_STD_MODES: dict[str, Callable[[Array], Array]] = {
    "group": _std_group,
    "batch": _std_batch,
    "none": _std_none,
}


def group_advantages(rewards: Array, group_size: int, *, std_mode: str = "group",
                     eps: float = 1e-6) -> Array:
    """(r - mean of its group) / scale, scale chosen by `std_mode`; same shape as `rewards`.

    Groups whose rewards are all equal get exactly zero advantage (not eps-amplified
    rounding noise, not NaN): they carry no learning signal.
    """
    r = _grouped(rewards, group_size)
    centred = r - r.mean(axis=-1, keepdims=True)
    adv = centred / ADVANTAGE_STD_MODES[std_mode](r, eps)
    adv = jnp.where(_has_variance(r)[:, None], adv, 0.0)
    return adv.reshape(jnp.shape(rewards))


def _has_variance(r: Array) -> Array:
    return r.max(axis=-1) > r.min(axis=-1)


def group_stats(rewards: Array, group_size: int, *, solved_threshold: float = 1.0) -> dict:
    """Per-batch solve fractions and the mask of groups with non-zero reward variance.

    A sample counts as solved when its reward >= `solved_threshold` (math: 1; code: all
    tests passed). `has_variance` [B] is the filter for dynamic sampling: groups without
    it have zero advantage everywhere and contribute only KL/entropy terms.
    """
    r = _grouped(rewards, group_size)
    solved = (r >= solved_threshold).mean(axis=-1)
    return {
        "solve_none": (solved == 0).mean(),
        "solve_all": (solved == 1).mean(),
        "solve_partial": ((solved > 0) & (solved < 1)).mean(),
        "has_variance": _has_variance(r),
    }


# ---------------------------------------------------------------- policy loss
def _masked_mean(x: Array, mask: Array) -> Array:
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _per_token(adv: Array) -> Array:
    return adv[:, None] if adv.ndim == 1 else adv


def policy_loss(logprobs: Array, old_logprobs: Array | None, advantages: Array, mask: Array, *,
                clip_low: float = 0.2, clip_high: float = 0.2,
                dual_clip: float | None = None) -> tuple[Array, dict]:
    """PPO clipped surrogate per token: max(-A r, -A clip(r, 1-clip_low, 1+clip_high)).

    `clip_high > clip_low` is DAPO's clip-higher (room for low-probability tokens to rise).
    `dual_clip=c > 1` (None or 0: off) additionally caps the loss of negative-advantage tokens at -A c, so a
    huge ratio on a bad token cannot dominate the update. Masked tokens get ratio 1 and
    loss 0, whatever garbage their logprobs hold, and zero gradient.

    Returns ([B, T] loss, metrics): clip fractions (the fraction of valid tokens whose
    gradient the clip removed), mean ratio and approx KL(old || new) (k3 estimator).
    """
    mask = mask.astype(jnp.float32)
    if old_logprobs is None:
        old_logprobs = jax.lax.stop_gradient(logprobs)
    log_ratio = jnp.where(mask > 0, logprobs - old_logprobs, 0.0)
    ratio = jnp.exp(log_ratio)
    adv = _per_token(advantages).astype(jnp.float32)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(unclipped, clipped)
    is_high = (ratio > 1.0 + clip_high) & (adv > 0)
    is_low = (ratio < 1.0 - clip_low) & (adv < 0)
    metrics = {}
    if dual_clip:
        cap = -adv * dual_clip
        is_dual = (adv < 0) & (loss > cap)
        loss = jnp.where(adv < 0, jnp.minimum(loss, cap), loss)
        metrics["clip_frac_dual"] = _masked_mean(is_dual, mask)
    metrics.update(
        clip_frac_high=_masked_mean(is_high, mask),
        clip_frac_low=_masked_mean(is_low, mask),
        ratio_mean=_masked_mean(ratio, mask),
        approx_kl=_masked_mean(jnp.expm1(log_ratio) - log_ratio, mask),  # k3 of KL(old||new)
    )
    return loss * mask, jax.tree.map(jax.lax.stop_gradient, metrics)


# ---------------------------------------------------------------- KL estimators
# Schulman's per-token estimators of KL(pi || ref) from tokens x sampled by pi, with
# log_r = log pi(x) - log ref(x). Their VALUES estimate KL(pi || ref) (k1, k3 unbiased, k2
# biased). Used as a LOSS, the gradient flows through log pi(x) only (the samples are
# fixed), and the expected gradients differ (tests/rl/test_grpo.py checks them exactly):
#   k1: E[grad k1] = E[grad log pi] = 0                       -- no regularisation on average
#   k2: E[grad k2] = E[log_r grad log pi] = grad KL(pi || ref)  -- the reverse KL the value names
#   k3: E[grad k3] = E[(1 - ref/pi) grad log pi] = grad KL(ref || pi)  -- the forward KL
# The default, k3 as in GRPO (DeepSeekMath), therefore pulls the policy toward the
# reference by the gradient of KL(ref || pi), whatever its logged value says.
def kl_k1(logprobs: Array, ref_logprobs: Array) -> Array:
    """log(pi/ref): unbiased value, high variance, can be negative; expected gradient 0."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Array, ref_logprobs: Array) -> Array:
    """0.5 (log(pi/ref))^2: biased value, low variance, >= 0; expected gradient = grad KL(pi||ref)."""
    return 0.5 * jnp.square(logprobs - ref_logprobs)


def kl_k3(logprobs: Array, ref_logprobs: Array) -> Array:
    """ref/pi - 1 - log(ref/pi): unbiased value, low variance, >= 0 (GRPO's choice);
    expected gradient = grad KL(ref||pi)."""
    log_r = ref_logprobs - logprobs
    return jnp.expm1(log_r) - log_r


KL_ESTIMATORS: dict[str, Callable[[Array, Array], Array]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_penalty(logprobs: Array, ref_logprobs: Array, kind: str = "k3") -> Array:
    """Per-token estimate of KL(pi || ref) by the estimator named `kind` (unmasked); its
    gradient as a loss depends on `kind` (see above)."""
    return KL_ESTIMATORS[kind](logprobs, ref_logprobs)


# ---------------------------------------------------------------- entropy
def entropy_from_logits(logits: Array) -> Array:
    """Per-position entropy of softmax(logits) over the last axis, in float32.

    Convenience for the trainer, which calls it on chunks of positions so that full
    [B, T, V] logits never exist at once; `grpo_loss` takes the resulting [B, T].
    """
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -(jnp.exp(logp) * logp).sum(axis=-1)


# ---------------------------------------------------------------- aggregation
# Each aggregation maps ([B, T] per-token values, [B, T] mask) to a scalar. Its
# `normalizer` is what the sum is divided by; left None it is computed from this call's
# mask. Pass the whole mini-batch's value (see `loss_normalizer`) when micro-batching.
def _seq_count(mask: Array) -> Array:
    return jnp.maximum((mask.sum(axis=-1) > 0).sum(), 1).astype(jnp.float32)


def agg_token_mean(x, mask, *, normalizer=None, max_len=None):
    """Sum over all valid tokens / number of valid tokens (DAPO): every token weighs the same."""
    n = jnp.maximum(mask.sum(), 1.0) if normalizer is None else normalizer
    return (x * mask).sum() / n


def agg_seq_mean_token_mean(x, mask, *, normalizer=None, max_len=None):
    """Mean over a sequence's tokens, then mean over sequences (original GRPO).

    Sequences with no valid token (padding rows, masked truncations) are not counted.
    """
    per_seq = (x * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    n = _seq_count(mask) if normalizer is None else normalizer
    return per_seq.sum() / n


def agg_seq_mean_token_sum_norm(x, mask, *, normalizer=None, max_len=None):
    """Sum over a sequence's tokens / constant `max_len`, then mean over sequences (Dr. GRPO).

    The constant removes GRPO's length bias (long wrong answers penalised less per token).
    """
    if not max_len:
        raise ValueError("seq-mean-token-sum-norm needs max_len (cfg.max_response_len)")
    per_seq = (x * mask).sum(-1) / max_len
    n = _seq_count(mask) if normalizer is None else normalizer
    return per_seq.sum() / n


LOSS_AGGREGATIONS = {
    "token-mean": agg_token_mean,
    "seq-mean-token-mean": agg_seq_mean_token_mean,
    "seq-mean-token-sum-norm": agg_seq_mean_token_sum_norm,
}
# What each aggregation divides by by default: valid tokens, or sequences with any.
_NORMALIZERS = {
    "token-mean": lambda m: jnp.maximum(m.sum(), 1.0),
    "seq-mean-token-mean": _seq_count,
    "seq-mean-token-sum-norm": _seq_count,
}


def aggregate(x: Array, mask: Array, kind: str, *, normalizer=None, max_len=None) -> Array:
    return LOSS_AGGREGATIONS[kind](x, mask.astype(jnp.float32), normalizer=normalizer,
                                   max_len=max_len)


# ---------------------------------------------------------------- the GRPO loss
def default_loss_config() -> ml_collections.ConfigDict:
    """Loss hyperparameters: the table dsrl_jax.defaults.LOSS (paper: KL 0.001, entropy 0.001)."""
    return ml_collections.ConfigDict(defaults.LOSS)


def validate_loss_config(cfg) -> None:
    """Raise ValueError on a config that would fail (or silently misbehave) under jit."""
    checks = [
        (cfg.kl_estimator in KL_ESTIMATORS, f"unknown kl_estimator {cfg.kl_estimator!r}"),
        (cfg.loss_agg in LOSS_AGGREGATIONS, f"unknown loss_agg {cfg.loss_agg!r}"),
        (cfg.adv_std_mode in ADVANTAGE_STD_MODES, f"unknown adv_std_mode {cfg.adv_std_mode!r}"),
        (0 <= cfg.clip_low < 1 and cfg.clip_high >= 0, "need 0 <= clip_low < 1, clip_high >= 0"),
        (not cfg.dual_clip or cfg.dual_clip > 1, "dual_clip must be 0 (off) or > 1"),
        (cfg.loss_agg != "seq-mean-token-sum-norm" or cfg.max_response_len,
         "seq-mean-token-sum-norm needs max_response_len"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def effective_mask(mask: Array, truncated: Array | None, cfg) -> Array:
    """Padding mask, with whole rows zeroed for truncated responses if cfg.mask_truncated."""
    mask = mask.astype(jnp.float32)
    if cfg.mask_truncated and truncated is not None:
        mask = mask * (1.0 - truncated.astype(jnp.float32))[:, None]
    return mask


def loss_normalizer(mask: Array, truncated: Array | None, cfg) -> Array:
    """The default normalizer of cfg.loss_agg over a whole mini-batch, for micro-batching."""
    return _NORMALIZERS[cfg.loss_agg](effective_mask(mask, truncated, cfg))


def grpo_loss(logprobs: Array, old_logprobs: Array | None, ref_logprobs: Array | None,
              advantages: Array, mask: Array, truncated: Array | None,
              entropies: Array | None, cfg, *, normalizer=None) -> tuple[Array, dict]:
    """loss = pg + kl_coef * KL(pi || ref) - entropy_coef * entropy, one aggregation for all.

    `truncated` [B] bool (finish reason "length") or None; `ref_logprobs` may be None when
    cfg.kl_coef == 0, `entropies` [B, T] when cfg.entropy_coef == 0 (they are still
    reported as a metric if given). `normalizer`: see module docstring.
    """
    mask = effective_mask(mask, truncated, cfg)
    # Zero the per-token inputs outside the mask: padding may hold -inf or garbage, and
    # `where` (unlike multiplying by the mask) keeps both values and gradients finite.
    clean = lambda x: None if x is None else jnp.where(mask > 0, x, 0.0)
    logprobs, old_logprobs, ref_logprobs, entropies = map(
        clean, (logprobs, old_logprobs, ref_logprobs, entropies))
    agg = lambda x: aggregate(x, mask, cfg.loss_agg, normalizer=normalizer,
                              max_len=cfg.max_response_len)
    pg_tok, metrics = policy_loss(logprobs, old_logprobs, advantages, mask,
                                  clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                  dual_clip=cfg.dual_clip)
    pg = agg(pg_tok)
    loss = pg
    metrics["pg_loss"] = pg
    if cfg.kl_coef:
        if ref_logprobs is None:
            raise ValueError("kl_coef != 0 needs ref_logprobs")
        kl = agg(kl_penalty(logprobs, ref_logprobs, cfg.kl_estimator))
        loss = loss + cfg.kl_coef * kl
        metrics["kl"] = kl
    if entropies is not None:
        ent = agg(entropies)
        metrics["entropy"] = ent
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * ent
    elif cfg.entropy_coef:
        raise ValueError("entropy_coef != 0 needs entropies")
    metrics["loss"] = loss
    metrics["num_tokens"] = mask.sum()
    metrics = {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}
    return loss, metrics
