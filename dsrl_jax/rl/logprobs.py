"""Per-token log-probs and entropies of completions, chunked over the sequence.

A [batch, length, vocab] fp32 logits tensor never exists: hidden states are projected to
the vocabulary `chunk` positions at a time inside a rematerialised scan, so the forward
and the backward pass both hold one [batch, chunk, vocab] block at a time. (At vocab
151,936 and 24k tokens the full tensor would be 14 GiB per sequence.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dsrl_jax.models import qwen2
from dsrl_jax.models.config import Qwen2Config


def _chunk_stats(h, w, targets, temperature, entropy_grad=True):
    """h [B, C, E], w [E, V], targets [B, C] -> log p(target), entropy of softmax(logits / T);
    both [B, C] fp32."""
    logits = jnp.einsum("bce,ev->bcv", h, w.astype(h.dtype), preferred_element_type=jnp.float32) / temperature
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    probs = jnp.exp(logits - lse[..., None])
    # The entropy is a metric unless the loss has an entropy term: then no gradient flows
    # through it, and the backward pass skips its [B, C, V] work.
    entropy = lse - jnp.sum(probs * logits, axis=-1)
    if not entropy_grad:
        entropy = jax.lax.stop_gradient(entropy)
    return target_logit - lse, entropy


def completion_logprobs(cfg: Qwen2Config, params, tokens, kv_mask, prompt_len: int, chunk: int = 512,
                        temperature: float = 1.0, entropy_grad: bool = True):
    """Log-probs and entropies [B, M] of the completion tokens under softmax(logits / temperature):
    the distribution the rollout drew them from (top-p / top-k only truncate it), so the
    update's ratios, KL and entropy are those of the sampling policy.

    tokens [B, P + M]: left-padded prompts (P = prompt_len) followed by completions.
    kv_mask [B, P + M]: real tokens (prompt padding False). Position P - 1 + t predicts
    completion token t.
    """
    positions = qwen2.positions_from_mask(kv_mask)
    hidden, _ = qwen2.forward(cfg, params, tokens, positions, kv_mask, return_hidden=True)
    m = tokens.shape[1] - prompt_len
    h = hidden[:, prompt_len - 1 : prompt_len - 1 + m]
    targets = tokens[:, prompt_len:]
    w = qwen2.head_weight(cfg, params)
    c = min(chunk, m)
    while m % c:  # lengths are bucketed to powers of two, so this rarely loops
        c -= 1
    b, e = h.shape[0], h.shape[-1]
    hs = h.reshape(b, m // c, c, e).swapaxes(0, 1)
    ts = targets.reshape(b, m // c, c).swapaxes(0, 1)
    stats = jax.checkpoint(functools.partial(_chunk_stats, entropy_grad=entropy_grad))
    t = jnp.float32(temperature)
    _, (lp, ent) = jax.lax.scan(lambda carry, x: (carry, stats(x[0], w, x[1], t)), None, (hs, ts))
    return lp.swapaxes(0, 1).reshape(b, m), ent.swapaxes(0, 1).reshape(b, m)
