"""Acceptance 5: `python -m dsrl_jax.grade` on real data from the command line."""
import json
import subprocess
import sys

import pytest

from dsrl_jax.grade import ks_for, pass_at_k
from tests.conftest import REPO, shared_path


def test_pass_at_k_estimator():
    assert pass_at_k(4, 0, 1) == 0 and pass_at_k(4, 4, 2) == 1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    assert ks_for(16) == [1, 2, 4, 8, 16] and ks_for(6) == [1, 2, 4, 6] and ks_for(1) == [1]


def grade(tmp_path, data, responses, *extra):
    resp_path, out_path = tmp_path / "responses.jsonl", tmp_path / "out.jsonl"
    resp_path.write_text("".join(json.dumps(r) + "\n" for r in responses))
    proc = subprocess.run(
        [sys.executable, "-m", "dsrl_jax.grade", "--data", str(data), "--responses", str(resp_path),
         "--out", str(out_path), "--workers", "2", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert "grading" in proc.stderr  # the progress bar
    return summary, lines


def test_grade_math_with_hostile_answers(tmp_path):
    data = shared_path("data", "math", "aime24.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    responses = []
    for row in rows:
        responses.append({"id": row["id"], "response": f"<think>work</think>\\boxed{{{row['answer']}}}"})
        responses.append({"id": row["id"], "response": "<think>work</think>\\boxed{-1}"})
    responses[1]["response"] = "</think>\\boxed{9^{9^{9^{9}}}}"
    responses[3]["response"] = "</think>\\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}"
    summary, lines = grade(tmp_path, data, responses + [{"id": "nope", "response": "x"}], "--timeout", "5")
    assert summary["n_problems"] == 30 and summary["n_responses"] == 60 and summary["unknown_ids"] == 1
    assert summary["mean_reward"] == pytest.approx(0.5) and summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@2"] == pytest.approx(1.0) and set(summary) >= {"pass@1", "pass@2"}
    assert lines[0]["reward"] == 1 and lines[0]["details"]["extracted"] == rows[0]["answer"]
    assert lines[1]["details"]["error"] == "timeout" and lines[1]["sample"] == 1


def test_grade_code_sets_and_attacks(tmp_path):
    path = shared_path("data", "code", "leetcode_test.json")
    rows = json.loads(path.read_text())[:8]
    responses = []
    for i, row in enumerate(rows):
        responses.append({"id": f"leetcode_test-{i}", "response": f"```python\n{row['solutions']}\n```"})
        responses.append({"id": f"leetcode_test-{i}", "response": "```python\nclass Solution:\n    pass\n```"})
    attacks = ["while True:\n    pass", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
               "import sys\nsys.exit(0)", "print('all tests passed')"]
    for i, code in enumerate(attacks):
        responses[2 * i + 1]["response"] = f"```python\n{code}\n```"
    summary, lines = grade(tmp_path, path, responses, "--test-timeout", "2")
    assert summary["n_problems"] == 8 and summary["n_responses"] == 16
    assert summary["pass@1"] == pytest.approx(0.5) and summary["pass@2"] == pytest.approx(1.0)
    assert [line["reward"] for line in lines] == [1, 0] * 8
    assert lines[0]["details"]["passed"] == lines[0]["details"]["total"] == 1


@pytest.mark.parametrize("name", ["lcb_v5_public.json", "codeforces_test.json"])
def test_grade_wrong_solutions_on_lcb_and_codeforces(tmp_path, name):
    path = shared_path("data", "code", name)
    responses = [{"id": f"{path.stem}-{i}", "response": "```python\nprint(0)\n```"} for i in range(3)]
    summary, lines = grade(tmp_path, path, responses, "--all-pass")
    assert summary["n_problems"] == 3 and summary["mean_reward"] == 0 and summary["pass@1"] == 0
    assert all("total" in line["details"] for line in lines)
