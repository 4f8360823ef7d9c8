"""Curriculum stages: plateau and max_steps end rules, resume mid-stage, validation."""
import json
import random

import pytest

from dsrl_jax.rl.curriculum import Curriculum, default_stage


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
    cur = Curriculum([{"name": "a", "end": {"plateau": plateau(window=2, min_delta=0.1, patience=2)}}, {"name": "b"}])
    assert run(cur, [1, 2, 3, 3, 3]) == [False] * 5 and cur.stage_index == 0
    assert cur.observe(5, {"reward": 3}) is True
    assert cur.stage_index == 1 and cur.stage.name == "b" and cur.steps_in_stage == 0
    assert cur.state_dict()["start_step"] == 6


def test_plateau_min_delta_progress_resets_patience():
    # window 1: 0 (best), .05 (+1, rise < .1), .2 (best, rise > .1), .25 (+1), .28 (+2 -> end)
    cur = Curriculum([{"name": "a", "end": {"plateau": plateau(window=1, min_delta=0.1, patience=2)}}, {"name": "b"}])
    assert run(cur, [0.0, 0.05, 0.2, 0.25, 0.28]) == [False] * 4 + [True]


def test_plateau_ignores_absent_and_nonfinite_metrics_and_respects_min_steps():
    cur = Curriculum([{"name": "a", "end": {"plateau": plateau(window=1, patience=1, min_steps=6)}}, {"name": "b"}])
    # 1 (best), absent, nan, 1 (+1 plateau, but only 4 steps), 1, 1 (6th step -> end)
    assert run(cur, [1.0, None, float("nan"), 1.0, 1.0, 1.0]) == [False] * 5 + [True]


def test_falling_metric_is_a_plateau():
    cur = Curriculum([{"name": "a", "end": {"plateau": plateau(window=3, patience=3)}}, {"name": "b"}])
    # averages 3 (best), 2, 1, 0 -> the third step without progress ends the stage
    assert run(cur, [4, 3, 2, 1, 0, -1]) == [False] * 5 + [True]


def test_max_steps_switching_and_finish():
    cur = Curriculum([{"name": "a", "end": {"max_steps": 3}},
                      {"name": "b", "end": {"max_steps": 2, "plateau": plateau(window=1, patience=1)}},
                      {"name": "c", "end": {"max_steps": 2}}])
    assert run(cur, [1, 1, 1]) == [False, False, True] and cur.stage.name == "b"
    assert run(cur, [5, 1], start=3) == [False, True] and cur.stage.name == "c"  # plateau first
    assert run(cur, [1, 1, 1], start=5) == [False, False, False]
    assert cur.finished and cur.stage.name == "c"


def test_last_stage_plateau_only_when_configured():
    cur = Curriculum([{"name": "a", "end": {"plateau": plateau(window=1, patience=1)}}])
    run(cur, [1, 1, 1, 1])
    assert not cur.finished
    cur = Curriculum([{"name": "a", "end": {"plateau": plateau(window=1, patience=1, on_last_stage=True)}}])
    run(cur, [1, 1])
    assert cur.finished


def test_resume_mid_stage_equals_uninterrupted():
    stages = [{"name": "s1", "end": {"plateau": plateau(window=5, min_delta=0.01, patience=7)}},
              {"name": "s2", "end": {"max_steps": 30, "plateau": plateau(window=3, patience=4)}},
              {"name": "s3"}]
    rng = random.Random(0)
    values = [min(1.0, i / 40) + rng.uniform(-0.05, 0.05) for i in range(120)]
    ref = Curriculum(stages)
    ref_trace = [(ref.observe(i, {"reward": v}), ref.stage_index) for i, v in enumerate(values)]
    assert ref.stage_index == 2 and sum(t for t, _ in ref_trace) == 2
    for cut in (3, 37, ref_trace.index((True, 1)) + 2):
        cur = Curriculum(stages)
        trace = [(cur.observe(i, {"reward": v}), cur.stage_index) for i, v in enumerate(values[:cut])]
        saved = json.loads(json.dumps(cur.state_dict()))
        cur = Curriculum(stages)
        cur.load_state_dict(saved)
        trace += [(cur.observe(i, {"reward": v}), cur.stage_index) for i, v in enumerate(values[cut:], cut)]
        assert trace == ref_trace
        assert cur.state_dict() == ref.state_dict()


def test_load_state_for_another_config_fails():
    cur = Curriculum([{"name": "a", "end": {"max_steps": 1}}, {"name": "b"}])
    cur.observe(0)
    other = Curriculum([{"name": "a", "end": {"max_steps": 1}}, {"name": "z"}])
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
        Curriculum(stages)
