"""Format reward: did the response finish its reasoning and give an answer in the right form?

1.0 when (optionally) a `<think>...</think>` block is closed and the final answer holds a
\\boxed{} (math) or a fenced code block (code); 0.0 otherwise. Cheap, no sandbox, no
Math-Verify: a shaping term to be weighted small next to `math` / `code`.
"""
from __future__ import annotations

from dsrl_jax.rewards.code import extract_code
from dsrl_jax.rewards.math import last_boxed
from dsrl_jax.rewards.registry import RewardResult, register, split_final_answer


@register("format")
def format_reward(
    response: str, record: dict, *, require_think: bool = True, **_: object
) -> RewardResult:
    if require_think and "</think>" not in response:
        return RewardResult(0.0, {"error": "no_think_close"})
    final = split_final_answer(response, True)
    if final is None:
        return RewardResult(0.0, {"error": "no_final_answer"})
    found = last_boxed(final) if record.get("domain") == "math" else extract_code(final)
    if found is None:
        return RewardResult(0.0, {"error": "no_answer"})
    return RewardResult(1.0, {})
