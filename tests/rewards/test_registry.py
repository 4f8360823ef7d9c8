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
    assert "correct" not in res.info  # correct is eval_metrics.is_correct(reward), defined once
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


USER_MODULE = '''
import os
from dsrl_jax.rewards import RewardResult, register

@register("user_says_hi")
def says_hi(response, record, **options):
    return RewardResult(float("hi" in response), {"pid": os.getpid(), **options})
'''


def test_user_reward_module_is_imported_in_every_worker(tmp_path, monkeypatch):
    """config.rewards.modules: a reward defined in the user's own module, used by the workers."""
    import os

    from dsrl_jax.rewards import import_modules, reward_settings

    (tmp_path / "my_rewards_mod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cfg = ml_collections.ConfigDict({"modules": "my_rewards_mod", "allow_unsandboxed": False,
                                     "math": [{"name": "user_says_hi", "options": {"tag": 7}}]})  # fmt: skip
    assert reward_settings(cfg) == {"modules": "my_rewards_mod", "allow_unsandboxed": False}
    with RewardPool(cfg.to_dict(), num_workers=2) as pool:
        results = pool.score(["hi there", "bye"] * 2, [{"domain": "math", "answer": "1"}] * 4)
    assert [r.score for r in results] == [1, 0, 1, 0]
    pids = {r.info["pid"] for r in results}
    assert os.getpid() not in pids and results[0].info["tag"] == 7  # scored in the workers
    assert import_modules(" my_rewards_mod , ") == ["my_rewards_mod"]
    with pytest.raises(ValueError, match="cannot import 'no_such_mod_dsrl'"):
        import_modules("no_such_mod_dsrl")
    with pytest.raises(ValueError, match="no_such_mod_dsrl"):
        RewardPool({"modules": "no_such_mod_dsrl", "math": []}, num_workers=0)


def test_base_config_rewards_block_validates():
    from configs.base import get_config

    rewards = get_config().rewards
    assert rewards.modules == "" and rewards.allow_unsandboxed is False
    assert set(parse_reward_config(rewards)) == {"math", "code"}
