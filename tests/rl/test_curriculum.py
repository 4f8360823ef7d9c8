"""Curriculum stages: plateau and max_steps end rules, resume mid-stage, validation."""
import json
import os
import random

import pytest

from dsrl_jax.rl.curriculum import Curriculum, default_stage
from dsrl_jax.settings import parse_stages


def plateau(**kw):
    return {"metric": "reward", **kw}


def run(cur, values, start=0):
    """observe() return values for a sequence of metric values (None: metric absent)."""
    return [cur.observe(start + i, {} if v is None else {"reward": v}) for i, v in enumerate(values)]


def test_default_stage_has_every_field():
    s = default_stage(name="x", end={"max_steps": 3})
    assert s.name == "x" and s.end.max_steps == 3 and s.end.plateau is None
    assert s.data.levels is None and s.max_response_len == 16384 and dict(s.loss) == {}
    s = default_stage(end={"plateau": {"metric": "m"}})
    assert s.end.plateau.window == 50 and s.end.plateau.metric == "m"


def test_plateau_hand_traced_moving_average():
    # window 2, min_delta 0.1, patience 2. Averages: -, 1.5 (best), 2.5 (best), 3.0 (best),
    # 3.0 (+1), 3.0 (+2 -> end after the 6th step).
    cur = Curriculum(parse_stages([{"name": "a", "end": {"plateau": plateau(window=2, min_delta=0.1, patience=2)}}, {"name": "b"}]))
    assert run(cur, [1, 2, 3, 3, 3]) == [False] * 5 and cur.stage_index == 0
    assert cur.observe(5, {"reward": 3}) is True
    assert cur.stage_index == 1 and cur.stage.name == "b" and cur.steps_in_stage == 0
    assert cur.state_dict()["start_step"] == 6


def test_plateau_min_delta_progress_resets_patience():
    # window 1: 0 (best), .05 (+1, rise < .1), .2 (best, rise > .1), .25 (+1), .28 (+2 -> end)
    cur = Curriculum(parse_stages([{"name": "a", "end": {"plateau": plateau(window=1, min_delta=0.1, patience=2)}}, {"name": "b"}]))
    assert run(cur, [0.0, 0.05, 0.2, 0.25, 0.28]) == [False] * 4 + [True]


def test_plateau_ignores_absent_and_nonfinite_metrics_and_respects_min_steps():
    cur = Curriculum(parse_stages([{"name": "a", "end": {"plateau": plateau(window=1, patience=1, min_steps=6)}}, {"name": "b"}]))
    # 1 (best), absent, nan, 1 (+1 plateau, but only 4 steps), 1, 1 (6th step -> end)
    assert run(cur, [1.0, None, float("nan"), 1.0, 1.0, 1.0]) == [False] * 5 + [True]


def test_falling_metric_is_a_plateau():
    cur = Curriculum(parse_stages([{"name": "a", "end": {"plateau": plateau(window=3, patience=3)}}, {"name": "b"}]))
    # averages 3 (best), 2, 1, 0 -> the third step without progress ends the stage
    assert run(cur, [4, 3, 2, 1, 0, -1]) == [False] * 5 + [True]


def test_max_steps_switching_and_finish():
    cur = Curriculum(parse_stages([{"name": "a", "end": {"max_steps": 3}},
                      {"name": "b", "end": {"max_steps": 2, "plateau": plateau(window=1, patience=1)}},
                      {"name": "c", "end": {"max_steps": 2}}]))
    assert run(cur, [1, 1, 1]) == [False, False, True] and cur.stage.name == "b"
    assert run(cur, [5, 1], start=3) == [False, True] and cur.stage.name == "c"  # plateau first
    assert run(cur, [1, 1, 1], start=5) == [False, False, False]
    assert cur.finished and cur.stage.name == "c"


def test_last_stage_plateau_only_when_configured():
    cur = Curriculum(parse_stages([{"name": "a", "end": {"plateau": plateau(window=1, patience=1)}}]))
    run(cur, [1, 1, 1, 1])
    assert not cur.finished
    cur = Curriculum(parse_stages([{"name": "a", "end": {"plateau": plateau(window=1, patience=1, on_last_stage=True)}}]))
    run(cur, [1, 1])
    assert cur.finished


