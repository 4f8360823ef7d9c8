"""Code reward: LiveCodeBench comparison semantics, extraction, and the reference-solution sweep."""
import json

import pytest

from dsrl_jax.data.adapters import load_problems
from dsrl_jax.rewards import RewardPool, parse_reward_config, score_record
from dsrl_jax.rewards.code import code_reward, extract_code, fn_name_from_starter, stdin_output_matches
from tests.conftest import shared_path


@pytest.mark.parametrize(
    "got, expected, ok",
    [
        ("3\n", "3", True),
        ("  1 2 \r\n3\n\n", "1 2\n3", True),
        ("1.50\n", "1.5\n", True),  # equal as decimals
        ("1e1\n", "10\n", True),
        ("0.1 0.2\n", "0.1 0.20000001\n", False),  # exact, not approximate
        ("1\n2\n", "1\n", False),  # line counts must match
        ("YES\n", "yes\n", False),
        ("abc 1\n", "abc 1.0\n", False),  # a line with a word is compared as text
        ("nan\n", "nan\n", True),
        ("sNaN\n", "1\n", False),  # a signalling NaN must not raise in the comparison
        ("sNaN\n", "sNaN\n", True),
        ("1 sNaN\n", "1 NaN\n", False),
        ("", "", True),
    ],
)
def test_stdin_output_matches_lcb_semantics(got, expected, ok):
    assert stdin_output_matches(got, expected) is ok


def test_extract_code_prefers_last_python_block():
    text = "```python\nprint(1)\n```\ntext\n```\nplain\n```\n```py\nprint(2)\n```\n```bash\nls\n```"
    assert extract_code(text).strip() == "print(2)"
    assert extract_code("```\nprint(3)\n```").strip() == "print(3)"
    assert extract_code("no code") is None


def test_fn_name_from_starter():
    assert fn_name_from_starter("class Solution:\n    def twoSum(self, nums: List[int]) -> int:\n") == "twoSum"
    assert fn_name_from_starter("def f(x):\n    pass") == "f"
    assert fn_name_from_starter("") is None


def test_functional_compares_json_with_tuples_as_lists():
    record = {"domain": "code", "tests": [
        {"testtype": "functional", "fn_name": "f", "input": "[3, 1]\n2", "output": "[[1, 3], 2]"},
        {"testtype": "functional", "fn_name": "f", "input": "[]\n0", "output": "[[], 0]"},
    ]}
    code = "```python\ndef f(xs, k):\n    return (sorted(xs), k)\n```"
    assert code_reward(code, record).score == 1
    wrong = "```python\ndef f(xs, k):\n    return (xs, k)\n```"
    res = code_reward(wrong, record)
    assert res.score == 0.5 and res.info["passed"] == 1
    assert code_reward(wrong, record, all_pass=True).score == 0


def test_missing_code_and_truncated_think_score_zero():
    record = {"domain": "code", "tests": [{"testtype": "stdin", "input": "", "output": "1"}]}
    assert code_reward("print(1)", record).info["error"] == "no_code"
    assert code_reward("<think>```python\nprint(1)\n```", record).score == 0
    assert code_reward("<think>x</think>```python\nprint(1)\n```", record).score == 1


def test_per_sample_budget_bounds_many_slow_tests():
    record = {"domain": "code", "tests": [{"testtype": "stdin", "input": "", "output": "1"}] * 6}
    res = code_reward("```python\nimport time\ntime.sleep(5)\nprint(1)\n```", record,
                      per_test_timeout_s=1.0, sample_timeout_s=2.5)
    assert res.score == 0 and res.info["passed"] == 0


@pytest.fixture(scope="module")
def pool():
    with RewardPool(num_workers=2) as p:
        yield p


def test_leetcode_reference_solutions_pass(pool):
    """Acceptance 2: >= 98% of the 200 reference solutions pass their own tests."""
    path = shared_path("data", "code", "leetcode_test.json")
    records, report = load_problems(path)
    assert report.loaded == 200
    solutions = [row["solutions"] for row in json.loads(path.read_text())]
    results = pool.score([f"<think>.</think>\n```python\n{s}\n```" for s in solutions], records)
    failures = [(r["id"], res.info) for r, res in zip(records, results) if res.score != 1]
    print(f"\nleetcode_test: {200 - len(failures)}/200 pass; failures: {failures}")
    assert len(failures) <= 4, failures


@pytest.mark.parametrize("name, n", [("lcb_v5_public.json", 879), ("codeforces_test.json", 408),
                                     ("lcb_2408_2501_public.json", 279), ("code_contests_test.json", 165)])
def test_every_code_problem_loads(name, n):
    records, report = load_problems(shared_path("data", "code", name))
    assert report.loaded == n and report.skipped == 0, str(report)
    specs = parse_reward_config(None)
    assert all(r["domain"] == "code" and r["tests"] for r in records)
    # a wrong solution scores 0 on the first problem of each set
    assert score_record("```python\nprint('wrong')\n```", records[0], specs).score == 0


def test_wrong_and_right_solutions_on_real_problems(pool):
    lcb, _ = load_problems(shared_path("data", "code", "lcb_v5_public.json"))
    cf, _ = load_problems(shared_path("data", "code", "codeforces_test.json"))
    short_sort = lcb[0]  # "abc" after at most one swap
    right = ("t = int(input())\nfor _ in range(t):\n    s = input().strip()\n"
             "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')")
    functional = next(r for r in lcb if r["tests"][0]["testtype"] == "functional" and r["tests"][0]["fn_name"] == "countSeniors")
    seniors = "class Solution:\n    def countSeniors(self, details):\n        return sum(int(d[11:13]) > 60 for d in details)"
    min_max = cf[0]
    mm = "t = int(input())\nfor _ in range(t):\n    x, y = map(int, input().split())\n    print(min(x, y), max(x, y))"
    wrong = "print('YES')"
    responses = [right, wrong, seniors, "class Solution:\n    def countSeniors(self, details):\n        return 0", mm, wrong]
    records = [short_sort, short_sort, functional, functional, min_max, min_max]
    scores = [r.score for r in pool.score([f"```python\n{c}\n```" for c in responses], records)]
    assert scores[0] == 1 and scores[1] == 0
    assert scores[2] == 1 and scores[3] < 1
    assert scores[4] == 1 and scores[5] == 0
