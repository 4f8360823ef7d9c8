"""Curriculum stages: which data, how long a response may be, what loss, when to move on.

A config lists stages in order; each is a ConfigDict like `default_stage()`:

    name               "stage1"
    data               levels [..] | None (all), domains [..] | None, mixture {domain_or_source: weight} | None
    max_prompt_len     prompts longer than this are dropped by the pipeline
    max_response_len   the sampler's max_new_tokens for this stage
    loss               overrides of the trainer's loss options, e.g. {mask_truncated: True, entropy_coef: 0.0}
    sampling           overrides of the trainer's sampling options, e.g. {temperature: 1.0}
    end.max_steps      end after this many training steps in the stage (None: no limit)
    end.plateau        None, or {metric, window, min_delta, patience, min_steps, on_last_stage}:
                       end when the `window`-step moving average of `metrics[metric]` has not
                       risen by more than `min_delta` above its best for `patience` steps.

The paper's staged run: stage 1 on L2 data (16k tokens) until the reward plateaus (its run
switched at step ~1600), stage 2 on L3 data (24k tokens), truncated responses masked out
of the loss and no entropy term.

The stage switch (paper section 4.3, one procedure for `configs/staged.py` and for
`configs/stage2.py` run after `configs/stage1.py`): stage 2 CONTINUES the stage-1 run. The
paper changes the data, the rollout length, truncation masking and the entropy term at
the switch and nothing else, and its figure 2 is one run with the switch at step 1600, so:
  * policy: the stage-1 parameters;
  * KL reference: the initial model (`model.init`, DeepSeek-R1-Distill-Qwen-1.5B) in both
    stages, not the stage-1 result (the paper keeps KL 0.001 to the policy it started from);
  * optimizer: AdamW's moments and step count carry over (no restart);
  * learning rate: the schedule continues over the global step (the paper: constant 1e-6);
  * step counter and RNG continue (`total_steps` counts both stages).
`staged.py` does this inside one run. `stage2.py` does it across runs: `init_from` names the
stage-1 workdir, whose latest checkpoint gives params, optimizer state, step and RNG
(`continue_from` below), while `model.init` still gives the reference. Both reach the
same stage-2 state (tests/rl/test_curriculum.py).

`Curriculum.observe(step, metrics)` is called once per training step; it returns True when
that step ended a stage and the next one begins (the trainer then rebuilds its pipeline and
options from `.stage`). The last stage has nowhere to go: when its end rule fires
`.finished` becomes True (for plateau only with `on_last_stage: True`). All state is in
`state_dict()`, plain JSON, so a run resumed mid-stage switches at the same step.
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping

import ml_collections

DOMAINS = ("math", "code")


def default_plateau() -> dict:
    return {
        "metric": "reward/mean",  # a key of the metrics dict passed to observe()
        "window": 50,  # moving-average window (steps)
        "min_delta": 0.0,  # a rise of more than this above the best average counts as progress
        "patience": 100,  # steps without progress before the stage ends
        "min_steps": 0,  # never end by plateau before this many steps in the stage
        "on_last_stage": False,  # whether a plateau in the last stage ends training
    }


def _default_stage_dict() -> dict:
    return {
        "name": "stage",
        "data": {"levels": None, "domains": None, "mixture": None},
        "max_prompt_len": 1024,
        "max_response_len": 16384,
        "loss": {},
        "sampling": {},
        "end": {"max_steps": None, "plateau": None},
    }


def default_stage(**overrides) -> ml_collections.ConfigDict:
    """A stage with every field at its default; `overrides` merge in (nested dicts too)."""
    return ml_collections.ConfigDict(_merge(_default_stage_dict(), overrides, "stage"))


def _plain(x):
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x


_OPEN = {"loss", "sampling", "mixture"}  # free-form dicts: any key is allowed


def _merge(base: dict, new, where: str) -> dict:
    """`base` updated by `new`; keys `base` lacks are an error naming the field."""
    out = copy.deepcopy(base)
    for key, value in _plain(new).items():
        if key not in out:
            raise ValueError(f"{where}.{key}: unknown field; known: {sorted(out)}")
        if key == "plateau" and value is not None:
            out[key] = _merge(default_plateau(), value, f"{where}.plateau")
        elif isinstance(out[key], dict) and key not in _OPEN and value is not None:
            out[key] = _merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = _plain(value)
    return out


def _positive_int(value, where: str, allow_none: bool = False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: must be a positive integer, got {value!r}")


def validate_stage(stage: dict, where: str, last: bool) -> None:
    if not isinstance(stage["name"], str) or not stage["name"]:
        raise ValueError(f"{where}.name: must be a non-empty string")
    _positive_int(stage["max_prompt_len"], f"{where}.max_prompt_len")
    _positive_int(stage["max_response_len"], f"{where}.max_response_len")
    data = stage["data"]
    names_ok = lambda v: isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v)
    for key in ("levels", "domains"):
        value = data[key]
        if key == "levels" and isinstance(value, Mapping):  # per domain: {"math": ["L1"], "code": ["L3"]}
            bad = [d for d, v in value.items() if d not in DOMAINS or not names_ok(v)]
            if bad or not value:
                raise ValueError(f"{where}.data.levels: per-domain levels need {{domain: [names]}}, got {value!r}")
        elif value is not None and not names_ok(value):
            raise ValueError(f"{where}.data.{key}: must be None or a non-empty list of names, got {value!r}")
    if data["domains"] and set(data["domains"]) - set(DOMAINS):
        raise ValueError(f"{where}.data.domains: unknown {sorted(set(data['domains']) - set(DOMAINS))}; known {DOMAINS}")
    if data["mixture"] is not None:
        weights = data["mixture"]
        if not isinstance(weights, dict) or not weights or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights.values()):
            raise ValueError(f"{where}.data.mixture: must be a non-empty {{name: weight > 0}}, got {weights!r}")
    end = stage["end"]
    _positive_int(end["max_steps"], f"{where}.end.max_steps", allow_none=True)
    plateau = end["plateau"]
    if plateau is not None:
        if not isinstance(plateau["metric"], str) or not plateau["metric"]:
            raise ValueError(f"{where}.end.plateau.metric: must name a metric")
        _positive_int(plateau["window"], f"{where}.end.plateau.window")
        _positive_int(plateau["patience"], f"{where}.end.plateau.patience")
        if not isinstance(plateau["min_delta"], (int, float)) or plateau["min_delta"] < 0:
            raise ValueError(f"{where}.end.plateau.min_delta: must be >= 0, got {plateau['min_delta']!r}")
        if not isinstance(plateau["min_steps"], int) or plateau["min_steps"] < 0:
            raise ValueError(f"{where}.end.plateau.min_steps: must be an integer >= 0")
    if not last and end["max_steps"] is None and plateau is None:
        raise ValueError(f"{where}.end: a stage before the last needs max_steps and/or plateau, or it never ends")


class Curriculum:
    def __init__(self, stages):
        if isinstance(stages, (dict, ml_collections.ConfigDict)):
            stages = [stages]
        stages = list(stages or [])
        if not stages:
            raise ValueError("curriculum: needs at least one stage")
        self._stages = [_merge(_default_stage_dict(), s, f"stages[{i}]") for i, s in enumerate(stages)]
        self.validate()
        self._reset(0, start_step=0)
        self.finished = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad field, e.g. 'stages[1].end.plateau.window'."""
        names = [s["name"] for s in self._stages]
        if len(set(names)) != len(names):
            raise ValueError(f"curriculum: stage names must be distinct, got {names}")
        for i, s in enumerate(self._stages):
            validate_stage(s, f"stages[{i}]({s['name']})", last=i == len(self._stages) - 1)

    # -- current stage ---------------------------------------------------------------------
    @property
    def stage_index(self) -> int:
        return self._index

    @property
    def stage(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(copy.deepcopy(self._stages[self._index]))

    @property
    def num_stages(self) -> int:
        return len(self._stages)

    @property
    def steps_in_stage(self) -> int:
        return self._steps

    def _reset(self, index: int, start_step: int) -> None:
        self._index, self._start_step, self._steps = index, start_step, 0
        self._window: list[float] = []  # last `window` values of the plateau metric
        self._best: float | None = None  # best full-window moving average so far
        self._since_best = 0  # full-window steps since the best improved

    # -- end rules --------------------------------------------------------------------------
    def _plateau_step(self, plateau: dict, metrics: Mapping) -> bool:
        """Update the moving average with this step's metric; True when it has plateaued."""
        value = metrics.get(plateau["metric"])
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False  # not logged this step (or not a number): no evidence either way
        if not math.isfinite(value):
            return False
        self._window = (self._window + [value])[-plateau["window"]:]
        if len(self._window) < plateau["window"]:
            return False
        average = sum(self._window) / len(self._window)
        if self._best is None or average > self._best + plateau["min_delta"]:
            self._best, self._since_best = average, 0
        else:
            self._since_best += 1
        return self._since_best >= plateau["patience"] and self._steps >= plateau["min_steps"]

    def observe(self, step: int, metrics: Mapping | None = None) -> bool:
        """Record one finished training step; True when the next stage begins after it."""
        if self.finished:
            return False
        self._steps += 1
        end = self._stages[self._index]["end"]
        last = self._index == len(self._stages) - 1
        done = end["max_steps"] is not None and self._steps >= end["max_steps"]
        if end["plateau"] is not None:
            plateaued = self._plateau_step(end["plateau"], metrics or {})
            done = done or (plateaued and (not last or end["plateau"]["on_last_stage"]))
        if not done:
            return False
        if last:
            self.finished = True
            return False
        self._reset(self._index + 1, start_step=int(step) + 1)
        return True

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain JSON: floats round-trip exactly through json (repr is shortest-exact)."""
        return {
            "stage_index": self._index, "stage_name": self._stages[self._index]["name"],
            "start_step": self._start_step, "steps_in_stage": self._steps,
            "window": list(self._window), "best": self._best, "since_best": self._since_best,
            "finished": self.finished,
        }  # fmt: skip

    def load_state_dict(self, state: Mapping) -> None:
        index = int(state["stage_index"])
        if not 0 <= index < len(self._stages) or state.get("stage_name") != self._stages[index]["name"]:
            raise ValueError(f"curriculum state is for stage {index} ({state.get('stage_name')!r}), "
                             f"which this config does not have at that position")
        self._reset(index, int(state["start_step"]))
        self._steps = int(state["steps_in_stage"])
        self._window = [float(v) for v in state["window"]]
        self._best = None if state["best"] is None else float(state["best"])
        self._since_best = int(state["since_best"])
        self.finished = bool(state["finished"])

    def __repr__(self) -> str:
        return (f"Curriculum(stage {self._index + 1}/{len(self._stages)} {self._stages[self._index]['name']!r}, "
                f"{self._steps} steps in stage, finished={self.finished})")


def continue_from(init_from: str, target):
    """The training state (params, opt_state, step, rng) of the latest checkpoint of the run
    in `init_from` (a training workdir, or its checkpoints/ folder), in `target`'s shardings.

    The trainer starts a run from it when the run has no checkpoint of its own, so a
    stage-2 run continues the stage-1 run it names (see the module docstring).
    """
    from dsrl_jax.checkpoint import Checkpointer, abstract_like

    directory = os.path.join(init_from, "checkpoints")
    if "://" not in init_from and not os.path.isdir(directory):
        directory = init_from
    if "://" not in init_from and not os.path.isdir(directory):
        raise FileNotFoundError(f"init_from: {init_from} is not a training workdir (no checkpoints/ there)")
    ckpt = Checkpointer(directory, keep=None, async_save=False)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"init_from: no complete checkpoint in {directory}")
        state, _ = ckpt.restore(step, abstract_like(target))
    finally:
        ckpt.close()
    print(f"continuing the run in {init_from} from its step {step}")
    return state
