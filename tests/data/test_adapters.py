"""Format adapters: every supported row format becomes a canonical record; bad rows are counted."""
import base64
import json
import pickle
import zlib

import pytest

from dsrl_jax.data.adapters import decode_lcb_tests, detect_format, load_problems
from dsrl_jax.data.schema import validate_record
from tests.conftest import shared_path

TESTS = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]


def lcb_compressed(tests) -> str:
    """LiveCodeBench's private_test_cases encoding: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def test_lcb_hf_row_with_compressed_private_tests():
    row = {"question_id": "abc301_a", "question_content": "Add.", "starter_code": "", "difficulty": "easy",
           "public_test_cases": json.dumps(TESTS), "private_test_cases": lcb_compressed(TESTS * 2),
           "metadata": "{}"}
    (rec,), report = load_problems([row])
    assert report.skipped == 0 and rec["id"] == "abc301_a" and len(rec["tests"]) == 3
    assert rec["difficulty"] == "easy" and rec["tests"][0]["testtype"] == "stdin"
    plain_zlib = base64.b64encode(zlib.compress(json.dumps(TESTS).encode())).decode()
    assert decode_lcb_tests(plain_zlib) == TESTS


def test_lcb_functional_name_from_metadata():
    row = {"question_id": "q", "question_content": "x", "starter_code": "class Solution:\n    def f(self, a):\n",
           "public_test_cases": json.dumps([{"input": "1", "output": "2", "testtype": "functional"}]),
           "metadata": json.dumps({"func_name": "g"})}
    (rec,), _ = load_problems([row])
    assert rec["tests"][0]["fn_name"] == "g"


def test_hostile_pickle_is_refused():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    row = {"question_id": "q", "question_content": "x", "public_test_cases": "[]",
           "private_test_cases": base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()}
    records, report = load_problems([row])
    assert records == [] and report.skipped == 1 and "refusing" in report.examples[0][1]


@pytest.mark.parametrize("row, kind", [
    ({"problem": "p", "tests": "[{'input': '1', 'output': '1'}]"}, "stdin"),  # Python literal string
    ({"problem": "p", "tests": {"inputs": ["1\n"], "outputs": ["1\n"]}}, "stdin"),  # CodeContests
    ({"problem": "p", "tests": {"functional": "def check(candidate):\n    assert candidate(1) == 1\n\n\ncheck(Solution().f)"}}, "assert"),
    ({"problem_id": 7, "question": "p", "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})}, "stdin"),
    ({"problem_id": 8, "question": "p", "input_output": json.dumps({"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]})}, "functional"),
    ({"name": "cc", "description": "p", "public_tests": {"input": ["1"], "output": ["1"]}, "private_tests": {"input": [], "output": []}}, "stdin"),
    ({"task_id": "HumanEval/0", "prompt": "def f(x):\n", "test": "def check(candidate):\n    assert candidate(1) == 1\n", "entry_point": "f"}, "assert"),
    ({"task_id": 2, "text": "Write f.", "test_list": ["assert f(1) == 1", "assert f(2) == 2"]}, "assert"),
])
def test_code_formats(row, kind):
    (rec,), report = load_problems([row])
    assert report.skipped == 0, str(report)
    assert validate_record(rec) is rec and rec["domain"] == "code" and rec["tests"][0]["testtype"] == kind


def test_leetcode_assert_entry_point_split():
    row = {"problem": "p", "tests": {"functional": "def check(candidate):\n    assert candidate(1) == 1\n\n\ncheck(Solution().f)"}}
    (rec,), _ = load_problems([row])
    assert rec["tests"][0]["entry_point"] == "Solution().f" and "check(Solution" not in rec["tests"][0]["check"]


def test_math_formats():
    rows = [{"id": "a", "problem": "1+1", "answer": "2"},
            {"question": "2+2", "gt_answer": "4"},
            {"problem": "3+3", "solution": "so \\boxed{6}."},
            {"id": "z", "problem": "p", "answer": 5}]
    records, report = load_problems(rows)
    assert [r["answer"] for r in records] == ["2", "4", "6", "5"] and report.skipped == 0
    assert records[1]["id"] == "row-1" and all(r["domain"] == "math" for r in records)
    assert detect_format(rows[0]) == "math" and detect_format({**records[0]}) == "canonical"


def test_malformed_rows_are_counted_not_fatal(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"id": "ok", "problem": "1+1", "answer": "2"}), "{not json",
             json.dumps({"id": "noans", "problem": "x"}), json.dumps([1, 2]),
             json.dumps({"id": "ok", "problem": "dup", "answer": "3"}),
             json.dumps({"problem": "p", "tests": "not a literal ("}),
             json.dumps({"id": "c", "domain": "code", "problem": "p", "tests": [{"testtype": "weird"}]})]
    path.write_text("\n".join(lines) + "\n")
    records, report = load_problems(path)
    assert [r["id"] for r in records] == ["ok"]
    assert report.total == 7 and report.skipped == 6 and len(report.examples) == 5
    assert "6 skipped" in str(report) and "duplicate id 'ok'" in str(report.examples)
    with pytest.raises(ValueError, match="unknown format"):
        load_problems(path, format="nope")


def test_json_and_parquet_files(tmp_path):
    rows = [{"id": "a", "problem": "1+1", "answer": "2"}]
    (tmp_path / "p.json").write_text(json.dumps({"data": rows}))
    assert load_problems(tmp_path / "p.json")[0][0]["answer"] == "2"
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert load_problems(tmp_path / "p.parquet")[0][0]["id"] == "a"


def test_shared_sets_load_completely():
    for name in ("lcb_v5_public.json", "codeforces_test.json", "leetcode_test.json", "code_contests_test.json", "lcb_2408_2501_public.json"):
        records, report = load_problems(shared_path("data", "code", name))
        assert report.skipped == 0 and len({r["id"] for r in records}) == len(records)
    for name in ("aime24.jsonl", "amc23.jsonl", "math500.jsonl"):
        assert load_problems(shared_path("data", "math", name))[1].skipped == 0


def test_canonical_code_rows_without_domain_are_detected_by_their_tests():
    check = "def check(candidate):\n    assert candidate(1) == 2\n"
    row = {"id": "HumanEval/x", "problem": "def inc(x):\n",
           "tests": [{"testtype": "assert", "check": check, "entry_point": "inc"}]}
    records, report = load_problems([row, {"id": "s", "problem": "p", "tests": [{"testtype": "stdin", "input": "", "output": "1"}]}])
    assert report.loaded == 2 and report.formats["canonical"] == 2, str(report)
    assert records[0]["domain"] == "code" and records[0]["tests"] == row["tests"]
    # tests that are not canonical keep the rllm adapter (no id: never canonical)
    assert detect_format({"problem": "p", "tests": [{"input": "1", "output": "2"}]}) == "rllm"


def test_undecodable_and_deep_lines_are_counted(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"id": "m", "domain": "math", "problem": "?", "answer": "1"}).encode()
    path.write_bytes(good + b"\n" + b'{"id": "\xff"}\n' + b"[" * 100_000 + b"\n")
    records, report = load_problems(path)
    assert report.loaded == 1 and report.skipped == 2, str(report)
