"""The jitted GRPO update: chunked log-probs, masking, sharded parity, accumulation, NaN guard.

All on the `tiny` preset in fp32 (8 fake CPU devices from conftest):
  * chunked completion log-probs / entropies == a plain full-logits log_softmax;
  * tokens and log-probs at masked positions (prompt padding, completion padding, whole
    truncated rows under mask_truncated) change neither the loss nor the gradients;
  * one train step (two micro-batches) on meshes fsdp=4 x tensor=2 and fsdp=8 equals the
    single-device step (loss and updated params within 1e-5), with really sharded state;
  * two micro-batches equal one micro-batch of the same data;
  * a non-finite loss skips the update (params and optimizer state unchanged, skipped=1).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dsrl_jax import parallel
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import preset
from dsrl_jax.rl import batch as batch_lib
from dsrl_jax.rl import grpo, rollout, update
from dsrl_jax.rl.logprobs import completion_logprobs

CFG = preset("tiny", dtype="float32", param_dtype="float32", remat="none")
RULES = parallel.DEFAULT_RULES
LOGPROBS = jax.jit(completion_logprobs, static_argnums=(0, 4, 5))
_STEPS = {}  # compiled train steps, shared by the tests (compiles dominate their time)


def init_params(seed=0):
    """Random params with random (not zero) biases, like a trained checkpoint's. (With zero
    k_bias the parity check would compare Adam's normalised rounding noise: the gradient
    of the key bias is exactly zero in exact arithmetic, softmax being shift-invariant.)"""
    params = qwen2.init_params(CFG, seed)
    attn = params["layers"]["attn"]
    for i, k in enumerate(("q_bias", "k_bias", "v_bias")):
        attn[k] = 0.02 * jax.random.normal(jax.random.key(100 * seed + i), attn[k].shape, attn[k].dtype)
    return params


def make_groups(num_groups=4, group_size=4, seed=0, max_prompt=12, max_len=16):
    """Synthetic rollout groups: random prompts/completions, some truncated, mixed rewards."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(num_groups):
        prompt = rng.integers(3, CFG.vocab_size, rng.integers(4, max_prompt + 1)).tolist()
        lengths = rng.integers(1, max_len + 1, group_size)
        lengths[0] = max_len  # one length-limited response per group
        tokens = np.zeros((group_size, max_len), np.int32)
        for j, n in enumerate(lengths):
            tokens[j, :n] = rng.integers(3, CFG.vocab_size, n)
        rewards = rng.integers(0, 2, group_size).astype(np.float32)
        rewards[:2] = [0.0, 1.0]  # every group has variance, so advantages are non-zero
        groups.append(rollout.Group({"id": str(i)}, prompt, tokens, lengths, lengths == max_len, rewards,
                                    [], [""] * group_size))
    return groups


def make_batch(num_groups=4, group_size=4, seed=0, old_noise=0.05):
    """A full rollout batch as the trainer builds it (train_batch + old/ref log-probs)."""
    batch, prompt_len = batch_lib.train_batch(make_groups(num_groups, group_size, seed), num_groups, "group", 1e-6)
    lp, _ = LOGPROBS(CFG, init_params(1), batch.tokens, batch.kv_mask, prompt_len, 8)
    rng = np.random.default_rng(seed + 1)
    lp = np.asarray(lp)
    batch = batch.replace(old_logprobs=(lp + old_noise * rng.standard_normal(lp.shape)).astype(np.float32),
                          ref_logprobs=(lp + old_noise * rng.standard_normal(lp.shape)).astype(np.float32))
    return batch, prompt_len


def loss_config(**overrides):
    c = grpo.default_loss_config()
    c.entropy_coef = 0.01  # exercise every term
    c.kl_coef = 0.01
    for k, v in overrides.items():
        c[k] = v
    return c


