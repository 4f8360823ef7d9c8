"""The demo task (determinism, disjoint splits, graded difficulty, graded by the real
math reward) and the supervised warm start (loss goes down, same seed -> same params)."""
import collections

import jax
import numpy as np
import pytest

from dsrl_jax import parallel
from dsrl_jax.demo import CharTokenizer, demo_model_config, pass_at_1, save_model, warm_start
from dsrl_jax.demo.sft import sft_batch, sft_loss
from dsrl_jax.demo.task import MAX_TOTAL, make_split, make_splits, solution
from dsrl_jax.policy import load_policy
from dsrl_jax.models import qwen2
from dsrl_jax.rewards import parse_reward_config, score_record


def test_split_is_deterministic_and_well_formed():
    a, b = make_split(50, seed=3), make_split(50, seed=3)
    assert a == b
    assert a != make_split(50, seed=4)
    assert len({r["problem"] for r in a}) == 50  # unique by default
    for r in a:
        assert r["domain"] == "math" and isinstance(r["answer"], str)
        assert r["problem"].count("+") + r["problem"].count("-") == r["difficulty"]
        totals = [int(step.split("=")[1]) for step in solution(r).split(" ")[0].split(",")]
        assert all(0 <= t <= MAX_TOTAL for t in totals)
        assert str(totals[-1]) == r["answer"]


def test_difficulty_distribution():
    counts = collections.Counter(r["difficulty"] for r in make_split(100, 0, (1, 3, 5)))
    assert counts == {1: 34, 3: 33, 5: 33}


def test_splits_are_disjoint_from_held_out():
    splits = make_splits({"sft": 2000, "rl": 500, "eval": 150}, seed=0)
    assert [len(splits[k]) for k in ("sft", "rl", "eval")] == [2000, 500, 150]
    held_out = {r["problem"] for r in splits["eval"]}
    assert len(held_out) == 150
    for name in ("sft", "rl"):
        assert not held_out & {r["problem"] for r in splits[name]}
    ids = [r["id"] for split in splits.values() for r in split]
    assert len(set(ids)) == len(ids)
    assert splits == make_splits({"sft": 2000, "rl": 500, "eval": 150}, seed=0)


def test_running_out_of_problems_is_a_clear_error():
    with pytest.raises(ValueError, match="distinct difficulty-1"):
        make_split(200, 0, (1,))


def test_real_math_reward_grades_the_worked_solution():
    specs = parse_reward_config()  # the default reward config
    for r in make_split(10, 1):
        text = solution(r)
        assert score_record(text, r, specs).score == 1.0
        wrong = text.rsplit("{", 1)[0] + "{" + str(int(r["answer"]) + 1) + "}"
        assert score_record(wrong, r, specs).score == 0.0
        assert score_record(text.split(" ")[0], r, specs).score == 0.0  # no box


def test_sft_batch_masks_solution_and_eos_only():
    tok = CharTokenizer()
    rec = make_split(1, 0, (2,))[0]
    tokens, mask = sft_batch(tok, [rec])
    targets = tokens[0, 1:][mask[0, :-1] > 0]
    assert tok.decode(targets, skip_special_tokens=False) == solution(rec) + "<eos>"


def test_short_warm_start_lowers_loss_and_is_deterministic():
    tok = CharTokenizer()
    cfg = demo_model_config(tok.vocab_size)
    records = make_split(64, 0, unique=False)
    before = sft_loss(cfg, qwen2.init_params(cfg, 0), tok, records)
    kwargs = dict(steps=30, batch_size=16, lr=5e-3, seed=0)
    p1 = warm_start(cfg, tok, records, **kwargs)
    p2 = warm_start(cfg, tok, records, **kwargs)
    assert sft_loss(cfg, p1, tok, records) < 0.8 * before
    for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_pass_at_1_reports_overall_and_per_difficulty(tmp_path):
    tok = CharTokenizer()
    cfg = demo_model_config(tok.vocab_size)
    records = make_split(4, 0, (1, 2))
    model_dir = save_model(str(tmp_path / "model"), cfg, qwen2.init_params(cfg, 0))
    policy = load_policy(model_dir, parallel.make_mesh({"fsdp": 1}, jax.devices()[:1]), dtype="float32",
                         attention_impl="plain")
    res = pass_at_1(policy, records, n=2, max_new_tokens=8, seed=0)
    assert 0.0 <= float(res) <= 1.0 and set(res.by_difficulty) == {1, 2}
    assert len(res.responses) == 8
