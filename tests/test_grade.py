"""`python -m dsrl_jax.grade` on real data and on bad input from the command line."""
import json
import os
import subprocess
import sys

import pytest

from dsrl_jax.eval_metrics import ks_for, pass_at_k
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


# -- bad input: one line, non-zero exit, nothing graded lost ------------------------------
MATH_ROWS = [{"id": "m1", "domain": "math", "problem": "1+1?", "answer": "2"},
             {"id": "m2", "domain": "math", "problem": "2+2?", "answer": "4"}]  # fmt: skip
DEEP = ("[" * 200_000 + "]" * 200_000).encode()


def write_lines(path, lines):
    path.write_bytes(b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines))
    return path


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "dsrl_jax.grade", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return proc


def assert_one_line_error(proc, *words, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("grade: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]


@pytest.fixture
def files(tmp_path):
    data = write_lines(tmp_path / "data.jsonl", MATH_ROWS)
    resp = write_lines(tmp_path / "resp.jsonl", [{"id": "m1", "response": "\\boxed{2}"}])
    return data, resp


def test_bad_lines_in_data_and_responses_are_counted_and_skipped(tmp_path):
    data = write_lines(tmp_path / "data.jsonl", [MATH_ROWS[0], b'{"id": "x\xff", "problem": "?", "answer": "1"}',
                                                  DEEP, MATH_ROWS[1]])  # fmt: skip
    resp = write_lines(tmp_path / "resp.jsonl", [{"id": "m1", "response": "\\boxed{2}"}, b'{"id": "m2", "response": "\xfe"}',
                                                  DEEP, {"id": "m2", "response": "\\boxed{5}"}, b"[1, 2]"])  # fmt: skip
    out = tmp_path / "out.jsonl"
    proc = cli("--data", data, "--responses", resp, "--out", out, "--workers", 0)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["skipped_problem_rows"] == 2 and summary["malformed_responses"] == 3
    assert [json.loads(line)["reward"] for line in out.read_text().splitlines()] == [1, 0]


@pytest.mark.parametrize("args, words", [
    (["--workers", "-1"], ["--workers"]),
    (["--timeout", "-5"], ["--timeout"]),
    (["--timeout", "nan"], ["--timeout"]),
    (["--timeout", "inf"], ["--timeout"]),
    (["--test-timeout", "0"], ["--test-timeout"]),
    (["--test-timeout", "-1"], ["--test-timeout"]),
    (["--format", "bogus"], ["--format", "bogus"]),
    (["--rewards", "{not json"], ["--rewards", "not JSON"]),
    (["--rewards", "[1]"], ["--rewards"]),
    (["--rewards", '{"math": [{"name": "nope"}]}'], ["--rewards", "nope"]),
    (["--rewards", '{"math": 3}'], ["--rewards"]),
    (["--rewards", '{"math": [{"name": "math", "weight": "heavy"}]}'], ["--rewards", "weight"]),
    (["--rewards", '{"modules": "no_such_module_dsrl", "math": [{"name": "math"}]}'], ["no_such_module_dsrl"]),
    (["--out", "/nonexistent-dir/out.jsonl"], ["--out", "does not exist"]),
    (["--bogus-flag"], ["--bogus-flag"]),
])
def test_argument_errors_before_any_work(files, capsys, args, words):
    from dsrl_jax.grade import main

    data, resp = files
    with pytest.raises(SystemExit) as exit:
        main(["--data", str(data), "--responses", str(resp), *args])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grade: error:") and all(w in err[0] for w in words), err


def test_file_errors_are_one_line(tmp_path, files):
    data, resp = files
    assert_one_line_error(cli("--data", tmp_path / "missing.jsonl", "--responses", resp), "--data", "No such file")
    assert_one_line_error(cli("--data", data, "--responses", tmp_path), "--responses", "directory")
    (tmp_path / "p.parquet").write_bytes(b"PAR1 not really")
    assert_one_line_error(cli("--data", tmp_path / "p.parquet", "--responses", resp), "--data")
    (tmp_path / "bad.json").write_bytes(b'[{"id": "\xff"}]')
    assert_one_line_error(cli("--data", tmp_path / "bad.json", "--responses", resp), "--data", "UTF-8")
    (tmp_path / "deep.json").write_bytes(DEEP)
    assert_one_line_error(cli("--data", tmp_path / "deep.json", "--responses", resp), "--data", "deep")


def test_parquet_without_pyarrow_says_so(tmp_path, monkeypatch):
    from dsrl_jax.data.adapters import read_rows

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match="needs pyarrow"):
        read_rows(tmp_path / "x.parquet")


def test_nothing_could_be_graded_is_an_error(tmp_path, files):
    data, _ = files
    resp = write_lines(tmp_path / "r.jsonl", [{"id": "unknown", "response": "x"}, b"\xff"])
    assert_one_line_error(cli("--data", data, "--responses", resp), "nothing could be graded", code=1)
    bad = write_lines(tmp_path / "bad.jsonl", [{"id": "q", "problem": "?"}, b"\xff"])
    assert_one_line_error(cli("--data", bad, "--responses", resp), "--data", "no problem", code=1)


def test_canonical_code_rows_without_domain_are_graded(tmp_path):
    from dsrl_jax.rewards import sandbox

    if not sandbox.bwrap_available():
        pytest.skip("bubblewrap is unavailable here")
    check = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
    rows = [{"id": "he-add", "problem": "def add(a, b):\n", "tests": [{"testtype": "assert", "check": check, "entry_point": "add"}]},
            {"id": "sum", "problem": "a+b", "tests": [{"testtype": "stdin", "input": "1 2\n", "output": "3\n"}]}]  # fmt: skip
    data = write_lines(tmp_path / "he.jsonl", rows)
    responses = [{"id": "he-add", "response": "```python\ndef add(a, b):\n    return a + b\n```"},
                 {"id": "he-add", "response": "```python\ndef add(a, b):\n    return a - b\n```"},
                 {"id": "sum", "response": "```python\nprint(sum(map(int, input().split())))\n```"}]  # fmt: skip
    resp, out = write_lines(tmp_path / "r.jsonl", responses), tmp_path / "out.jsonl"
    proc = cli("--data", data, "--responses", resp, "--out", out, "--workers", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["skipped_problem_rows"] == 0
    assert [json.loads(line)["reward"] for line in out.read_text().splitlines()] == [1, 0, 1]


def test_code_without_a_sandbox_is_refused_unless_allowed(tmp_path):
    rows = [{"id": "sum", "problem": "a+b", "tests": [{"testtype": "stdin", "input": "1 2\n", "output": "3\n"}]}]
    data = write_lines(tmp_path / "d.jsonl", rows)
    resp = write_lines(tmp_path / "r.jsonl", [{"id": "sum", "response": "```python\nprint(3)\n```"}])
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap on PATH
    args = [sys.executable, "-m", "dsrl_jax.grade", "--data", str(data), "--responses", str(resp), "--workers", "0"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert_one_line_error(proc, "bubblewrap", "allow_unsandboxed", code=1)
    proc = subprocess.run(args + ["--allow-unsandboxed"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "UNSANDBOXED" in proc.stderr, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1])["mean_reward"] == 1
