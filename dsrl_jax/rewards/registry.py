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
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

REWARDS: dict[str, Callable[..., "RewardResult"]] = {}

DEFAULT_CONFIG = {
    "math": [{"name": "math", "weight": 1.0}],
    "code": [{"name": "code", "weight": 1.0}],
}


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


def _as_dict(x) -> dict:
    if hasattr(x, "to_dict"):  # ml_collections.ConfigDict
        return x.to_dict()
    return dict(x)


def parse_reward_config(cfg=None) -> dict[str, list[RewardSpec]]:
    """{domain: [RewardSpec]} from a dict / ConfigDict; raises ValueError on unknown names."""
    import dsrl_jax.rewards  # noqa: F401  (registers the built-in rewards)

    cfg = DEFAULT_CONFIG if cfg is None else _as_dict(cfg)
    specs: dict[str, list[RewardSpec]] = {}
    for domain, entries in cfg.items():
        specs[domain] = []
        for entry in entries:
            entry = _as_dict(entry)
            name = entry.get("name")
            if name not in REWARDS:
                raise ValueError(
                    f"unknown reward {name!r} for domain {domain!r}; known: {sorted(REWARDS)}"
                )
            unknown = set(entry) - {"name", "weight", "options"}
            if unknown:
                raise ValueError(f"reward {name!r}: unknown keys {sorted(unknown)}")
            options = _as_dict(entry.get("options") or {})
            specs[domain].append(RewardSpec(name, float(entry.get("weight", 1.0)), options))
    return specs


def validate_reward_config(cfg) -> None:
    """Raise ValueError naming the first unknown reward or malformed entry."""
    parse_reward_config(cfg)


def score_record(response: str, record: dict, specs: dict[str, list[RewardSpec]]) -> RewardResult:
    """Weighted sum of the record's domain rewards; info keeps each component's details.

    `info["correct"]` is True when every component scored 1 (pass@k counts these).
    """
    domain = record.get("domain")
    if domain not in specs:
        return RewardResult(0.0, {"error": f"no rewards configured for domain {domain!r}"})
    total, info, correct = 0.0, {}, True
    for spec in specs[domain]:
        res = REWARDS[spec.name](response, record, **dict(spec.options))
        total += spec.weight * res.score
        correct &= res.score >= 1.0
        info[spec.name] = {"score": res.score, **res.info}
    if len(specs[domain]) == 1:  # flatten the common case for readable output
        info = {"reward": specs[domain][0].name, **next(iter(info.values()))}
    return RewardResult(total, {**info, "correct": bool(correct)})
