"""The rollout -> update batch: `TrainBatch`, how graded groups become one, and the
mini/micro-batch rule.

    plan = batch_plan(n_sequences, config.train, data_parallel_size)   # mini, micro, updates
    batch, prompt_len = train_batch(groups, num_groups, std_mode, eps, max_prompt_len=..., max_response_len=...)
    batch = batch.replace(old_logprobs=..., ref_logprobs=...)  # when the loss needs them
    for mb in minibatches(batch, plan, loss_cfg, rng):         # [num_micro, micro, ...] + normalizer
        state, metrics = step_fn(state, to_device(mb, shardings))

`train_batch` holds all sequences of one rollout, [N, ...]; `minibatches` yields the same
type reshaped [num_micro, micro_batch, ...], one per optimizer update, with `normalizer` set.
`abstract_batch` gives one update's batch as ShapeDtypeStructs (the memory planner
compiles the update from it), from the same field table (`FIELDS`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np

from dsrl_jax import parallel
from dsrl_jax.rl import grpo
from dsrl_jax.sampling import bucket

# name: (dtype, trailing dimensions after the sequence dimensions; "T" = prompt + response, "M" = response)
FIELDS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "tokens": (np.int32, ("T",)),
    "kv_mask": (np.bool_, ("T",)),
    "loss_mask": (np.float32, ("M",)),
    "truncated": (np.bool_, ()),
    "advantages": (np.float32, ()),
    "old_logprobs": (np.float32, ("M",)),
    "ref_logprobs": (np.float32, ("M",)),
}


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=[*FIELDS, "normalizer"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class TrainBatch:
    """Arrays [..., *trailing] where `...` is [N] (a rollout) or [num_micro, micro_batch] (one update)."""

    tokens: Any  # [..., P + M] int32: left-padded prompt (P, bucketed), then the completion (M, bucketed)
    kv_mask: Any  # [..., P + M] bool: real tokens
    loss_mask: Any  # [..., M] float32: 1 on completion tokens
    truncated: Any  # [...] bool: the completion hit the length limit
    advantages: Any  # [...] float32: group-relative (grpo.group_advantages)
    old_logprobs: Any = None  # [..., M] float32: the policy before this batch's updates (several updates only)
    ref_logprobs: Any = None  # [..., M] float32: the frozen reference policy (kl_coef > 0)
    normalizer: Any = None  # scalar float32: grpo.loss_normalizer of the whole mini-batch (`minibatches`)

    def replace(self, **changes) -> "TrainBatch":
        return dataclasses.replace(self, **changes)


def _shape(name: str, lead: tuple[int, ...], prompt_len: int, response_len: int) -> tuple[int, ...]:
    sizes = {"T": prompt_len + response_len, "M": response_len}
    return lead + tuple(sizes[d] for d in FIELDS[name][1])


def abstract_batch(num_micro: int, micro_batch: int, prompt_len: int, response_len: int, *,
                   old_logprobs: bool, ref_logprobs: bool) -> TrainBatch:
    """One update's batch as ShapeDtypeStructs: [num_micro, micro_batch, ...] and the normalizer."""
    sds = lambda name: jax.ShapeDtypeStruct(_shape(name, (num_micro, micro_batch), prompt_len, response_len),
                                            FIELDS[name][0])
    return TrainBatch(*(sds(k) for k in ("tokens", "kv_mask", "loss_mask", "truncated", "advantages")),
                      old_logprobs=sds("old_logprobs") if old_logprobs else None,
                      ref_logprobs=sds("ref_logprobs") if ref_logprobs else None,
                      normalizer=jax.ShapeDtypeStruct((), np.float32))


# ---- the mini/micro-batch rule ----------------------------------------------------------


class BatchPlanError(ValueError):
    """A train batch size that does not fit; `field` is the config field to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    sequences: int  # one rollout batch (prompts x group size)
    mini: int  # sequences per optimizer update
    micro: int  # sequences per forward/backward; gradients accumulate over mini // micro of them
    epochs: int  # passes over the rollout batch

    @property
    def num_micro(self) -> int:
        return self.mini // self.micro

    @property
    def num_updates(self) -> int:
        return self.epochs * (self.sequences // self.mini)

    @property
    def multi_update(self) -> bool:
        """More than one update per rollout batch: the loss needs the old policy's log-probs."""
        return self.epochs > 1 or self.mini < self.sequences


