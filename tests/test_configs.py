"""The shipped configs load and validate, and carry the paper's settings."""
import importlib

import pytest

from dsrl_jax.validate import validate_config

PAPER = dict(lr=1e-6, group_size=16, batch_prompts=128, kl=0.001)


def _load(name):
    return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name", ["base", "stage1", "stage2", "staged", "math_code"])
def test_training_configs_load_and_validate(name):
    c = _load(name)
    validate_config(c, check_files=False, num_devices=8)  # a v5e-8's mesh
    validate_config(c, check_files=False, num_devices=4)  # a v4-8's mesh
    assert c.optim.lr == PAPER["lr"] and c.loss.kl_coef == PAPER["kl"]
    assert c.rollout.group_size == PAPER["group_size"] and c.rollout.batch_prompts == PAPER["batch_prompts"]
    assert "R1-Distill-Qwen-1.5B" in c.model.init or name == "stage2"


def test_stage_settings_follow_the_paper():
    s1 = _load("stage1").curriculum.stages[0]
    assert s1["data"]["levels"] == ["L2"] and s1["max_response_len"] == 16384
    assert s1["loss"]["entropy_coef"] == 0.001 and not s1["loss"]["mask_truncated"]
    assert s1["end"]["plateau"]["metric"] == "reward/mean"
    s2 = _load("stage2")
    stage = s2.curriculum.stages[0]
    assert stage["data"]["levels"] == ["L3"] and stage["max_response_len"] == 24576
    assert stage["loss"] == {"entropy_coef": 0.0, "mask_truncated": True}
    assert s2.model.init.endswith("stage1/hf")  # initialised from the stage-1 result
    staged = _load("staged").curriculum.stages
    assert [s["name"] for s in staged] == ["stage1", "stage2"] and staged[0]["end"]["plateau"] is not None
    mc = _load("math_code").curriculum.stages[0]["data"]
    assert mc["levels"] == {"math": ["L1"], "code": ["L3"]} and mc["mixture"] == {"math": 2.1, "code": 1.0}


def test_score_and_eval_configs_load():
    score = _load("score")
    assert [p["name"] for p in score.proxies][:3] == ["r1-distill-1.5b", "r1-distill-7b", "r1-distill-32b"]
    ev = _load("eval")
    assert ev.temperature == 0.6 and ev.top_p == 0.95 and ev.max_new_tokens == 32768
