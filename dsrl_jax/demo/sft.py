"""Supervised warm start for the demo: next-token training on prompt + worked solution.

GRPO can only improve a policy that sometimes succeeds, so the demo first teaches a tiny
randomly initialised Qwen2 the answer format and most of the arithmetic facts. The loss
covers the solution tokens and the final EOS only (the prompt is given, not predicted),
exactly the tokens the policy will later generate. Training is one jitted step over
on-device data; batches are drawn from a key folded with the step number, so the result is
a function of (config, records, steps, batch_size, lr, seed).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dsrl_jax.demo.task import solution
from dsrl_jax.demo.tokenizer import CharTokenizer
from dsrl_jax.models import hf, qwen2
from dsrl_jax.models.config import Qwen2Config


def demo_model_config(vocab_size: int, *, bos_token_id: int = 1, eos_token_id: int = 2,
                      **overrides) -> Qwen2Config:
    """The tiny Qwen2 the demo trains (~0.1M parameters, fp32, tied embeddings).

    Big enough to learn the task's ~350 facts; small because XLA on a CPU runs such tiny
    matmuls at a few GFLOP/s (a 32-sequence training step costs ~0.1-0.2 CPU-seconds), and
    the whole demo, GRPO included, has minutes on two cores.
    """
    base = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_layers=2,
                num_heads=4, num_kv_heads=2, tie_word_embeddings=True, max_position_embeddings=256,
                bos_token_id=bos_token_id, eos_token_id=eos_token_id, dtype="float32",
                param_dtype="float32", attention_impl="plain")
    return Qwen2Config(**{**base, **overrides})


def save_model(out_dir: str, cfg: Qwen2Config, params, tokenizer: CharTokenizer | None = None) -> str:
    """A demo model as a Hugging Face checkpoint directory (config.json, safetensors,
    generation_config.json and the character tokenizer's files): a policy spec that
    `load_policy`, `model.init`, a scoring proxy and `dsrl_jax.evaluate` all take by name.
    `out_dir` is local; with several processes each calls this and process 0 writes.
    Returns `out_dir`."""
    hf.save_params(out_dir, cfg, params)
    if jax.process_index() == 0:
        (tokenizer or CharTokenizer()).save_pretrained(out_dir)
    return out_dir


def sft_batch(tokenizer, records: Sequence[dict], length: int | None = None):
    """(tokens int32 [N, L], loss mask float32 [N, L]) for prompt + solution + EOS, right-padded.

    mask[i, t] = 1 where token t+1 is a solution token (or the EOS): the positions whose
    next-token prediction is trained. L is `length`, or the longest sequence rounded up to 16.
    """
    seqs, starts = [], []
    for rec in records:
        prompt = tokenizer.format_prompt(rec["problem"])
        seqs.append(prompt + tokenizer.encode(solution(rec)) + [tokenizer.eos_token_id])
        starts.append(len(prompt))
    longest = max(len(s) for s in seqs)
    length = length or -(-longest // 16) * 16
    if longest > length:
        raise ValueError(f"a sequence has {longest} tokens, more than length={length}")
    tokens = np.full((len(seqs), length), tokenizer.pad_token_id, np.int32)
    mask = np.zeros((len(seqs), length), np.float32)
    for i, (seq, start) in enumerate(zip(seqs, starts)):
        tokens[i, : len(seq)] = seq
        mask[i, start - 1 : len(seq) - 1] = 1.0
    return tokens, mask


def _loss(cfg: Qwen2Config, params, tokens, mask, label_smoothing: float = 0.0):
    """Mean next-token cross-entropy over the masked positions (against smoothed labels)."""
    valid = tokens != 0  # PAD is id 0 in CharTokenizer
    valid = valid.at[:, 0].set(True)
    logits, _ = qwen2.forward(cfg, params, tokens, qwen2.positions_from_mask(valid), valid)
    labels = jax.nn.one_hot(tokens[:, 1:], cfg.vocab_size)
    if label_smoothing:
        labels = optax.smooth_labels(labels, label_smoothing)
    ce = optax.softmax_cross_entropy(logits[:, :-1], labels)
    m = mask[:, :-1]
    return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)


def sft_loss(cfg: Qwen2Config, params, tokenizer, records: Sequence[dict]) -> float:
    """The warm start's loss of `params` on `records` (for tests and reports)."""
    tokens, mask = sft_batch(tokenizer, records)
    return float(jax.jit(_loss, static_argnums=0)(cfg, params, tokens, mask))


def lr_schedule(lr: float, steps: int) -> optax.Schedule:
    """A short linear warm-up, then cosine decay to lr / 10."""
    warmup = max(1, min(100, steps // 10))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), lr * 0.1)


# AdamW with the learning rate as state (fed each step), so one compiled step serves every
# (lr, steps) and repeated warm starts in a process compile once.
_OPT = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adamw)(
    learning_rate=0.0, b1=0.9, b2=0.98, weight_decay=0.01))


@functools.partial(jax.jit, static_argnames=("cfg", "batch_size", "label_smoothing"), donate_argnums=(1, 2))
def _train_step(cfg, params, opt_state, tokens, mask, key, step, lr, *, batch_size, label_smoothing):
    idx = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, tokens.shape[0])
    loss, grads = jax.value_and_grad(_loss, argnums=1)(cfg, params, tokens[idx], mask[idx], label_smoothing)
    opt_state[1].hyperparams["learning_rate"] = lr
    updates, opt_state = _OPT.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def warm_start(cfg: Qwen2Config, tokenizer, records: Sequence[dict], *, steps: int,
               batch_size: int = 32, lr: float = 5e-3, seed: int = 0, label_smoothing: float = 0.0,
               params=None, log_every: int = 0, on_log: Callable[[int, float], None] | None = None,
               snapshot_at: int | None = None):
    """Params after `steps` AdamW steps of supervised training on `records`.

    Starts from `params` if given, else `qwen2.init_params(cfg, seed)`. `label_smoothing`
    leaves probability on wrong tokens, i.e. a policy whose greedy answer is often right
    but whose temperature-1 samples slip: the headroom that sharpening by RL recovers (as
    with distilled reasoning models, whose sampled accuracy trails their mode's). Every
    `log_every` steps `on_log(step, loss)` is called (default: print) with the batch loss.
    With `snapshot_at`, returns (final params, a copy of the params after that many steps).
    """
    if params is None:
        params = qwen2.init_params(cfg, seed)
    params = jax.tree.map(jnp.array, params)  # a copy: the step donates its inputs
    tokens, mask = (jnp.asarray(x) for x in sft_batch(tokenizer, records))
    opt_state = _OPT.init(params)
    key, schedule = jax.random.key(seed), lr_schedule(lr, steps)
    on_log = on_log or (lambda s, l: print(f"warm start step {s}/{steps}: loss {l:.4f}", flush=True))
    snapshot = None
    for step in range(steps):
        if snapshot_at is not None and step == snapshot_at:
            snapshot = jax.tree.map(jnp.copy, params)
        params, opt_state, loss = _train_step(
            cfg, params, opt_state, tokens, mask, key, jnp.int32(step), jnp.float32(schedule(step)),
            batch_size=batch_size, label_smoothing=float(label_smoothing))
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            on_log(step + 1, float(loss))
    return params if snapshot_at is None else (params, snapshot)
