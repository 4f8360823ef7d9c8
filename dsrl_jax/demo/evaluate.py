"""Held-out Pass@1 of a policy on the demo's problems, graded by the project's real math reward.

    policy = load_policy(save_model(dir, cfg, params), mesh)    # a demo model, by its directory
    print(pass_at_1(policy, records, n=4).by_difficulty)

Pass@1 is the mean score over `n` samples per problem (the paper's "Pass@1 averaged over
k samples"), reported overall and per difficulty. Greedy decoding (n = 1) gives the
policy's mode: the gap between greedy accuracy and sampled Pass@1 at temperature 1 is the
room that sharpening by RL can use.

Scoring runs in-process by default (a RewardPool without workers): the demo's responses are a few dozen
characters of arithmetic, which Math-Verify parses in microseconds. Pass a RewardPool to
grade in worker processes with hard timeouts instead, as training does.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from dsrl_jax.policy import Policy, rollout
from dsrl_jax.rewards import RewardPool
from dsrl_jax.sampling import Sampler


@dataclasses.dataclass
class EvalResult:
    pass_at_1: float  # mean score over all problems and samples, in [0, 1]
    by_difficulty: dict[int, float]  # the same, per record["difficulty"]
    mean_length: float  # mean completion length in tokens
    responses: list[str]  # row i*n + j: sample j of record i

    def __float__(self) -> float:
        return self.pass_at_1


def pass_at_1(policy: Policy, records: Sequence[dict], *, n: int = 4, temperature: float = 1.0,
              max_new_tokens: int = 64, seed: int = 0, greedy: bool = False, sampler: Sampler | None = None,
              pool=None, reward_cfg=None, batch_size: int = 256, params=None) -> EvalResult:
    """Sample `n` completions per record (1 when greedy) and grade them with the math reward.

    Records are sampled `batch_size` prompts at a time; reuse a `sampler` across calls to
    keep its compiled programs. `params` replace the policy's own."""
    n = 1 if greedy else n
    sampler = sampler or Sampler(policy.cfg, policy.mesh, policy.rules)
    opts = policy.sample_options(max_new_tokens=max_new_tokens, temperature=temperature, greedy=greedy, n=n,
                                 cache_dtype="float32")
    grader = pool if pool is not None else RewardPool(reward_cfg, num_workers=0)
    key = jax.random.key(seed)
    responses, lengths, scores = [], [], []
    try:
        for start in range(0, len(records), batch_size):
            chunk = list(records[start : start + batch_size])
            ro = rollout(policy, sampler, chunk, jax.random.fold_in(key, start), opts, grader, params=params).wait()
            responses += ro.texts
            lengths += ro.lengths.tolist()
            scores += ro.rewards.tolist()
    finally:
        if pool is None:
            grader.close()
    repeated = [r for r in records for _ in range(n)]
    per = collections.defaultdict(list)
    for rec, s in zip(repeated, scores):
        per[rec.get("difficulty")].append(s)
    return EvalResult(
        pass_at_1=float(np.mean(scores)) if scores else 0.0,
        by_difficulty={k: float(np.mean(v)) for k, v in sorted(per.items(), key=lambda kv: str(kv[0]))},
        mean_length=float(np.mean(lengths)) if lengths else 0.0,
        responses=responses,
    )
