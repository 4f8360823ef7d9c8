"""The shipped configs load and validate, and carry the paper's settings."""
import importlib
import pathlib

import pytest

from dsrl_jax.validate import validate_config

PAPER = dict(lr=1e-6, group_size=16, batch_prompts=128, kl=0.001)


def _load(name):
    return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name", ["base", "stage1", "stage2", "staged", "math_code", "continued_stage1",
                                  "single_level"])
def test_training_configs_load_and_validate(name):
    c = _load(name)
    validate_config(c, check_files=False, num_devices=8)  # a v5e-8's mesh
    validate_config(c, check_files=False, num_devices=4)  # a v4-8's mesh
    assert c.optim.lr == PAPER["lr"] and c.loss.kl_coef == PAPER["kl"]
    assert c.rollout.group_size == PAPER["group_size"] and c.rollout.batch_prompts == PAPER["batch_prompts"]
    assert "R1-Distill-Qwen-1.5B" in c.model.init


def test_stage_settings_follow_the_paper():
    s1 = _load("stage1").curriculum.stages[0]
    assert s1["data"]["levels"] == ["L2"] and s1["max_response_len"] == 16384
    assert s1["loss"]["entropy_coef"] == 0.001 and not s1["loss"]["mask_truncated"]
    assert s1["end"]["plateau"]["metric"] == "reward/mean"
    s2 = _load("stage2")
    stage = s2.curriculum.stages[0]
    assert stage["data"]["levels"] == ["L3"] and stage["max_response_len"] == 24576
    assert stage["loss"] == {"entropy_coef": 0.0, "mask_truncated": True}
    assert s2.init_from == "runs/stage1"  # continues the stage-1 run (its latest checkpoint)
    staged = _load("staged").curriculum.stages
    assert [s["name"] for s in staged] == ["stage1", "stage2"] and staged[0]["end"]["plateau"] is not None
    mc = _load("math_code").curriculum.stages[0]["data"]
    assert mc["levels"] == {"math": ["L1"], "code": ["L3"]} and mc["mixture"] == {"math": 2.1, "code": 1.0}


TRAINING = [p.stem for p in sorted(pathlib.Path(__file__).resolve().parents[1].glob("configs/*.py"))
            if p.stem not in ("__init__", "score", "eval")]


@pytest.mark.parametrize("name", TRAINING)
def test_every_training_config_loads_and_validates(name):
    """Every file in configs/ (except the scoring and eval configs, checked below)."""
    c = _load(name)
    validate_config(c, check_files=False, num_devices=1 if name == "demo" else 8)  # the demo: one CPU device


@pytest.mark.parametrize("level", ["L1", "L2", "L3"])
def test_single_level_configs_follow_section_4_2(level):
    from configs import single_level

    c = single_level.get_config(level)
    validate_config(c, check_files=False, num_devices=8)
    (stage,) = c.curriculum.stages
    assert stage["data"]["levels"] == [level] and stage["max_response_len"] == 16384
    assert stage["loss"] == {"entropy_coef": 0.001, "mask_truncated": False}
    assert stage["end"] == {"max_steps": None, "plateau": None} and c.total_steps == 2000
    assert c.loss.kl_coef == PAPER["kl"] and c.optim.lr == PAPER["lr"] and "R1-Distill-Qwen-1.5B" in c.model.init
    assert c.data.decontaminate.against  # decontaminated like every paper config


def test_single_level_rejects_an_unknown_level():
    from configs import single_level

    with pytest.raises(ValueError, match="one of L1, L2, L3"):
        single_level.get_config("L4")


def test_continued_stage1_is_stage1_for_the_staged_budget():
    c, s1, st = _load("continued_stage1"), _load("stage1").curriculum.stages[0], _load("staged")
    validate_config(c, check_files=False, num_devices=8)
    (stage,) = c.curriculum.stages
    assert {k: stage[k] for k in ("data", "max_response_len", "loss")} == {k: s1[k] for k in ("data", "max_response_len", "loss")}
    assert stage["end"] == {"max_steps": None, "plateau": None} and c.total_steps == st.total_steps


def test_stage2_continues_stage1_like_staged():
    s2, st = _load("stage2"), _load("staged")
    assert s2.init_from and s2.model.init == st.model.init  # reference = the initial model in both
    assert s2.total_steps == st.total_steps and s2.curriculum.stages[0] == st.curriculum.stages[1]
    assert st.init_from == ""


def test_score_and_eval_configs_load():
    score = _load("score")
    assert [p["name"] for p in score.proxies][:3] == ["r1-distill-1.5b", "r1-distill-7b", "r1-distill-32b"]
    ev = _load("eval")
    assert ev.temperature == 0.6 and ev.top_p == 0.95 and ev.max_new_tokens == 32768


@pytest.mark.parametrize("path", sorted(pathlib.Path(__file__).resolve().parents[1].glob("configs/*.py")),
                         ids=lambda p: p.stem)
def test_config_imports_neither_jax_nor_flax(path):
    import subprocess
    import sys

    code = (f"import configs.{path.stem}, sys; bad = [m for m in ('jax', 'flax', 'optax') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=path.parents[1], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_dr_grpo_max_response_len_is_the_stage_s():
    from configs import base
    from dsrl_jax.settings import stage_loss
    from dsrl_jax.validate import ConfigError

    c = base.get_config()
    c.loss.loss_agg, c.loss.adv_std_mode = "seq-mean-token-sum-norm", "none"
    c.curriculum.stages = [dict(name="a", max_response_len=64, end=dict(max_steps=1)),
                           dict(name="b", max_response_len=128)]
    s = validate_config(c, check_files=False, num_devices=8)  # 0: each stage's own length
    assert [stage_loss(s, stage).max_response_len for stage in s.stages] == [64, 128]
    c.loss.max_response_len = None  # None reads the same
    s = validate_config(c, check_files=False, num_devices=8)
    assert [stage_loss(s, stage).max_response_len for stage in s.stages] == [64, 128]
    c.curriculum.stages[1]["loss"] = {"max_response_len": 128}  # agrees with its stage
    validate_config(c, check_files=False, num_devices=8)
    c.curriculum.stages[1]["loss"] = {"max_response_len": 100}
    with pytest.raises(ConfigError, match=r"^config\.curriculum\.stages\[1\]\.loss\.max_response_len: 100 differs"
                                          r" from the stage's max_response_len 128"):
        validate_config(c, check_files=False, num_devices=8)
    c.curriculum.stages[1]["loss"] = {}
    c.loss.max_response_len = 64  # right for stage a, wrong for stage b
    with pytest.raises(ConfigError, match=r"^config\.loss\.max_response_len: 64 differs .*stages\[1\]") as e:
        validate_config(c, check_files=False, num_devices=8)
    assert "\n" not in str(e.value)