def batch_plan(n_sequences: int, train, data_parallel: int) -> BatchPlan:
    """The mini/micro-batch sizes of `train` (the config's `train` block) for a rollout of
    `n_sequences` on `data_parallel` devices. train.mini_batch_size 0: the whole batch, one
    update per epoch; train.micro_batch_size -1: one sequence per data-parallel device (the
    paper configs: 8 on a v5e-8, 4 on a v4-8). Raises BatchPlanError when they do not divide."""
    mini = int(train.mini_batch_size) or n_sequences
    if n_sequences % mini:
        raise BatchPlanError("train.mini_batch_size", f"{mini} does not divide the rollout batch of "
                                                      f"{n_sequences} sequences")
    m = int(train.micro_batch_size)
    micro = min(data_parallel if m == -1 else m, mini)
    if micro < 1 or mini % micro:
        raise BatchPlanError("train.micro_batch_size", f"{micro} does not divide the mini-batch of {mini}")
    if micro % data_parallel:
        raise BatchPlanError("train.micro_batch_size", f"micro-batch of {micro} sequences does not divide by "
                                                       f"the data-parallel size {data_parallel}")
    if int(train.epochs_per_batch) < 1:
        raise BatchPlanError("train.epochs_per_batch", "must be >= 1")
    return BatchPlan(n_sequences, mini, micro, int(train.epochs_per_batch))


# ---- building and splitting -------------------------------------------------------------


def train_batch(groups: Sequence, num_groups: int, std_mode: str, eps: float, *, min_prompt_bucket: int = 16,
                min_response_bucket: int = 16, max_prompt_len: int | None = None,
                max_response_len: int | None = None) -> tuple[TrainBatch, int]:
    """(TrainBatch [num_groups * G, ...], prompt length P) from graded groups (rl.rollout.Group).
    Pads to `num_groups` groups with fully masked rows (dynamic sampling may find fewer
    informative groups than asked). Lengths are bucketed (sampling.bucket) and capped at
    the stage's limits when given. Advantages: `grpo.group_advantages(std_mode, eps)`."""
    g = len(groups[0].rewards)
    plen = bucket(max(len(x.prompt_ids) for x in groups), min_prompt_bucket, max_prompt_len)
    mlen = bucket(max(int(x.lengths.max()) for x in groups), min_response_bucket, max_response_len)
    n = num_groups * g
    tokens, kv_mask, loss_mask, truncated = (np.zeros(_shape(k, (n,), plen, mlen), FIELDS[k][0])
                                             for k in ("tokens", "kv_mask", "loss_mask", "truncated"))
    rewards = np.zeros((n,), np.float32)
    for i, grp in enumerate(groups[:num_groups]):
        p = grp.prompt_ids
        for j in range(g):
            row, length = i * g + j, int(grp.lengths[j])
            tokens[row, plen - len(p):plen] = p
            kv_mask[row, plen - len(p):plen + length] = True
            tokens[row, plen:plen + length] = grp.tokens[j, :length]
            loss_mask[row, :length] = 1.0
            truncated[row] = grp.truncated[j]
            rewards[row] = grp.rewards[j]
    # Rows past the last real group: no tokens in the loss, no attention garbage (one token).
    kv_mask[len(groups) * g:, plen - 1] = True
    advantages = np.asarray(grpo.group_advantages(rewards, g, std_mode=std_mode, eps=eps)).astype(np.float32)
    return TrainBatch(tokens, kv_mask, loss_mask, truncated, advantages), plen


def minibatches(batch: TrainBatch, plan: BatchPlan, loss_cfg, rng: np.random.Generator | None = None):
    """One pass over `batch`: a TrainBatch [plan.num_micro, plan.micro, ...] per optimizer update
    (rows in `rng`'s order, or in order), with its mini-batch's loss normalizer."""
    n = batch.tokens.shape[0]
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, plan.mini):
        idx = order[start:start + plan.mini]
        mb = jax.tree.map(lambda v: v[idx].reshape(plan.num_micro, plan.micro, *v.shape[1:]),
                          batch.replace(normalizer=None))
        normalizer = grpo.loss_normalizer(mb.loss_mask.reshape(-1, mb.loss_mask.shape[-1]),
                                          mb.truncated.reshape(-1), loss_cfg)
        yield mb.replace(normalizer=np.asarray(jax.device_get(normalizer), np.float32))


def to_device(tree, shardings):
    """Host arrays (the same on every process) -> global arrays in `shardings`."""
    return jax.tree.map(parallel.to_global, tree, shardings)
