"""Math reward: extraction, the acceptance sweep over ../shared/data/math, hostile answers."""
import time

import pytest

from dsrl_jax.data.adapters import load_problems
from dsrl_jax.rewards import RewardPool, parse_reward_config, score_record
from dsrl_jax.rewards.math import last_boxed, math_reward
from tests.conftest import shared_path


def realistic(answer: str) -> str:
    """A response shaped like R1-distill output: a think block (with a decoy box), then the answer."""
    return (
        "<think>\nLet me set up the problem. If I try small cases first, I get \\boxed{0}, "
        "but that ignores the constraint, so recheck... yes, the earlier guess was wrong.\n"
        "</think>\n\nWorking through the algebra carefully, we obtain the result.\n\n"
        f"The final answer is $\\boxed{{{answer}}}$."
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("\\boxed{a} then \\boxed{\\sqrt{x^{2}+1}}", "\\sqrt{x^{2}+1}"),
        ("\\boxed 5.", "5."),
        ("answer: \\boxed 5", "5"),
        ("\\fbox{7}", "7"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{unclosed", None),
        ("\\boxed{3} and \\boxed{unclosed", "3"),
        ("no box", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_answer_comes_from_after_think():
    record = {"domain": "math", "answer": "7"}
    assert math_reward("<think>\\boxed{7}</think> so \\boxed{8}", record).score == 0
    assert math_reward("<think>\\boxed{8}</think> so \\boxed{7}", record).score == 1
    truncated = math_reward("<think>... \\boxed{7} and still thinking", record)
    assert truncated.score == 0 and truncated.info["error"] == "no_final_answer"
    assert math_reward("<think>\\boxed{7}", record, answer_after_think=False).score == 1
    assert math_reward("</think>the answer is 7", record).info["error"] == "no_boxed"


def test_equivalent_forms_score_one():
    record = {"domain": "math", "answer": "\\frac{14}{3}"}
    for form in ("\\frac{14}{3}", "14/3", "\\dfrac{14}{3}", "4\\frac{2}{3}"):
        assert math_reward(realistic(form), record).score == 1, form
    assert math_reward(realistic("4.6"), record).score == 0


def _load_eval_sets():
    records = []
    for name in ("aime24", "amc23", "math500"):
        rows, report = load_problems(shared_path("data", "math", f"{name}.jsonl"))
        assert report.skipped == 0, str(report)
        records += rows
    assert len(records) == 30 + 40 + 500
    return records


def _normalized(answer: str) -> str:
    return "".join(answer.split()).replace("\\!", "").replace("\\dfrac", "\\frac").strip("$")


def test_reference_answers_score_one_and_shifted_answers_zero():
    """Acceptance 1, through the pool with 2 workers.

    A shifted answer scoring 1 is a false positive unless the two reference answers are
    the same text after whitespace/\\dfrac normalisation (then the answers ARE equal).
    """
    records = _load_eval_sets()
    shifted = [records[(i + 1) % len(records)]["answer"] for i in range(len(records))]
    with RewardPool(num_workers=2) as pool:
        positives = pool.score([realistic(r["answer"]) for r in records], records)
        negatives = pool.score([realistic(a) for a in shifted], records)
    misses = [(r["id"], r["answer"], p.info) for r, p in zip(records, positives) if p.score != 1]
    assert misses == [], misses
    by_set = {name: sum(p.score for r, p in zip(records, positives) if r["id"].startswith(name))
              for name in ("aime24", "amc23")}
    assert by_set == {"aime24": 30, "amc23": 40}
    hits = [(r["id"], r["answer"], a) for r, a, n in zip(records, shifted, negatives) if n.score != 0]
    false_pos = [h for h in hits if _normalized(h[1]) != _normalized(h[2])]
    print(f"\nshifted pairs scoring 1: {len(hits)} (identical answers: {len(hits) - len(false_pos)}), "
          f"false positives: {len(false_pos)}/{len(records)} {false_pos}")
    assert len(false_pos) <= 0.005 * len(records)


HOSTILE = {
    "tower": "\\boxed{9^{9^{9^{9}}}}",
    "nested_parens": "\\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}",
    "megabyte": "\\boxed{" + "1+" * 500_000 + "1}",
    "megabyte_braces": "\\boxed{" + "{" * 300_000 + "x" + "}" * 300_000 + "}",
}


@pytest.mark.parametrize("cap", [None, 1000])
def test_hostile_answers_score_zero_within_timeout(cap):
    """Acceptance 4: no length cap (the real parse/verify path), and the default cap."""
    timeout = 3.0
    config = {"math": [{"name": "math", "weight": 1.0, "options": {"max_answer_chars": cap}}]}
    record = {"domain": "math", "answer": "7"}
    with RewardPool(config, num_workers=2, timeout_s={"math": timeout}) as pool:
        start = time.monotonic()
        handles = {name: pool.submit([f"</think>{text}"], [record]) for name, text in HOSTILE.items()}
        for name, handle in handles.items():
            (res,) = handle.result(timeout=60)
            assert res.score == 0, (name, res)
        # 4 items on 2 workers: at most two rounds of timeouts plus worker restarts
        assert time.monotonic() - start < 2 * timeout + 30
        (ok,) = pool.score(["</think>\\boxed{7}"], [record])  # the pool still works
        assert ok.score == 1
    print(f"\ncap={cap}: pool stats {dict(pool.stats)}")


def test_score_record_without_pool_uses_same_reward():
    specs = parse_reward_config(None)
    assert score_record(realistic("10"), {"domain": "math", "answer": "10"}, specs).score == 1
