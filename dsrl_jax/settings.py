"""The parsed run config: typed, frozen values that the library reads.

    settings = validate.validate_config(config)   # checks, then from_config(config) once

`from_config` is the one place where a training config (an ml_collections ConfigDict, as
configs/*.py build it and the command line overrides it) becomes plain Python: every
block the library reads is a frozen dataclass or a plain dict here, and nothing
downstream converts ConfigDicts again. Stage merging lives here too, once:
`stage_loss(settings, stage)` / `stage_rollout(settings, stage)` are the run's loss and
sampling options with one stage's overrides applied (validation, the trainer and
tools/memory.py all call them).

Imports neither jax nor flax nor optax (configs/*.py and validation use it before any
device is touched).
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dsrl_jax import defaults

DOMAINS = ("math", "code")
_OPEN = {"loss", "sampling", "mixture"}  # free-form dicts of a stage: any key is allowed


def plain_config(x):
    """A ConfigDict (and dicts / lists of them) as plain dicts and lists: the one
    conversion, called once at an entry point's edge (`from_config`, `score.run`)."""
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {k: plain_config(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_config(v) for v in x]
    return x


@dataclasses.dataclass(frozen=True)
class Loss:
    """The GRPO loss options (defaults.LOSS documents each); rl/grpo.py reads them."""

    clip_low: float
    clip_high: float
    dual_clip: float  # 0 = off
    kl_coef: float
    kl_estimator: str
    entropy_coef: float
    loss_agg: str
    mask_truncated: bool
    adv_std_mode: str
    adv_eps: float
    max_response_len: int | None


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The rollout block (configs/base.py documents each field)."""

    batch_prompts: int
    group_size: int
    temperature: float
    top_p: float
    top_k: int
    cache_dtype: str
    prompts_per_sample_call: int
    max_in_flight: int
    kv_cache_tokens: int
    dynamic_sampling: bool
    max_refill_batches: int


@dataclasses.dataclass(frozen=True)
class StageData:
    levels: Any  # None (all), [names], or {domain: [names]}
    domains: tuple[str, ...] | None
    mixture: dict | None  # {domain_or_source: weight}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One curriculum stage, every field filled in (rl/curriculum.py describes them)."""

    name: str
    data: StageData
    max_prompt_len: int
    max_response_len: int
    loss: dict  # overrides of the run's loss options
    sampling: dict  # overrides of the run's rollout options
    end: dict  # {max_steps, plateau: None | {metric, window, min_delta, patience, min_steps, on_last_stage}}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Data:
    sources: tuple[dict, ...]  # dsrl_jax.data.sources specs
    prompt_mode: str
    plain_template: str
    seed: int
    decontaminate: dict | None


@dataclasses.dataclass(frozen=True)
class Settings:
    """The whole parsed training config.

    `config` is the ConfigDict it was parsed from, for the blocks read as they are
    (model, train, optim, checkpoint, eval, log) and for writing config.json.
    """

    config: Any
    seed: int
    total_steps: int
    init_from: str
    mesh: dict
    sharding_rules: dict
    rollout: Rollout
    loss: Loss
    stages: tuple[Stage, ...]
    data: Data
    rewards: dict  # {domain: [{name, weight, options}], modules, allow_unsandboxed}
    reward_workers: int
    reward_timeout_s: float


# ---- stages ------------------------------------------------------------------------------
def _merge(base: dict, new: Mapping, where: str) -> dict:
    """`base` updated by `new`; keys `base` lacks are an error naming the field."""
    out = copy.deepcopy(base)
    for key, value in new.items():
        if key not in out:
            raise ValueError(f"{where}.{key}: unknown field; known: {sorted(out)}")
        if key == "plateau" and value is not None:
            out[key] = _merge(defaults.PLATEAU, value, f"{where}.plateau")
        elif isinstance(out[key], dict) and key not in _OPEN and value is not None:
            out[key] = _merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_dict(**overrides) -> dict:
    """A stage as a plain dict with every field at its default (defaults.STAGE);
    `overrides` merge in, nested dicts too (`end={"plateau": {...}}` fills the plateau)."""
    return _merge(defaults.STAGE, overrides, "stage")


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
    names_ok = lambda v: isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v)  # noqa: E731
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


