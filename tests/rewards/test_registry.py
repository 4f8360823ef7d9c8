"""Registry, config validation, the combiner, the format reward and the pool's API."""
import time

import ml_collections
import pytest

from dsrl_jax.rewards import REWARDS, RewardPool, RewardResult, parse_reward_config, register, score_record, validate_reward_config
from dsrl_jax.rewards.format import format_reward


def test_builtin_rewards_registered():
    assert {"math", "code", "format"} <= set(REWARDS)


def test_config_dict_and_unknown_names():
    cfg = ml_collections.ConfigDict()
    cfg.rewards = {"math": [{"name": "math", "weight": 1.0}], "code": [{"name": "code", "weight": 1.0}]}
    specs = parse_reward_config(cfg.rewards)
    assert specs["math"][0].name == "math" and specs["code"][0].weight == 1.0
    with pytest.raises(ValueError, match="'mth'"):
        validate_reward_config({"math": [{"name": "mth"}]})
    with pytest.raises(ValueError, match="unknown keys"):
        validate_reward_config({"math": [{"name": "math", "wieght": 2}]})


def test_weighted_combination_and_new_reward_in_one_line():
    @register("length_penalty_test")
    def length_penalty(response, record, *, per_char=0.001, **_):
        return RewardResult(-per_char * len(response), {"chars": len(response)})

    specs = parse_reward_config({"math": [
        {"name": "math", "weight": 1.0},
        {"name": "format", "weight": 0.5},
        {"name": "length_penalty_test", "weight": 1.0, "options": {"per_char": 0.01}},
    ]})
    response = "<think>.</think>\\boxed{2}"
    res = score_record(response, {"domain": "math", "answer": "2"}, specs)
    assert res.score == pytest.approx(1.0 + 0.5 - 0.01 * len(response))
    assert res.info["math"]["extracted"] == "2" and res.info["length_penalty_test"]["chars"] == len(response)
    assert res.info["correct"] is False  # the penalty component is not 1
    missing = score_record(response, {"domain": "code", "tests": []}, specs)
    assert missing.score == 0 and "no rewards configured" in missing.info["error"]
    del REWARDS["length_penalty_test"]


def test_format_reward():
    assert format_reward("<think>.</think>\\boxed{1}", {"domain": "math"}).score == 1
    assert format_reward("\\boxed{1}", {"domain": "math"}).score == 0
    assert format_reward("\\boxed{1}", {"domain": "math"}, require_think=False).score == 1
    assert format_reward("<think>.</think>```python\nx=1\n```", {"domain": "code"}).score == 1
    assert format_reward("<think>.</think>x=1", {"domain": "code"}).score == 0


def test_pool_submit_is_non_blocking_and_keeps_order():
    records = [{"domain": "math", "answer": str(i)} for i in range(6)]
    responses = [f"\\boxed{{{i if i % 2 else i + 1}}}" for i in range(6)]
    with RewardPool(num_workers=2) as pool:
        start = time.monotonic()
        handle = pool.submit(responses, records)
        assert time.monotonic() - start < 0.5  # returned before grading finished
        assert [r.score for r in handle.result(timeout=60)] == [0, 1, 0, 1, 0, 1]
    with pytest.raises(RuntimeError):
        pool.submit(responses, records)


def test_inline_mode_and_length_mismatch():
    with RewardPool(num_workers=0) as pool:
        assert pool.score(["\\boxed{1}"], [{"domain": "math", "answer": "1"}])[0].score == 1
        with pytest.raises(ValueError):
            pool.submit(["a"], [])
    with pytest.raises(ValueError, match="nope"):
        RewardPool({"math": [{"name": "nope"}]}, num_workers=0)
