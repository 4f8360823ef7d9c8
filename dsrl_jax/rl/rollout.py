"""Groups of a graded rollout and their metrics.

`dsrl_jax.policy.rollout` samples, decodes and grades; here a `Group` is one prompt with
its G sampled completions and their rewards (host numpy). `rl.batch.train_batch` turns a
list of groups into the update's `TrainBatch`. The sampler's per-token log-probs are not
carried: the update recomputes them with its own program (see `sampling`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dsrl_jax.eval_metrics import is_correct
from dsrl_jax.policy import Rollout
from dsrl_jax.rl import grpo


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
        "accuracy": float(np.mean([is_correct(r) for r in rewards])),
        "response_length/mean": float(lengths.mean()), "response_length/max": int(lengths.max()),
        "truncation_rate": float(truncated.mean()),
        "solve_none": float(stats["solve_none"]), "solve_all": float(stats["solve_all"]),
        "solve_partial": float(stats["solve_partial"]),
    }
    for domain in sorted({g.record.get("domain", "math") for g in groups}):
        r = np.concatenate([g.rewards for g in groups if g.record.get("domain", "math") == domain])
        m[f"reward/{domain}"] = float(r.mean())
        m[f"accuracy/{domain}"] = float(np.mean([is_correct(x) for x in r]))
    return m
