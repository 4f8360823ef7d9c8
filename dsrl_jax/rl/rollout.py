"""Rollouts: sample groups, score them in reward workers, assemble the training batch.

A `Group` is one prompt with its G sampled completions and their rewards (host numpy).
`assemble` pads a list of groups into the fixed-shape arrays the update consumes:

    tokens [N, P + M]   left-padded prompt (P, bucketed) then the completion (M, bucketed)
    kv_mask [N, P + M]  real tokens; loss_mask [N, M] completion tokens; truncated [N]
    advantages [N]      group-relative (rl.grpo)
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from dsrl_jax.rl import grpo
from dsrl_jax.sampling import FINISH_LENGTH, SampleOptions, SampleOutput, Sampler, bucket


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


def _sample_in_chunks(sampler, params, prompts, key, opts, chunk):
    """Samples `chunk` prompts per call (KV caches of long rollouts do not fit at once)."""
    chunk = chunk or len(prompts)
    outs = [sampler.sample(params, prompts[i:i + chunk], jax.random.fold_in(key, i), opts)
            for i in range(0, len(prompts), chunk)]
    if len(outs) == 1:
        return outs[0]
    width = max(o.tokens.shape[1] for o in outs)
    pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1])))
    return SampleOutput(np.concatenate([pad(o.tokens) for o in outs]), np.concatenate([pad(o.logprobs) for o in outs]),
                        np.concatenate([o.lengths for o in outs]), np.concatenate([o.finish_reason for o in outs]))


def sample_groups(sampler: Sampler, params, batch, key, opts: SampleOptions, tokenizer, pool,
                  response_prefix=lambda ids: "", prompts_per_call: int = 0) -> tuple[list[Group], dict, object]:
    """Samples a PromptBatch and submits the responses to the reward pool.

    Returns (groups without rewards yet, generation metrics, a finisher): call
    `finish()` to wait for the rewards and fill them in. In between the caller may run
    device work (reference log-probs) while the workers grade.
    """
    prompts, records = batch.unique_prompts(), batch.unique_records()
    g = opts.n
    t0 = time.perf_counter()
    out = _sample_in_chunks(sampler, params, prompts, key, opts, prompts_per_call)
    gen_time = time.perf_counter() - t0
    texts = []
    for row in range(len(prompts) * g):
        prefix = response_prefix(prompts[row // g])
        texts.append(prefix + tokenizer.decode(out.completion(row), skip_special_tokens=True))
    handle = pool.submit(texts, [records[row // g] for row in range(len(texts))])
    groups = []
    for i, (p, r) in enumerate(zip(prompts, records)):
        rows = slice(i * g, (i + 1) * g)
        groups.append(Group(r, list(p), out.tokens[rows], out.lengths[rows],
                            out.finish_reason[rows] == FINISH_LENGTH, np.zeros(g, np.float32), [],
                            texts[rows]))
    metrics = {"time/generate": gen_time, "perf/gen_tokens_per_s": float(out.lengths.sum()) / max(gen_time, 1e-9)}

    def finish():
        results = handle.result()
        for i, grp in enumerate(groups):
            res = results[i * g:(i + 1) * g]
            grp.rewards = np.asarray([x.score for x in res], np.float32)
            grp.infos = [x.info for x in res]
        return groups

    return groups, metrics, finish


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
    return jax.tree.map(lambda x, s: jax.device_put(x, s), tree, shardings)
