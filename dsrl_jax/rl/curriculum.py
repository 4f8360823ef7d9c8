"""Curriculum stages: which data, how long a response may be, what loss, when to move on.

A config lists stages in order, each a dict like `settings.stage_dict()` (defaults:
dsrl_jax.defaults.STAGE); `settings.parse_stages` fills in the defaults and validates them
once, and `Curriculum` runs the parsed `settings.Stage`s:

    name               "stage1"
    data               levels [..] | None (all), domains [..] | None, mixture {domain_or_source: weight} | None
    max_prompt_len     prompts longer than this are dropped by the pipeline
    max_response_len   the sampler's max_new_tokens for this stage
    loss               overrides of the trainer's loss options, e.g. {mask_truncated: True, entropy_coef: 0.0}
                       (merged by settings.stage_loss)
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

The trainer runs `Curriculum(settings.stages)`; `observe(step, metrics)` is called once per
training step and returns True when that step ended a stage and the next one begins (the
trainer then rebuilds its pipeline and options from `.stage`). The last stage has nowhere to go: when its end rule fires
`.finished` becomes True (for plateau only with `on_last_stage: True`). All state is in
`state_dict()`, plain JSON, so a run resumed mid-stage switches at the same step.
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence

import ml_collections

from dsrl_jax import defaults
from dsrl_jax.checkpoint import Checkpointer, abstract_like
from dsrl_jax.settings import Stage, stage_dict


def default_plateau() -> dict:
    """The plateau rule's defaults (defaults.PLATEAU), a copy."""
    return copy.deepcopy(defaults.PLATEAU)


def default_stage(**overrides) -> ml_collections.ConfigDict:
    """A stage with every field at its default; `overrides` merge in (nested dicts too).
    configs/*.py use `settings.stage_dict`, the same stage as a plain dict."""
    return ml_collections.ConfigDict(stage_dict(**overrides))


class Curriculum:
    def __init__(self, stages: Sequence[Stage]):
        """`stages`: parsed stages (settings.parse_stages, or Settings.stages)."""
        self._stages = tuple(stages)
        if not self._stages:
            raise ValueError("curriculum: needs at least one stage")
        self._reset(0, start_step=0)
        self.finished = False

    # -- current stage ---------------------------------------------------------------------
    @property
    def stage_index(self) -> int:
        return self._index

    @property
    def stage(self) -> Stage:
        return self._stages[self._index]

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
        end = self._stages[self._index].end
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
            "stage_index": self._index, "stage_name": self._stages[self._index].name,
            "start_step": self._start_step, "steps_in_stage": self._steps,
            "window": list(self._window), "best": self._best, "since_best": self._since_best,
            "finished": self.finished,
        }  # fmt: skip

    def load_state_dict(self, state: Mapping) -> None:
        index = int(state["stage_index"])
        if not 0 <= index < len(self._stages) or state.get("stage_name") != self._stages[index].name:
            raise ValueError(f"curriculum state is for stage {index} ({state.get('stage_name')!r}), "
                             f"which this config does not have at that position")
        self._reset(index, int(state["start_step"]))
        self._steps = int(state["steps_in_stage"])
        self._window = [float(v) for v in state["window"]]
        self._best = None if state["best"] is None else float(state["best"])
        self._since_best = int(state["since_best"])
        self.finished = bool(state["finished"])

    def __repr__(self) -> str:
        return (f"Curriculum(stage {self._index + 1}/{len(self._stages)} {self._stages[self._index].name!r}, "
                f"{self._steps} steps in stage, finished={self.finished})")


def continue_from(init_from: str, target):
    """The training state (params, opt_state, step, rng) of the latest checkpoint of the run
    in `init_from` (a training workdir, or its checkpoints/ folder), in `target`'s shardings.

    The trainer starts a run from it when the run has no checkpoint of its own, so a
    stage-2 run continues the stage-1 run it names (see the module docstring).
    """
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