def test_resume_mid_stage_equals_uninterrupted():
    stages = [{"name": "s1", "end": {"plateau": plateau(window=5, min_delta=0.01, patience=7)}},
              {"name": "s2", "end": {"max_steps": 30, "plateau": plateau(window=3, patience=4)}},
              {"name": "s3"}]
    rng = random.Random(0)
    values = [min(1.0, i / 40) + rng.uniform(-0.05, 0.05) for i in range(120)]
    ref = Curriculum(parse_stages(stages))
    ref_trace = [(ref.observe(i, {"reward": v}), ref.stage_index) for i, v in enumerate(values)]
    assert ref.stage_index == 2 and sum(t for t, _ in ref_trace) == 2
    for cut in (3, 37, ref_trace.index((True, 1)) + 2):
        cur = Curriculum(parse_stages(stages))
        trace = [(cur.observe(i, {"reward": v}), cur.stage_index) for i, v in enumerate(values[:cut])]
        saved = json.loads(json.dumps(cur.state_dict()))
        cur = Curriculum(parse_stages(stages))
        cur.load_state_dict(saved)
        trace += [(cur.observe(i, {"reward": v}), cur.stage_index) for i, v in enumerate(values[cut:], cut)]
        assert trace == ref_trace
        assert cur.state_dict() == ref.state_dict()


def test_load_state_for_another_config_fails():
    cur = Curriculum(parse_stages([{"name": "a", "end": {"max_steps": 1}}, {"name": "b"}]))
    cur.observe(0)
    other = Curriculum(parse_stages([{"name": "a", "end": {"max_steps": 1}}, {"name": "z"}]))
    with pytest.raises(ValueError, match="stage 1"):
        other.load_state_dict(cur.state_dict())


@pytest.mark.parametrize("stages,needle", [
    ([], "at least one stage"),
    ([{"name": "a", "max_step": 3}], r"stages\[0\]\.max_step: unknown field"),
    ([{"name": "a", "end": {"plateau": {"metric": "r", "windw": 3}}}], r"plateau\.windw: unknown"),
    ([{"name": "a"}, {"name": "b"}], r"stages\[0\]\(a\)\.end: a stage before the last"),
    ([{"name": "a", "end": {"max_steps": 0}}, {"name": "b"}], r"end\.max_steps: must be a positive"),
    ([{"name": "a", "end": {"plateau": {"window": 0}}}], r"plateau\.window"),
    ([{"name": "a", "end": {"plateau": {"min_delta": -1}}}], r"plateau\.min_delta"),
    ([{"name": "a", "data": {"domains": ["bio"]}}], r"data\.domains: unknown"),
    ([{"name": "a", "data": {"mixture": {"math": 0}}}], r"data\.mixture"),
    ([{"name": "a", "max_response_len": "16k"}], r"max_response_len"),
    ([{"name": "a", "end": {"max_steps": 2}}, {"name": "a"}], "distinct"),
])
def test_validation_names_the_field(stages, needle):
    with pytest.raises(ValueError, match=needle):
        Curriculum(parse_stages(stages))


# ---------------------------------------------------------------- the stage switch
def _small(c, stages, total_steps):
    """A paper config shrunk to a seconds-long run with a tiny model; the procedure (what is
    continued, what the reference is) is the config's own."""
    from dsrl_jax.rewards import REWARDS, RewardResult, register

    if "digit_fraction_switch" not in REWARDS:  # rewards that differ within a group: real advantages
        register("digit_fraction_switch")(
            lambda response, record, **_: RewardResult(sum(ch.isdigit() for ch in response) / max(len(response), 1), {}))
    with c.unlocked():
        c.seed, c.total_steps = 5, total_steps
        c.data.sources, c.data.decontaminate.against = [], ""
        c.model.init, c.model.dtype = "preset:tiny", "float32"
        c.mesh = {"data": 1, "fsdp": 8, "tensor": 1}
        c.rollout.batch_prompts, c.rollout.group_size, c.rollout.cache_dtype = 2, 4, "float32"
        c.rollout.prompts_per_sample_call = 0
        c.train.micro_batch_size = 8
        c.optim.lr = 1e-3
        c.rewards = {"math": [{"name": "digit_fraction_switch", "weight": 1.0}]}
        c.reward_workers = 0
        c.checkpoint.update(every=100, keep=2, async_save=False, export_hf=False)
        c.log.update(progress=False, tensorboard=False)
        c.eval.every = 0
        for s in stages:
            s.update(max_prompt_len=64, max_response_len=8 if s["name"] == "stage1" else 12)
            if s["name"] == "stage1":
                s["end"] = {"max_steps": 2, "plateau": None}
        c.curriculum.stages = stages
    return c


