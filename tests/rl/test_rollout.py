"""Rollout metrics count a sample as correct as evaluation does (eval_metrics.is_correct):
a fractional code score (some tests failed) is not correct."""
import numpy as np

from dsrl_jax.rl import rollout


def _group(domain, rewards):
    g = len(rewards)
    return rollout.Group({"domain": domain}, [1], np.zeros((g, 2), np.int32), np.full(g, 2), np.zeros(g, bool),
                         np.asarray(rewards, np.float32), [{}] * g, [""] * g)


def test_accuracy_counts_only_full_rewards():
    m = rollout.rollout_metrics([_group("math", [1.0, 0.0]), _group("code", [1.0, 0.75])])
    assert m["accuracy"] == 0.5
    assert m["accuracy/math"] == 0.5 and m["accuracy/code"] == 0.5
    assert m["reward/code"] == 0.875
