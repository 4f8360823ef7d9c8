"""Math reward: the last \\boxed{} of the final answer, checked with Math-Verify.

Math-Verify bounds its own work with signal.alarm, which only works in a process's main
thread and would fight the pool's timeout; we call it with its timeouts disabled
(`parsing_timeout=None`, `timeout_seconds=None`). The hard bound is the RewardPool's
per-verification deadline, which kills a stuck worker (see pool.py). So never call this
reward on an untrusted response outside a pool unless you accept that it may hang.
"""
from __future__ import annotations

import logging

from dsrl_jax.rewards.registry import RewardResult, register, split_final_answer

_BOX_COMMANDS = ("\\boxed", "\\fbox")

# Math-Verify logs a warning for every call made with its timeout disabled.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the {...} group opening at text[start] (nesting aware) and its end index."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "\\":
            continue
        if c == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif c == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} / `\\boxed 5` in text, or None."""
    pos = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    while pos >= 0:
        cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, pos))
        rest = pos + len(cmd)
        j = rest
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            got = _braced(text, j)
            if got is not None:
                return got[0].strip()
        elif j > rest and j < len(text):  # `\boxed 5`: one token up to whitespace or `$`
            k = j
            while k < len(text) and not text[k].isspace() and text[k] != "$":
                k += 1
            if k > j:
                return text[j:k]
        # malformed box: fall back to an earlier one
        pos = max(text.rfind(cmd, 0, pos) for cmd in _BOX_COMMANDS)
    return None


def _parse(latex: str):
    from math_verify import parse

    return parse(latex, parsing_timeout=None)


def parse_gold(answer: str):
    """Parse a reference answer robustly: as `\\boxed{answer}`, then as written, then in $...$."""
    answer = str(answer).strip()
    for text in (f"\\boxed{{{answer}}}", answer, f"${answer}$"):
        parsed = _parse(text)
        if parsed:
            return parsed
    return []


@register("math")
def math_reward(
    response: str,
    record: dict,
    *,
    answer_after_think: bool = True,
    max_answer_chars: int | None = 1000,
    **_: object,
) -> RewardResult:
    """1.0 if the response's last boxed answer equals record["answer"], else 0.0."""
    from math_verify import verify

    final = split_final_answer(response, answer_after_think)
    if final is None:
        return RewardResult(0.0, {"error": "no_final_answer"})
    answer = last_boxed(final)
    if answer is None:
        return RewardResult(0.0, {"error": "no_boxed"})
    info = {"extracted": answer[:200]}
    if max_answer_chars is not None and len(answer) > max_answer_chars:
        return RewardResult(0.0, {**info, "error": "answer_too_long"})
    gold = parse_gold(record["answer"])
    if not gold:
        return RewardResult(0.0, {**info, "error": "gold_unparsable"})
    pred = _parse(f"\\boxed{{{answer}}}")
    if not pred:
        return RewardResult(0.0, {**info, "error": "unparsable"})
    ok = verify(gold, pred, timeout_seconds=None)
    return RewardResult(float(ok), info if ok else {**info, "error": "wrong_answer"})