def _trainer(c, workdir, model):
    """A Trainer on `model` (cfg, params) and 16 levelled demo problems, both named in `c`."""
    from dsrl_jax.demo import save_model
    from dsrl_jax.demo.task import make_split
    from dsrl_jax.rl.trainer import Trainer

    records = [{**r, "levels": ["L2", "L3"]} for r in make_split(16, seed=0, difficulties=(1, 2))]
    inputs = f"{workdir}_inputs"
    model_dir = save_model(os.path.join(inputs, "model"), *model)
    with open(os.path.join(inputs, "problems.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with c.unlocked():
        c.model.update(init=model_dir, remat="none")
        c.data.sources = [{"path": os.path.join(inputs, "problems.jsonl")}]
    return Trainer(c, str(workdir))


@pytest.mark.slow
def test_stage2_config_and_staged_config_reach_the_same_stage2_state(tmp_path):
    """staged.py switching inside one run == stage1.py, then stage2.py with init_from: the
    same policy, AdamW moments and count, step and RNG, and the same KL reference (the
    initial model, not the stage-1 result)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import stage1, stage2, staged
    from dsrl_jax.demo.tokenizer import CharTokenizer
    from dsrl_jax.models import qwen2
    from dsrl_jax.models.config import preset

    assert stage2.get_config().model.init == staged.get_config().model.init == stage1.get_config().model.init
    cfg = preset("tiny", vocab_size=CharTokenizer().vocab_size, dtype="float32")
    model = (cfg, qwen2.init_params(cfg, 0))
    def host(tree):
        keys = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
        return jax.tree.map(lambda x: np.asarray(jax.device_get(keys(x))), tree)

    flat = lambda tree: jax.tree_util.tree_flatten_with_path(tree)[0]  # noqa: E731

    c = staged.get_config()
    c = _small(c, [dict(s) for s in c.curriculum.stages], total_steps=3)
    at_switch = {}
    t = _trainer(c, tmp_path / "staged", model)
    try:
        t.run(on_step=lambda tr, step, m: step == 2 and at_switch.update(
            state=host(tr.state), ref=host(tr.ref_params), stage=tr.curriculum.stage.name))
    finally:
        t.close()
    assert at_switch["stage"] == "stage2"

    c1 = stage1.get_config()
    t = _trainer(_small(c1, [dict(s) for s in c1.curriculum.stages], total_steps=2), tmp_path / "s1", model)
    try:
        t.run()
    finally:
        t.close()

    c2 = stage2.get_config()
    c2 = _small(c2, [dict(s) for s in c2.curriculum.stages], total_steps=3)
    c2.init_from = str(tmp_path / "s1")
    t = _trainer(c2, tmp_path / "s2", model)
    try:
        got_state, got_ref = host(t.state), host(t.ref_params)
        assert t.curriculum.stage.name == "stage2" and int(got_state["step"]) == 2
    finally:
        t.close()
    want = flat({k: at_switch["state"][k] for k in ("params", "opt_state", "step")})
    have = flat({k: got_state[k] for k in ("params", "opt_state", "step")})
    assert [p for p, _ in have] == [p for p, _ in want]
    for (path, a), (_, b) in zip(have, want):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(got_state["rng"], at_switch["state"]["rng"])
    moved = [not np.array_equal(a, b) for (_, a), (_, b) in zip(flat(got_state["params"]), flat(host(model[1])))]
    assert any(moved)  # stage 1 trained: the policy is not the initial model ...
    for (_, a), (_, b) in zip(flat(got_ref), flat(at_switch["ref"])):
        np.testing.assert_array_equal(a, b)
    for (_, a), (_, b) in zip(flat(got_ref), flat(host(model[1]))):
        np.testing.assert_array_equal(a, b)  # ... while the reference is


def test_init_from_without_a_checkpoint_is_a_clear_error(tmp_path):
    from dsrl_jax.rl.curriculum import continue_from

    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        continue_from(str(tmp_path / "nowhere"), {})
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        continue_from(str(tmp_path / "run"), {})