def to_micro(batch, num_micro, loss_cfg):
    """The trainer's mini-batch layout: [num_micro, micro, ...] plus the normalizer."""
    n = batch.tokens.shape[0]
    return next(batch_lib.minibatches(batch, batch_lib.BatchPlan(n, n, n // num_micro, 1), loss_cfg))


def optimizer():
    optim = ml_collections.ConfigDict(dict(lr=1e-3, schedule="constant", warmup_steps=0, decay_steps=0,
                                           final_lr_frac=0.1, b1=0.9, b2=0.999, eps=1e-8,
                                           weight_decay=0.01, grad_clip=1.0))
    return update.make_optimizer(optim)[0]


def run_step(mesh, mb, loss_cfg, prompt_len, params=None, chunk=8):
    """One jitted train step on `mesh`; returns (state before as numpy, state after, metrics, shardings)."""
    params = init_params(0) if params is None else params
    tx = optimizer()
    shardings = parallel.param_shardings(qwen2.logical_axes(CFG), qwen2.abstract_params(CFG), mesh, RULES)
    state = update.init_state(jax.device_put(params, shardings), tx, jax.random.key(0))
    state_sh = update.state_shardings(state, mesh)
    state = jax.device_put(state, state_sh)
    before = jax.device_get(state["params"])
    batch_axes = parallel.batch_sharding(mesh, 1, RULES).spec[0]
    batch_sh = update.batch_shardings(mesh, batch_axes, mb)
    key = (tuple(mesh.shape.items()), mb.tokens.shape, str(loss_cfg), prompt_len, chunk)
    if key not in _STEPS:
        _STEPS[key] = update.make_train_step(CFG, loss_cfg, tx, state_sh, batch_sh, prompt_len, chunk)
    step = _STEPS[key]
    new_state, metrics = step(state, batch_lib.to_device(mb, batch_sh))
    return before, new_state, jax.device_get(metrics), state_sh


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def max_tree_rel_diff(a, b):
    return max(rel_diff(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def single_device_mesh():
    return parallel.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])


# ------------------------------------------------------------------ chunked log-probs
@pytest.fixture(scope="module")
def full_logits_reference():
    """Log-probs and entropies from the model's full [B, T, V] logits and one log_softmax."""
    batch, plen = make_batch(num_groups=2, group_size=2)
    tokens, kv_mask = jnp.asarray(batch.tokens), jnp.asarray(batch.kv_mask)
    m = tokens.shape[1] - plen
    params = init_params(0)
    logits, _ = jax.jit(qwen2.forward, static_argnums=0)(CFG, params, tokens, qwen2.positions_from_mask(kv_mask),
                                                         kv_mask)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[:, plen - 1:plen - 1 + m]
    ref_lp = jnp.take_along_axis(logp, tokens[:, plen:, None], axis=-1)[..., 0]
    ref_ent = -(jnp.exp(logp) * logp).sum(-1)
    return batch, plen, params, ref_lp, ref_ent


# 16 = the whole completion; 6 does not divide 16 (falls back to 4); 1024 > the length.
@pytest.mark.parametrize("chunk", [4, 6, 16, 1024])
def test_chunked_logprobs_equal_full_log_softmax(full_logits_reference, chunk):
    batch, plen, params, ref_lp, ref_ent = full_logits_reference
    tokens, kv_mask = jnp.asarray(batch.tokens), jnp.asarray(batch.kv_mask)
    m = tokens.shape[1] - plen
    assert m == 16
    lp, ent = LOGPROBS(CFG, params, tokens, kv_mask, plen, chunk)
    assert lp.shape == ent.shape == (tokens.shape[0], m)
    mask = batch.loss_mask > 0
    np.testing.assert_allclose(np.asarray(lp)[mask], np.asarray(ref_lp)[mask], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ent)[mask], np.asarray(ref_ent)[mask], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ masked positions
def _loss_and_grads(params, mb, loss_cfg, prompt_len):
    key = ("grad", str(loss_cfg), prompt_len, mb.tokens.shape)
    if key not in _STEPS:
        _STEPS[key] = jax.jit(jax.value_and_grad(
            lambda p, b: update._micro_loss(p, b, cfg=CFG, loss_cfg=loss_cfg, prompt_len=prompt_len, chunk=8,
                                            normalizer=b.normalizer), has_aux=True))
    (loss, _), grads = _STEPS[key](params, mb)
    return np.asarray(loss), jax.device_get(grads)


@pytest.mark.parametrize("mask_truncated", [False, True])
def test_masked_positions_change_neither_loss_nor_gradients(mask_truncated):
    loss_cfg = loss_config(mask_truncated=mask_truncated)
    batch, plen = make_batch(num_groups=2, group_size=4)
    batch = batch.replace(normalizer=np.asarray(grpo.loss_normalizer(batch.loss_mask, batch.truncated, loss_cfg),
                                                np.float32))
    params = init_params(0)
    loss, grads = _loss_and_grads(params, batch, loss_cfg, plen)
    assert np.isfinite(loss) and loss != 0

    rng = np.random.default_rng(7)
    garbled = jax.tree.map(np.copy, batch)
    kv = batch.kv_mask
    # Prompt left-padding and completion padding: kv_mask False.
    pad = ~kv
    assert pad[:, :plen].any() and pad[:, plen:].any()
    garbled.tokens[pad] = rng.integers(3, CFG.vocab_size, pad.sum())
    comp_pad = batch.loss_mask == 0
    for k in ("old_logprobs", "ref_logprobs"):
        getattr(garbled, k)[comp_pad] = rng.choice([np.nan, np.inf, -np.inf, 123.0], comp_pad.sum())
    loss2, grads2 = _loss_and_grads(params, garbled, loss_cfg, plen)
    assert loss2 == loss
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
        np.testing.assert_array_equal(a, b)

    # Truncated responses: masked by stage 2's mask_truncated, so their completion tokens
    # (real, attended tokens) and log-probs must not matter then -- and must otherwise.
    trunc = np.flatnonzero(batch.truncated)
    assert len(trunc)
    garbled2 = jax.tree.map(np.copy, garbled)
    comp = garbled2.tokens[:, plen:]
    comp[trunc] = rng.integers(3, CFG.vocab_size, comp[trunc].shape)
    garbled2.old_logprobs[trunc] += 1.0
    garbled2.ref_logprobs[trunc] -= 1.0
    loss3, grads3 = _loss_and_grads(params, garbled2, loss_cfg, plen)
    if mask_truncated:
        assert loss3 == loss
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads3)):
            np.testing.assert_array_equal(a, b)
    else:
        assert loss3 != loss


# ------------------------------------------------------------------ sharded parity
@pytest.fixture(scope="module")
def parity_data():
    loss_cfg = loss_config()
    batch, plen = make_batch(num_groups=4, group_size=4)  # 16 sequences
    mb = to_micro(batch, 2, loss_cfg)  # two micro-batches of 8: gradient accumulation
    assert mb.tokens.shape[:2] == (2, 8)
    ref = run_step(single_device_mesh(), mb, loss_cfg, plen)
    return loss_cfg, batch, plen, mb, ref


@pytest.mark.parametrize("mesh_shape,embed_spec", [
    ({"fsdp": 4, "tensor": 2}, P("tensor", "fsdp")),
    pytest.param({"fsdp": 8}, P(None, "fsdp"), marks=pytest.mark.slow),
], ids=["fsdp4xtensor2", "fsdp8"])
def test_sharded_step_matches_single_device(parity_data, mesh_shape, embed_spec):
    loss_cfg, _, plen, mb, (before1, state1, metrics1, _) = parity_data
    mesh = parallel.make_mesh(mesh_shape)
    assert mesh.devices.size == 8
    before, state, metrics, state_sh = run_step(mesh, mb, loss_cfg, plen)

    # The state really is sharded over the mesh, before and after the step.
    for tree in (state_sh, jax.tree.map(lambda x: x.sharding, state)):
        assert tree["params"]["embed"].spec == embed_spec
        adam = tree["opt_state"][1][0]  # (clip, (adam, wd, lr schedule))
        assert adam.mu["embed"].spec == adam.nu["embed"].spec == embed_spec  # moments sharded like params
    leaves = [x for x in jax.tree.leaves(state["params"])]
    assert all(x.sharding.mesh.devices.size == 8 for x in leaves)
    sharded = [x for x in leaves if not x.sharding.is_fully_replicated]
    assert len(sharded) >= len(leaves) // 2, [x.sharding.spec for x in leaves]
    assert all(len(x.addressable_shards) == 8 for x in leaves)
    emb = state["params"]["embed"]
    assert emb.addressable_shards[0].data.size == emb.size // 8

    assert metrics["skipped"] == 0 and metrics1["skipped"] == 0
    assert rel_diff(metrics["loss"], metrics1["loss"]) <= 1e-5
    assert rel_diff(metrics["grad_norm"], metrics1["grad_norm"]) <= 1e-5
    p1, p = jax.device_get(state1["params"]), jax.device_get(state["params"])
    assert max_tree_rel_diff(p, p1) <= 1e-5
    # The update itself (not only the parameters it is added to) agrees closely.
    d1 = jax.tree.map(np.subtract, p1, before1)
    d = jax.tree.map(np.subtract, p, before)
    assert max_tree_rel_diff(d, d1) <= 1e-3
    assert max(float(np.abs(x).max()) for x in jax.tree.leaves(d1)) > 1e-4  # it did move


def test_two_micro_batches_equal_one(parity_data):
    loss_cfg, batch, plen, mb2, (_, state2, metrics2, _) = parity_data
    mb1 = to_micro(batch, 1, loss_cfg)
    assert mb1.tokens.shape[:2] == (1, 16)
    _, state1, metrics1, _ = run_step(single_device_mesh(), mb1, loss_cfg, plen)
    for k in ("loss", "pg_loss", "kl", "entropy", "grad_norm", "num_tokens", "ratio_mean", "approx_kl",
              "clip_frac_high", "clip_frac_low"):
        assert rel_diff(metrics2[k], metrics1[k]) <= 1e-5, k
    assert max_tree_rel_diff(jax.device_get(state2["params"]), jax.device_get(state1["params"])) <= 1e-5


# ------------------------------------------------------------------ non-finite guard
def test_non_finite_loss_skips_update():
    loss_cfg = loss_config()
    batch, plen = make_batch(num_groups=4, group_size=4)  # the parity test's shapes: no new compile
    batch.advantages[1] = np.nan
    mb = to_micro(batch, 2, loss_cfg)
    mesh = parallel.make_mesh({"fsdp": 4, "tensor": 2})
    params = init_params(0)
    tx = optimizer()
    before_opt = jax.device_get(jax.jit(tx.init)(params))
    before, state, metrics, _ = run_step(mesh, mb, loss_cfg, plen, params=params)
    assert metrics["skipped"] == 1.0
    assert not np.isfinite(metrics["loss"])
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state["params"]))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(before_opt), jax.tree.leaves(jax.device_get(state["opt_state"]))):
        np.testing.assert_array_equal(a, b)

    # The same batch without the NaN updates.
    batch.advantages[1] = 0.5
    _, state, metrics, _ = run_step(mesh, to_micro(batch, 2, loss_cfg), loss_cfg, plen, params=params)
    assert metrics["skipped"] == 0.0 and np.isfinite(metrics["loss"])
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state["params"]))))
