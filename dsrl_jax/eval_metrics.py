"""Evaluation metrics: pass@1, unbiased pass@k, maj@k and mean reward, as pure functions.

The one definition of a correct sample, of pass@k and of the k reported; the grade CLI
(`dsrl_jax.grade`) and evaluation (`dsrl_jax.evaluate`) both summarise with it.

Every function takes per-problem lists of samples (in sample order) so the numbers in
summary.json can be recomputed from responses.jsonl alone:

    samples = [{"reward": 1.0, "extracted": "204"}, {"reward": 0.0, "extracted": "12"}, ...]
    summarize({"aime24-60": samples, ...}, domain="math", n=16)
    -> {"pass@1": ..., "pass@2": ..., ..., "maj@16": ..., "mean_reward": ..., ...}

A sample is *correct* when its reward is >= 1: a math reward is 0/1, and a code reward
(passed/total tests) counts only when every test passed, as in LiveCodeBench.
"""
from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence

import numpy as np


def is_correct(reward: float) -> bool:
    """Reward >= 1 is correct; a fractional code score (some tests failed) is not."""
    return float(reward) >= 1.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k). A wrong count would silently give a wrong rate, so it is checked."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ks_for(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, and n itself (1, 2, 4, ..., n)."""
    ks = [1]
    while ks[-1] * 2 < n:
        ks.append(ks[-1] * 2)
    return ks + ([n] if n > 1 else [])


def pass_at_ks(correct: Mapping[str, Sequence[bool]]) -> dict[str, float]:
    """{"pass@k": mean over problems} for k in ks_for(the fewest samples any problem has);
    `correct` holds each problem's per-sample verdicts (problems may have different counts)."""
    if not correct:
        return {}
    counts = [(len(v), int(sum(v))) for v in correct.values()]
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
            for k in ks_for(min(n for n, _ in counts))}


def _vote_key(answer) -> str | None:
    """Answers are voted on as text with whitespace removed ("x = 1" and "x=1" agree);
    mathematically equal answers written differently ("0.5" vs "\\frac12") vote apart."""
    if answer is None:
        return None
    key = "".join(str(answer).split())
    return key or None


def majority_correct(samples: Sequence[Mapping]) -> bool:
    """Whether the majority-voted answer of `samples` is correct.

    Samples without an extracted answer do not vote. Ties go to the answer seen first, so
    the result is deterministic. The winning answer is judged by the reward of the first
    sample that gave it (all samples with the same text get the same verdict anyway).
    """
    counts: collections.Counter = collections.Counter()
    first: dict[str, Mapping] = {}
    for s in samples:
        key = _vote_key(s.get("extracted"))
        if key is None:
            continue
        counts[key] += 1
        first.setdefault(key, s)
    if not counts:
        return False
    best = max(counts.values())
    winner = next(key for key in first if counts[key] == best)  # insertion order = first seen
    return is_correct(first[winner]["reward"])


def summarize(by_problem: Mapping[str, Sequence[Mapping]], domain: str, n: int) -> dict:
    """Benchmark metrics over problems that each have exactly `n` samples (reward, extracted).

    pass@1 is the mean correct rate over all samples; pass@k the unbiased estimator averaged
    over problems; maj@k (math only) uses each problem's first k samples.
    """
    if not by_problem:
        return {"n_problems": 0, "n_samples": 0}
    for pid, samples in by_problem.items():
        if len(samples) != n:
            raise ValueError(f"problem {pid!r} has {len(samples)} samples, expected {n}")
    correct = np.array([[is_correct(s["reward"]) for s in samples] for samples in by_problem.values()])
    rewards = np.array([[float(s["reward"]) for s in samples] for samples in by_problem.values()])
    out = pass_at_ks(dict(zip(by_problem, correct.tolist())))
    if domain == "math":
        for k in ks_for(n)[1:]:
            out[f"maj@{k}"] = float(np.mean([majority_correct(s[:k]) for s in by_problem.values()]))
    out["mean_reward"] = float(rewards.mean())
    out["n_problems"] = len(by_problem)
    out["n_samples"] = int(correct.size)
    return out


def results_markdown(summary: Mapping[str, Mapping]) -> str:
    """A markdown table: one row per benchmark, metrics as percentages, counts as integers."""
    metrics = []
    for stats in summary.values():
        metrics += [m for m in stats if m not in metrics and m not in ("n_problems", "n_samples")]
    header = ["benchmark", "problems", "samples", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, stats in summary.items():
        cells = [name, str(stats.get("n_problems", 0)), str(stats.get("n_samples", 0))]
        for m in metrics:
            v = stats.get(m)
            cells.append("" if v is None else (f"{v:.3f}" if m == "mean_reward" else f"{100 * v:.1f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\npass@k and maj@k in %; mean_reward is the raw mean score.\n"
