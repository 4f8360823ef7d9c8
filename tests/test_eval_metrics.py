"""Evaluation metrics against hand-computed values."""
import math

import pytest

from dsrl_jax import eval_metrics as em


@pytest.mark.parametrize("n,c,k,expected", [
    (4, 2, 2, 1 - 1 / 6),        # 1 - C(2,2)/C(4,2)
    (16, 1, 4, 0.25),            # 1 - C(15,4)/C(16,4) = 1 - 1365/1820
    (10, 3, 1, 0.3),             # pass@1 is the correct fraction
    (5, 0, 3, 0.0),
    (5, 5, 1, 1.0),
    (3, 1, 3, 1.0),              # fewer wrong samples than k: some draw must be correct
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert em.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_binomials_for_large_n():
    n, c, k = 1000, 10, 100
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert em.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError):
        em.pass_at_k(n, c, k)


def test_ks_for():
    assert em.ks_for(1) == [1]
    assert em.ks_for(2) == [1, 2]
    assert em.ks_for(16) == [1, 2, 4, 8, 16]
    assert em.ks_for(6) == [1, 2, 4, 6]


def _s(extracted, reward):
    return {"extracted": extracted, "reward": reward}


def test_majority_vote_uses_most_common_answer_not_any_correct():
    samples = [_s("3", 1.0), _s("5", 0.0), _s("5", 0.0), _s(None, 0.0), _s(None, 0.0)]
    assert em.majority_correct(samples) is False  # None never wins despite being 2 too
    assert em.majority_correct([_s("3", 1.0), _s("3", 1.0), _s("5", 0.0)]) is True


def test_majority_ties_break_to_first_seen_answer():
    assert em.majority_correct([_s("5", 0.0), _s("3", 1.0), _s("3", 1.0), _s("5", 0.0)]) is False
    assert em.majority_correct([_s("3", 1.0), _s("5", 0.0), _s("5", 0.0), _s("3", 1.0)]) is True


def test_majority_votes_ignore_whitespace_and_need_an_answer():
    assert em.majority_correct([_s("x = 1", 1.0), _s("x=1", 1.0), _s("2", 0.0)]) is True
    assert em.majority_correct([_s(None, 0.0), _s("  ", 0.0)]) is False


def test_summarize_math_hand_computed():
    by_problem = {
        "p1": [_s("a", 1.0), _s("b", 0.0), _s("a", 1.0), _s("c", 0.0)],
        "p2": [_s("7", 0.0), _s("7", 0.0), _s("8", 0.0), _s(None, 0.5)],
    }
    got = em.summarize(by_problem, "math", n=4)
    assert got["pass@1"] == pytest.approx(2 / 8)
    assert got["pass@2"] == pytest.approx((5 / 6 + 0) / 2)
    assert got["pass@4"] == pytest.approx(0.5)
    assert got["maj@2"] == pytest.approx(0.5)  # p1: a/b tie -> a (correct); p2: 7 (wrong)
    assert got["maj@4"] == pytest.approx(0.5)
    assert got["mean_reward"] == pytest.approx(2.5 / 8)
    assert (got["n_problems"], got["n_samples"]) == (2, 8)


def test_summarize_code_counts_only_full_passes_and_has_no_majority():
    by_problem = {"c1": [_s(None, 0.5), _s(None, 1.0)], "c2": [_s(None, 0.99), _s(None, 0.0)]}
    got = em.summarize(by_problem, "code", n=2)
    assert got["pass@1"] == pytest.approx(1 / 4)
    assert got["pass@2"] == pytest.approx(0.5)
    assert not any(key.startswith("maj@") for key in got)
    assert got["mean_reward"] == pytest.approx(2.49 / 4)


def test_summarize_rejects_wrong_sample_counts():
    with pytest.raises(ValueError, match="p1"):
        em.summarize({"p1": [_s("a", 1.0)]}, "math", n=2)


def test_results_markdown_table():
    table = em.results_markdown({"aime": {"pass@1": 0.25, "maj@2": 0.5, "mean_reward": 0.3125,
                                          "n_problems": 2, "n_samples": 8},
                                 "code": {"pass@1": 0.1, "n_problems": 3, "n_samples": 6}})
    lines = table.splitlines()
    assert lines[0] == "| benchmark | problems | samples | pass@1 | maj@2 | mean_reward |"
    assert lines[2] == "| aime | 2 | 8 | 25.0 | 50.0 | 0.312 |"
    assert lines[3] == "| code | 3 | 6 | 10.0 |  |  |"
