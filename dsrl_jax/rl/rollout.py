"""Groups of a rollout and the training batch they make.

`dsrl_jax.policy.rollout` samples, decodes and grades; here a `Group` is one prompt with
its G sampled completions and their rewards (host numpy).
`assemble` pads a list of groups into the fixed-shape arrays the update consumes:

    tokens [N, P + M]   left-padded prompt (P, bucketed) then the completion (M, bucketed)
    kv_mask [N, P + M]  real tokens; loss_mask [N, M] completion tokens; truncated [N]
    advantages [N]      group-relative (rl.grpo)
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from dsrl_jax import parallel
from dsrl_jax.policy import Rollout
from dsrl_jax.rl import grpo
from dsrl_jax.sampling import bucket


@dataclasses.dataclass
class Group:
    record: dict
    prompt_ids: list[int]
    tokens: np.ndarray  # [G, M] completion tokens (pad after the end)
    lengths: np.ndarray  # [G]
    truncated: np.ndarray  # [G] bool: hit the length limit
    rewards: np.ndarray  # [G] float32
    infos: list[dict]
    responses: list[str]

    @property
    def has_variance(self) -> bool:
        return float(self.rewards.max()) > float(self.rewards.min())


def groups_of(ro: Rollout) -> list[Group]:
    """One Group per prompt of a graded Rollout."""
    g = ro.n
    return [Group(rec, ro.prompt_ids[i], ro.tokens[i * g:(i + 1) * g], ro.lengths[i * g:(i + 1) * g],
                  ro.truncated[i * g:(i + 1) * g], ro.rewards[i * g:(i + 1) * g], ro.infos[i * g:(i + 1) * g],
                  ro.texts[i * g:(i + 1) * g])
            for i, rec in enumerate(ro.records)]


def generation_metrics(ro: Rollout) -> dict:
    return {"time/generate": ro.seconds,
            "perf/gen_tokens_per_s": float(ro.lengths.sum()) / max(ro.seconds, 1e-9)}


def rollout_metrics(groups: list[Group]) -> dict:
    rewards = np.concatenate([g.rewards for g in groups])
    lengths = np.concatenate([g.lengths for g in groups])
    truncated = np.concatenate([g.truncated for g in groups])
    stats = grpo.group_stats(rewards, len(groups[0].rewards))
    m = {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
        "accuracy": float((rewards >= 1.0).mean()),
        "response_length/mean": float(lengths.mean()), "response_length/max": int(lengths.max()),
        "truncation_rate": float(truncated.mean()),
        "solve_none": float(stats["solve_none"]), "solve_all": float(stats["solve_all"]),
        "solve_partial": float(stats["solve_partial"]),
    }
    for domain in sorted({g.record.get("domain", "math") for g in groups}):
        r = np.concatenate([g.rewards for g in groups if g.record.get("domain", "math") == domain])
        m[f"reward/{domain}"] = float(r.mean())
        m[f"accuracy/{domain}"] = float((r >= 1.0).mean())
    return m


def assemble(groups: list[Group], num_groups: int, adv_std_mode: str, adv_eps: float,
             min_prompt_bucket: int = 16, min_response_bucket: int = 16, max_prompt_len: int | None = None,
             max_response_len: int | None = None) -> dict:
    """Fixed-shape numpy arrays for the update. Pads to `num_groups` groups with fully
    masked rows (dynamic sampling may find fewer informative groups than asked). Lengths
    are bucketed (sampling.bucket) and capped at the stage's limits when given."""
    g = len(groups[0].rewards)
    plen = bucket(max(len(x.prompt_ids) for x in groups), min_prompt_bucket, max_prompt_len)
    mlen = bucket(max(int(x.lengths.max()) for x in groups), min_response_bucket, max_response_len)
    n = num_groups * g
    tokens = np.zeros((n, plen + mlen), np.int32)
    kv_mask = np.zeros((n, plen + mlen), bool)
    loss_mask = np.zeros((n, mlen), np.float32)
    truncated = np.zeros((n,), bool)
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
    advantages = np.asarray(grpo.group_advantages(rewards, g, std_mode=adv_std_mode, eps=adv_eps))
    # Rows past the last real group: no tokens in the loss, no attention garbage (one token).
    kv_mask[len(groups) * g:, plen - 1] = True
    return {"tokens": tokens, "kv_mask": kv_mask, "loss_mask": loss_mask, "truncated": truncated,
            "advantages": advantages.astype(np.float32), "prompt_len": plen}


def minibatches(batch: dict, mini_batch: int, micro_batch: int, rng: np.random.Generator | None):
    """Yields dicts of [num_micro, micro_batch, ...] arrays, one per optimizer update."""
    n = batch["tokens"].shape[0]
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, mini_batch):
        idx = order[start:start + mini_batch]
        yield {k: v[idx].reshape(mini_batch // micro_batch, micro_batch, *v.shape[1:])
               for k, v in batch.items() if isinstance(v, np.ndarray)}


def to_device(tree, shardings):
    """Host arrays (the same on every process) -> global arrays in `shardings`."""
    return jax.tree.map(parallel.to_global, tree, shardings)