def parse_stages(stages: Sequence[Mapping] | Mapping) -> tuple[Stage, ...]:
    """Stages from plain stage dicts (defaults filled in); ValueError names the first bad
    field, e.g. 'stages[1](b).end.plateau.window'."""
    if isinstance(stages, Mapping):
        stages = [stages]
    stages = list(stages or [])
    if not stages:
        raise ValueError("curriculum: needs at least one stage")
    merged = [_merge(defaults.STAGE, s, f"stages[{i}]") for i, s in enumerate(stages)]
    names = [s["name"] for s in merged]
    if len(set(names)) != len(names):
        raise ValueError(f"curriculum: stage names must be distinct, got {names}")
    for i, s in enumerate(merged):
        validate_stage(s, f"stages[{i}]({s['name']})", last=i == len(merged) - 1)
    out = []
    for s in merged:
        d = s["data"]
        data = StageData(levels=d["levels"], domains=None if d["domains"] is None else tuple(d["domains"]),
                         mixture=d["mixture"])
        out.append(Stage(name=s["name"], data=data, max_prompt_len=s["max_prompt_len"],
                         max_response_len=s["max_response_len"], loss=dict(s["loss"] or {}),
                         sampling=dict(s["sampling"] or {}), end=s["end"]))
    return tuple(out)


def stage_loss(settings: Settings, stage: Stage) -> Loss:
    """The loss options of `stage`: the run's loss with the stage's `loss` overrides.

    `max_response_len` (the constant of seq-mean-token-sum-norm) None or 0 becomes the
    stage's max_response_len; another value that differs from it is a ValueError.
    """
    known = {f.name for f in dataclasses.fields(Loss)}
    unknown = sorted(set(stage.loss) - known)
    if unknown:
        raise ValueError(f"loss.{unknown[0]}: unknown loss option; known: {sorted(known)}")
    loss = dataclasses.replace(settings.loss, **stage.loss)
    if not loss.max_response_len:
        return dataclasses.replace(loss, max_response_len=stage.max_response_len)
    if loss.max_response_len != stage.max_response_len:
        raise ValueError(f"loss.max_response_len: {loss.max_response_len} differs from the stage's max_response_len "
                         f"{stage.max_response_len} (leave it 0 to use the stage's)")
    return loss


def stage_rollout(settings: Settings, stage: Stage) -> Rollout:
    """The rollout options of `stage`: the run's rollout block with the stage's `sampling` overrides."""
    known = {f.name for f in dataclasses.fields(Rollout)}
    unknown = sorted(set(stage.sampling) - known)
    if unknown:
        raise ValueError(f"sampling.{unknown[0]}: unknown sampling option; known: {sorted(known)}")
    return dataclasses.replace(settings.rollout, **stage.sampling)


# ---- the whole config --------------------------------------------------------------------
def _typed(cls, block: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(block) - known):
        raise ValueError(f"{where}.{key}: unknown field; known: {sorted(known)}")
    missing = sorted(known - set(block))
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    return cls(**block)


def _stages(stages) -> tuple[Stage, ...]:
    try:
        return parse_stages(stages)
    except ValueError as e:
        raise ValueError(f"curriculum.stages: {e}") from None


def from_config(config) -> Settings:
    """The Settings of a training config (a ConfigDict or a plain dict of the same shape).

    Raises ValueError naming the field when a block does not have the shape the library
    reads (unknown or missing fields, a bad stage).
    """
    c = plain_config(config)
    data = c["data"]
    return Settings(
        config=config, seed=c["seed"], total_steps=c["total_steps"], init_from=c.get("init_from") or "",
        mesh=c["mesh"], sharding_rules=c["sharding_rules"],
        rollout=_typed(Rollout, c["rollout"], "rollout"), loss=_typed(Loss, c["loss"], "loss"),
        stages=_stages(c["curriculum"]["stages"]),
        data=Data(sources=tuple(data["sources"]), prompt_mode=data["prompt_mode"],
                  plain_template=data["plain_template"], seed=data["seed"],
                  decontaminate=data.get("decontaminate")),
        rewards=c["rewards"], reward_workers=c["reward_workers"], reward_timeout_s=c["reward_timeout_s"])
