"""The demo's synthetic reasoning task: chains of single-digit additions and subtractions.

    problem   "3+5-2+7"                               (difficulty 3 = three steps)
    solution  "3+5=8,8-2=6,6+7=13 \\boxed{13}"
    answer    "13"

Why this task: a tiny Qwen2 must learn it partially in a minute or two of supervised
training on a CPU, and reinforcement learning must have something left to fix. Each step
is one "fact" (a running total in 0..MAX_TOTAL plus or minus a digit), few enough to
memorise, and a chain of k steps is right only if all k facts are: a model that knows each
fact with probability p under sampling solves a k-step problem with about p^k, so the
difficulty levels spread from easy to hard and sharpening the policy (what GRPO does at
temperature 1) pays off most on the long chains. The worked solution ends in \\boxed{},
so the project's real math reward (Math-Verify) grades it; no `<think>` block is needed
(dsrl_jax.rewards.registry.split_final_answer judges the whole response then).

Records are canonical math records (dsrl_jax/data/schema.py) plus `difficulty`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

MAX_TOTAL = 19  # running totals stay in 0..MAX_TOTAL
DIFFICULTIES = (1, 2, 3, 4, 5)
_TERM = re.compile(r"([+-])(\d+)")


def make_record(rng: np.random.Generator, difficulty: int, record_id: str) -> dict:
    """One random problem with `difficulty` steps; totals never leave 0..MAX_TOTAL."""
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    total = int(rng.integers(1, 10))
    text = str(total)
    for _ in range(difficulty):
        ops = [op for op, ok in (("+", total + 1 <= MAX_TOTAL), ("-", total >= 1)) if ok]
        op = ops[int(rng.integers(len(ops)))]
        top = min(9, MAX_TOTAL - total) if op == "+" else min(9, total)
        digit = int(rng.integers(1, top + 1))
        total = total + digit if op == "+" else total - digit
        text += f"{op}{digit}"
    return {"id": record_id, "problem": text, "answer": str(total), "domain": "math",
            "difficulty": difficulty}


def solution(record: dict) -> str:
    """The worked solution of a record: one "a+b=c" per step, then the boxed answer."""
    problem = record["problem"]
    first = re.match(r"\d+", problem)
    if first is None or _TERM.sub("", problem[first.end():]):
        raise ValueError(f"not a demo arithmetic problem: {problem!r}")
    total = int(first.group())
    steps = []
    for op, digit in _TERM.findall(problem[first.end():]):
        new = total + int(digit) if op == "+" else total - int(digit)
        steps.append(f"{total}{op}{digit}={new}")
        total = new
    return ",".join(steps) + f" \\boxed{{{total}}}"


def make_split(n: int, seed: int, difficulties: Sequence[int] = DIFFICULTIES, *,
               exclude: Iterable[str] = (), unique: bool = True, prefix: str = "arith") -> list[dict]:
    """`n` records, difficulties taken round-robin (so the mix is exact), never a problem in
    `exclude`. With `unique`, no problem repeats within the split either; short chains have
    few distinct problems (~126 one-step ones), so a large supervised split may need
    unique=False. Deterministic in (n, seed, difficulties, exclude)."""
    rng = np.random.default_rng(seed)
    banned = set(exclude)
    records = []
    for i in range(n):
        k = difficulties[i % len(difficulties)]
        for _ in range(10_000):
            rec = make_record(rng, k, f"{prefix}-{i}")
            if rec["problem"] not in banned:
                break
        else:
            raise ValueError(f"ran out of distinct difficulty-{k} problems after {i} records "
                             f"(use fewer records, unique=False, or other difficulties)")
        if unique:
            banned.add(rec["problem"])
        records.append(rec)
    return records


def make_splits(sizes: Mapping[str, int], seed: int, difficulties: Sequence[int] = DIFFICULTIES,
                *, held_out: str = "eval") -> dict[str, list[dict]]:
    """Named splits, each from its own seed; no problem of the `held_out` split appears in
    any other split.

    The held-out split is drawn first, with distinct problems. The training splits only
    avoid its problems and may repeat problems (there are ~126 one-step problems in all,
    so a few thousand training records repeat the short ones), and may share problems with
    each other, as a supervised set and an RL prompt set drawn from one pool would.
    """
    if held_out not in sizes:
        raise ValueError(f"held-out split {held_out!r} is not among {list(sizes)}")
    names = list(sizes)
    seeds = {name: int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
             for i, name in enumerate(names)}
    out = {held_out: make_split(sizes[held_out], seeds[held_out], difficulties, prefix=held_out)}
    banned = {r["problem"] for r in out[held_out]}
    for name in names:
        if name != held_out:
            out[name] = make_split(sizes[name], seeds[name], difficulties, exclude=banned,
                                   unique=False, prefix=name)
    return {name: out[name] for name in names}
