"""Reward registry and the config-driven combiner.

A reward is a function `fn(response, record, **options) -> RewardResult` registered by
name; a new reward is that function plus `@register("name")`. Configs choose rewards per
domain (`record["domain"]`, "math" or "code"), each with a weight and options:

    config.rewards = {
        "math": [{"name": "math", "weight": 1.0}],
        "code": [{"name": "code", "weight": 1.0, "options": {"all_pass": False}}],
    }

`score_record` sums weight * score over the domain's specs. `validate_reward_config` lets
the trainer fail before compiling anything when a name is misspelt.

Two keys of the same block are settings, not domains:
    modules            "pkg.rewards,other" - user modules that `@register` their own rewards;
                       `import_modules` imports them in the trainer's process and the pool
                       imports them in every worker before the registry is read.
    allow_unsandboxed  False - True lets code rewards run without bubblewrap (see sandbox.py).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from dsrl_jax import defaults

REWARDS: dict[str, Callable[..., "RewardResult"]] = {}

DEFAULT_CONFIG = defaults.REWARDS
SETTINGS = defaults.REWARD_SETTINGS  # keys of the rewards block that are not domains


@dataclasses.dataclass
class RewardResult:
    score: float
    info: dict = dataclasses.field(default_factory=dict)  # extracted answer, passed/total, error


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def register(name: str):
    """Decorator: make `fn` available to configs under `name`."""

    def wrap(fn):
        if name in REWARDS and REWARDS[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = fn
        return fn

    return wrap


def split_final_answer(response: str, after_think: bool = True) -> str | None:
    """The part of a response that holds its final answer.

    With `after_think`, a response with `</think>` is judged on what follows the last one;
    one that opens `<think>` but never closes it (truncated reasoning) has no answer.
    """
    if not after_think:
        return response
    if "</think>" in response:
        return response.rsplit("</think>", 1)[1]
    if "<think>" in response:
        return None
    return response


def import_modules(names) -> list[str]:
    """Import user reward modules ("a.b,c" or a list) so their `@register` lines run.

    Raises ValueError naming the module that fails to import. Returns the names imported.
    """
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names or () if n and n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # ImportError, or the module's own error
            raise ValueError(f"rewards.modules: cannot import {name!r}: {type(e).__name__}: {e}") from None
    return names


def reward_settings(cfg=None) -> dict:
    """The non-domain settings of a plain-dict rewards block (SETTINGS keys), defaults filled in."""
    cfg = cfg or {}
    return {key: cfg.get(key, default) for key, default in SETTINGS.items()}


def parse_reward_config(cfg=None) -> dict[str, list[RewardSpec]]:
    """{domain: [RewardSpec]} from a plain-dict rewards block (settings.Settings.rewards);
    raises ValueError on unknown names.

    The block's `modules` are imported first, so user rewards validate like built-ins.
    """
    # Imported here, not at the top: dsrl_jax.rewards imports this module before it
    # imports (and so registers) the built-in rewards, a cycle.
    import dsrl_jax.rewards  # noqa: F401

    cfg = DEFAULT_CONFIG if cfg is None else cfg
    import_modules(cfg.get("modules", ""))
    specs: dict[str, list[RewardSpec]] = {}
    for domain, entries in cfg.items():
        if domain in SETTINGS:
            continue
        if not isinstance(entries, (list, tuple)):
            raise ValueError(f"rewards.{domain}: expected a list of reward entries, got {type(entries).__name__}")
        specs[domain] = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise ValueError(f"rewards.{domain}: each entry must be an object {{name, weight, options}}")
            name = entry.get("name")
            if not isinstance(name, str) or name not in REWARDS:
                raise ValueError(
                    f"unknown reward {name!r} for domain {domain!r}; known: {sorted(REWARDS)}"
                )
            unknown = set(entry) - {"name", "weight", "options"}
            if unknown:
                raise ValueError(f"reward {name!r}: unknown keys {sorted(unknown)}")
            options = entry.get("options") or {}
            if not isinstance(options, Mapping):
                raise ValueError(f"reward {name!r}: options must be an object")
            try:
                weight = float(entry.get("weight", 1.0))
            except (TypeError, ValueError):
                raise ValueError(f"reward {name!r}: weight must be a number") from None
            specs[domain].append(RewardSpec(name, weight, dict(options)))
    return specs


def validate_reward_config(cfg) -> None:
    """Raise ValueError naming the first unknown reward or malformed entry."""
    parse_reward_config(cfg)


def score_record(response: str, record: dict, specs: dict[str, list[RewardSpec]]) -> RewardResult:
    """Weighted sum of the record's domain rewards; info keeps each component's details.
    Whether the response counts as correct is `eval_metrics.is_correct` of the sum."""
    domain = record.get("domain")
    if domain not in specs:
        return RewardResult(0.0, {"error": f"no rewards configured for domain {domain!r}"})
    total, info = 0.0, {}
    for spec in specs[domain]:
        res = REWARDS[spec.name](response, record, **dict(spec.options))
        total += spec.weight * res.score
        info[spec.name] = {"score": res.score, **res.info}
    if len(specs[domain]) == 1:  # flatten the common case for readable output
        info = {"reward": specs[domain][0].name, **next(iter(info.values()))}
    return RewardResult(total, info)
