"""The canonical problem record every loader produces and every reward consumes.

Records are plain JSON-able dicts (they cross process boundaries to reward workers and
are written back as JSONL), always with `id` (str), `domain` and `problem` (str):

    math  {"id", "domain": "math", "problem", "answer"}
    code  {"id", "domain": "code", "problem", "starter_code"?, "tests": [test, ...]}

Code tests, one of:
    {"testtype": "stdin", "input": str, "output": str}
    {"testtype": "functional", "fn_name"?: str, "input": str, "output": str}
        input: newline-separated JSON values, one per argument; output: JSON
    {"testtype": "assert", "check": str, "entry_point": str}
        check: code defining `check(candidate)`; entry_point: expression naming the
        candidate in the solution's namespace, e.g. "add" or "Solution().twoSum"

Other keys (source, difficulty, level, subject, ...) are carried along untouched.
"""
from __future__ import annotations

import json

DOMAINS = ("math", "code")
TEST_FIELDS = {
    "stdin": ("input", "output"),
    "functional": ("input", "output"),
    "assert": ("check", "entry_point"),
}


def validate_test(test: dict) -> dict:
    if not isinstance(test, dict):
        raise ValueError(f"test is a {type(test).__name__}, not an object")
    kind = test.get("testtype")
    if kind not in TEST_FIELDS:
        raise ValueError(f"unknown testtype {kind!r}; expected one of {sorted(TEST_FIELDS)}")
    for field in TEST_FIELDS[kind]:
        if not isinstance(test.get(field), str):
            raise ValueError(f"{kind} test needs a string {field!r}")
    if kind == "functional":
        try:
            json.loads(test["output"])
            [json.loads(line) for line in test["input"].split("\n")]
        except ValueError as e:
            raise ValueError(f"functional test input/output is not JSON: {e}") from None
    return test


def validate_record(record: dict) -> dict:
    """Return `record` unchanged if it is canonical, else raise ValueError saying why."""
    if not isinstance(record, dict):
        raise ValueError(f"record is a {type(record).__name__}, not an object")
    for field in ("id", "problem"):
        if not isinstance(record.get(field), str) or not record[field]:
            raise ValueError(f"missing or empty string field {field!r}")
    domain = record.get("domain")
    if domain == "math":
        if not isinstance(record.get("answer"), str) or not record["answer"].strip():
            raise ValueError("math record needs a non-empty string 'answer'")
    elif domain == "code":
        tests = record.get("tests")
        if not isinstance(tests, list) or not tests:
            raise ValueError("code record needs a non-empty list 'tests'")
        for test in tests:
            validate_test(test)
        if record.get("starter_code") is not None and not isinstance(record["starter_code"], str):
            raise ValueError("starter_code must be a string")
    else:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    return record


def math_record(id: str, problem: str, answer: str, **extra) -> dict:
    return validate_record({"id": str(id), "domain": "math", "problem": problem, "answer": str(answer), **extra})


def code_record(id: str, problem: str, tests: list[dict], starter_code: str | None = None, **extra) -> dict:
    record = {"id": str(id), "domain": "code", "problem": problem, "tests": tests, **extra}
    if starter_code:
        record["starter_code"] = starter_code
    return validate_record(record)
