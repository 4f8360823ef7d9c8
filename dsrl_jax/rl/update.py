"""The jitted, sharded GRPO update: micro-batched gradients, AdamW, non-finite guard.

    state = init_state(params, tx, rng)                        # params, opt_state, step, rng
    step_fn = make_train_step(cfg, loss_cfg, tx, state_shardings, batch_shardings, prompt_len, chunk)
    state, metrics = step_fn(state, batch)                      # batch: a rl.batch.TrainBatch

A batch holds one optimizer step's sequences, reshaped [num_micro, micro_batch, ...]; the
step scans over micro-batches, summing gradients whose loss is normalised by the whole
mini-batch (`normalizer`), so accumulation is exact. A non-finite loss or gradient skips
the update (parameters and optimizer state unchanged) and is reported in the metrics.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from dsrl_jax import parallel
from dsrl_jax.models.config import Qwen2Config
from dsrl_jax.rl import grpo
from dsrl_jax.rl.batch import TrainBatch
from dsrl_jax.rl.logprobs import completion_logprobs


def make_optimizer(optim: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, Any]:
    """AdamW with linear warmup, then constant or cosine decay; global-norm clipping."""
    warmup = max(int(optim.warmup_steps), 0)
    if optim.schedule == "constant":
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, optim.lr, max(warmup, 1)), optax.constant_schedule(optim.lr)], [warmup])
    elif optim.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, optim.lr, max(warmup, 1), max(int(optim.decay_steps), warmup + 1), optim.lr * optim.final_lr_frac)
    else:
        raise ValueError(f"optim.schedule: unknown {optim.schedule!r} (constant | cosine)")
    if warmup == 0 and optim.schedule == "constant":
        schedule = optax.constant_schedule(optim.lr)
    chain = []
    if optim.grad_clip:
        chain.append(optax.clip_by_global_norm(optim.grad_clip))
    chain.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay))
    return optax.chain(*chain), schedule


def init_state(params, tx, rng) -> dict:
    """Params, optimizer state, step and RNG. Params-shaped parts of the optimizer state
    (Adam's moments) are created in the parameters' shardings (left to the compiler, the
    zeros come out replicated on every device); its other leaves are replicated."""
    out_shardings = None
    leaf = jax.tree.leaves(params)[0]
    if isinstance(getattr(leaf, "sharding", None), NamedSharding):
        replicated = NamedSharding(leaf.sharding.mesh, P())
        out_shardings = optax.tree_map_params(
            tx, lambda _, p: p.sharding, jax.eval_shape(tx.init, params), params,
            transform_non_params=lambda _: replicated)
    opt_state = jax.jit(tx.init, out_shardings=out_shardings)(params)
    step = jnp.zeros((), jnp.int32)
    if out_shardings is not None:
        # Step and key built under jit, replicated over the mesh: a key made on one local
        # device is not a global array on a multi-process mesh. The key's data goes in as
        # host numpy (the same on every process).
        if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
            impl, data = jax.random.key_impl(rng), np.asarray(jax.random.key_data(rng))
            make = lambda d: (jnp.zeros((), jnp.int32), jax.random.wrap_key_data(d, impl=impl))
        else:
            data, make = np.asarray(rng), lambda d: (jnp.zeros((), jnp.int32), d)
        step, rng = jax.jit(make, out_shardings=(replicated, replicated))(data)
    return {"params": params, "opt_state": opt_state, "step": step, "rng": rng}


def state_shardings(state: dict, mesh) -> dict:
    """Each leaf keeps its NamedSharding on `mesh` (params, Adam moments); anything else
    (step counters, RNG key) is replicated over the mesh."""
    def one(x):
        s = getattr(x, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh == mesh:
            return s
        return NamedSharding(mesh, P())
    return jax.tree.map(one, state)


def batch_shardings(mesh, batch_axes, example: TrainBatch) -> TrainBatch:
    """[num_micro, micro_batch, ...] arrays (or ShapeDtypeStructs): the micro-batch dimension
    over the data axes; the normalizer replicated."""
    def one(x):
        if jnp.ndim(x) < 2:
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, P(None, batch_axes, *([None] * (jnp.ndim(x) - 2))))
    return jax.tree.map(one, example)


def _micro_loss(params, mb, *, cfg, loss_cfg, prompt_len, chunk, normalizer, temperature=1.0):
    lp, ent = completion_logprobs(cfg, params, mb.tokens, mb.kv_mask, prompt_len, chunk, temperature,
                                  entropy_grad=bool(loss_cfg.entropy_coef))
    loss, metrics = grpo.grpo_loss(lp, mb.old_logprobs, mb.ref_logprobs, mb.advantages, mb.loss_mask, mb.truncated,
                                   ent, loss_cfg, normalizer=normalizer)
    return loss, metrics


_SUMMED_METRICS = ("loss", "pg_loss", "kl", "entropy", "num_tokens")


def train_step(state: dict, batch: TrainBatch, *, cfg: Qwen2Config, loss_cfg, tx, prompt_len: int, chunk: int,
               temperature: float = 1.0):
    params = state["params"]
    normalizer = batch.normalizer
    micro = batch.replace(normalizer=None)
    grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

    def body(carry, mb):
        grads, loss_sum, metric_sums = carry
        (loss, metrics), g = grad_fn(params, mb, cfg=cfg, loss_cfg=loss_cfg, prompt_len=prompt_len,
                                     chunk=chunk, normalizer=normalizer, temperature=temperature)
        # Loss terms are already divided by the whole mini-batch's normalizer: they add up.
        # The rest (clip fractions, ratios) are per-micro-batch means: token-weighted.
        w = metrics["num_tokens"]
        metric_sums = {k: metric_sums[k] + (v if k in _SUMMED_METRICS else v * w) for k, v in metrics.items()}
        return (jax.tree.map(jnp.add, grads, g), loss_sum + loss, metric_sums), None

    first = jax.tree.map(lambda x: x[0], micro)
    metric_shapes = jax.eval_shape(
        lambda: _micro_loss(params, first, cfg=cfg, loss_cfg=loss_cfg, prompt_len=prompt_len, chunk=chunk,
                            normalizer=normalizer, temperature=temperature)[1])
    zeros = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32),
             {k: jnp.zeros(v.shape, v.dtype) for k, v in metric_shapes.items()})
    (grads, loss, sums), _ = jax.lax.scan(body, zeros, micro)

    tokens = jnp.maximum(sums["num_tokens"], 1.0)
    metrics = {k: (v if k in _SUMMED_METRICS else v / tokens) for k, v in sums.items()}
    metrics["loss"] = loss  # the exact mini-batch loss (sum of normalised micro losses)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    metrics.update(grad_norm=grad_norm, skipped=(~finite).astype(jnp.float32))
    new_state = {"params": keep(new_params, params), "opt_state": keep(new_opt, state["opt_state"]),
                 "step": state["step"], "rng": state["rng"]}
    return new_state, metrics


def _pinned_to(shardings_tree):
    """`parallel.pinned` arguments from a batch sharding tree: its mesh and batch axes."""
    s = shardings_tree.tokens
    return s.mesh, s.spec[1] if len(s.spec) > 1 else None


def make_train_step(cfg, loss_cfg, tx, state_shardings, batch_sharding_tree: TrainBatch, prompt_len, chunk,
                    temperature: float = 1.0):
    """The jitted update with explicit in/out shardings; the state is donated. Log-probs are
    those of softmax(logits / temperature), the rollout's sampling distribution. Activations'
    batch dimension follows the micro-batch dimension of `batch_sharding_tree` (parallel.pinned).
    Each call makes a new jitted function: the caller keeps it (Trainer caches its steps)."""
    step = lambda state, batch: train_step(state, batch, cfg=cfg, loss_cfg=loss_cfg, tx=tx,
                                           prompt_len=prompt_len, chunk=chunk, temperature=temperature)
    return jax.jit(parallel.pinned(step, *_pinned_to(batch_sharding_tree)),
                   in_shardings=(state_shardings, batch_sharding_tree),
                   out_shardings=(state_shardings, None), donate_argnums=(0,))


def make_logprob_fn(cfg, prompt_len, chunk, temperature: float = 1.0, batch_sharding=None):
    """Jitted [N, M] completion log-probs of softmax(logits / temperature), no gradients
    (old / reference policy). `batch_sharding`: the [N, P + M] inputs' NamedSharding, to which
    activations' batch dimension is pinned (parallel.pinned); None: left to the compiler.
    Each call makes a new jitted function: the caller keeps it."""
    fn = lambda params, tokens, kv_mask: completion_logprobs(cfg, params, tokens, kv_mask, prompt_len, chunk,
                                                             temperature)[0]
    if batch_sharding is not None:
        fn = parallel.pinned(fn, batch_sharding.mesh, batch_sharding.spec[0])
    return jax.jit(fn)
