"""Turn published problem formats into canonical records (see schema.py).

    records, report = load_problems("lcb_v5_public.json")      # format="auto"
    print(report)          # "879 rows: 879 loaded, 0 skipped"

Supported row formats (auto-detected per row, or forced with `format=`):
  canonical     already {id, domain, problem, answer | tests}; a row without `domain` whose
                `tests` are all canonical tests (and that has a string id) is canonical code
  math          {id?, problem|question, answer|gt_answer|final_answer|solution (\\boxed{})}
  lcb           LiveCodeBench code_generation_lite: public_test_cases / private_test_cases
                (JSON, or base64+zlib(+pickle) compressed), starter_code, metadata.func_name
  rllm          rllm / DeepCoder: `tests` as a list of {input, output, testtype?}, a
                CodeContests {inputs, outputs} dict, or LeetCode {"functional": check code};
                Python-literal strings are decoded with ast.literal_eval
  apps          APPS: input_output JSON {inputs, outputs, fn_name?}
  code_contests HF deepmind/code_contests: public_tests / private_tests {input, output}
  humaneval     {task_id, prompt, test, entry_point}
  mbpp          {task_id, text, test_list, test_setup_code?}
Rows keep `pass_rates`, `levels` and `level` (a scored dataset loads straight back).
`load_rows` is the one loop that adapts rows; `load_problems` (a file or a list of rows)
and `dsrl_jax.data.sources.load_source` (files, folders, hub datasets) both call it.
A malformed row is skipped and counted in the report (with a few examples), never fatal.
"""
from __future__ import annotations

import ast
import base64
import collections
import dataclasses
import io
import json
import pathlib
import pickle
import re
import zlib
from collections.abc import Callable, Iterable, Mapping

from dsrl_jax.data.schema import code_record, math_record, validate_record, validate_test
from dsrl_jax.rewards.code import fn_name_from_starter
from dsrl_jax.rewards.math import last_boxed

MAX_DECOMPRESSED = 1 << 30  # a corrupt or hostile zlib stream must not eat the host
CARRIED = ("pass_rates", "levels", "level")  # scoring results a row keeps through any adapter


@dataclasses.dataclass
class SkipReport:
    total: int = 0
    loaded: int = 0
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    formats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    filtered: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # not errors

    @property
    def skipped(self) -> int:
        return self.total - self.loaded - sum(self.filtered.values())

    def skip(self, index: int, reason: str) -> None:
        self.reasons[reason.split(":")[0]] += 1
        if len(self.examples) < 5:
            self.examples.append((index, reason[:300]))

    def __str__(self) -> str:
        text = f"{self.total} rows: {self.loaded} loaded, {self.skipped} skipped"
        if self.skipped:
            text += f" {dict(self.reasons)}; e.g. " + "; ".join(f"row {i}: {r}" for i, r in self.examples)
        if self.filtered:
            text += f", {sum(self.filtered.values())} filtered {dict(self.filtered)}"
        return text


# -- reading files ------------------------------------------------------------------------
def read_rows(path: str | pathlib.Path) -> list:
    """Rows of a .jsonl, .json (list, or {"data"|"rows"|...: list}) or .parquet file.

    In JSONL, a line that is not UTF-8 or not JSON (or nests too deep to parse) becomes a
    bad row that the report counts; a whole-file problem raises ValueError saying what.
    """
    path = pathlib.Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading .parquet files needs pyarrow (pip install pyarrow)") from None
        return pq.read_table(path).to_pylist()
    raw = path.read_bytes()
    if path.suffix == ".jsonl" or (path.suffix != ".json" and not raw.lstrip().startswith(b"[")):
        rows = []
        for n, line in enumerate(raw.split(b"\n")):
            if line.strip():
                rows.append(parse_line(line, n + 1))
        return rows
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nests too deeply to parse") from None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: a JSON object must hold exactly one list of rows")
        data = lists[0]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return data


def parse_line(line: bytes, number: int):
    """One JSONL line as a value, or a BadLine saying why it is not one."""
    try:
        return json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        return BadLine(f"line {number} is not UTF-8 (byte {e.start})")
    except RecursionError:
        return BadLine(f"line {number} nests too deeply")
    except ValueError as e:
        return BadLine(f"line {number} is not JSON: {e}")


class BadLine(str):
    """A JSONL line that did not parse: kept so the report counts it."""


# -- decoding helpers ---------------------------------------------------------------------
def _literal(value):
    """A value that may be a JSON or Python-literal string (rllm), or already decoded."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return ast.literal_eval(value)


class _StrOnlyUnpickler(pickle.Unpickler):
    """LiveCodeBench pickles a JSON *string*; refuse to build anything else."""

    def find_class(self, module, name):
        if (module, name) in (("builtins", "str"), ("builtins", "bytes"), ("__builtin__", "str")):
            return {"str": str, "bytes": bytes}[name]
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def decode_lcb_tests(value) -> list:
    """LCB test cases: a list, a JSON string, or base64(zlib(pickle(json string)))."""
    if isinstance(value, list):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    raw = zlib.decompressobj().decompress(base64.b64decode(value), MAX_DECOMPRESSED)
    try:
        return json.loads(raw)
    except ValueError:
        obj = _StrOnlyUnpickler(io.BytesIO(raw)).load()
    if not isinstance(obj, (str, bytes)):
        raise ValueError(f"compressed tests decoded to {type(obj).__name__}, not JSON text")
    return json.loads(obj)


def _text(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _io_tests(inputs, outputs, fn_name=None) -> list[dict]:
    """{inputs, outputs} lists (APPS / CodeContests) as stdin or functional tests."""
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise ValueError("inputs/outputs must be lists of equal length")
    if fn_name:  # APPS call-based: inputs are argument lists
        return [
            {"testtype": "functional", "fn_name": fn_name,
             "input": "\n".join(json.dumps(a) for a in (i if isinstance(i, list) else [i])),
             "output": json.dumps(o)}
            for i, o in zip(inputs, outputs)
        ]  # fmt: skip
    return [{"testtype": "stdin", "input": _text(i), "output": _text(o)} for i, o in zip(inputs, outputs)]


def _lcb_tests(cases: list, fn_name: str | None) -> list[dict]:
    tests = []
    for case in cases:
        kind = case.get("testtype", "stdin")
        test = {"testtype": kind, "input": str(case["input"]), "output": str(case["output"])}
        if kind == "functional" and fn_name:
            test["fn_name"] = fn_name
        tests.append(test)
    return tests


_CHECK_CALL = re.compile(r"\n\s*check\((?P<entry>[^\n]+)\)\s*$")


def _leetcode_assert(check_code: str) -> dict:
    """rllm LeetCode: `def check(candidate): ...` followed by `check(Solution().name)`."""
    m = _CHECK_CALL.search(check_code)
    if not m:
        raise ValueError("LeetCode check code does not end with check(<entry point>)")
    return {"testtype": "assert", "check": check_code[: m.start()] + "\n", "entry_point": m["entry"].strip()}


# -- adapters: row -> canonical record ----------------------------------------------------
def _row_id(row: dict, index: int, source: str) -> str:
    for key in ("id", "question_id", "task_id", "problem_id", "unique_id"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"{source}-{index}"


def _fn_name(row: dict) -> str | None:
    meta = row.get("metadata")
    if isinstance(meta, str) and meta.strip().startswith("{"):
        meta = json.loads(meta)
    if isinstance(meta, dict) and meta.get("func_name"):
        return meta["func_name"]
    return fn_name_from_starter(row.get("starter_code"))


def _extra(row: dict, keys=("difficulty", "level", "subject", "source", "contest_date")) -> dict:
    """Metadata worth carrying; multi-line strings are misplaced columns, not metadata."""
    return {
        k: row[k] for k in keys
        if row.get(k) not in (None, "") and not (isinstance(row[k], str) and "\n" in row[k])
    }  # fmt: skip


def adapt_canonical(row, index, source):
    row = dict(row)
    if "domain" not in row and "tests" in row:  # a code row written by hand, e.g. HumanEval
        row["domain"] = "code"
    return validate_record(row)


def _canonical_tests(row: dict) -> bool:
    """Whether a row without `domain` is canonical code: an id and every test canonical."""
    tests = row.get("tests")
    if not isinstance(row.get("id"), str) or not isinstance(tests, list) or not tests:
        return False
    try:
        for test in tests:
            validate_test(test)
    except (ValueError, RecursionError):
        return False
    return True


def adapt_math(row, index, source):
    problem = row.get("problem") or row.get("question")
    answer = next((row[k] for k in ("answer", "gt_answer", "final_answer") if row.get(k) not in (None, "")), None)
    if answer is None and row.get("solution"):
        answer = last_boxed(str(row["solution"]))
    if answer is None:
        raise ValueError("math row has no answer (answer, gt_answer, final_answer or boxed solution)")
    return math_record(_row_id(row, index, source), problem, str(answer), **_extra(row))


def adapt_lcb(row, index, source):
    fn_name = _fn_name(row)
    cases = decode_lcb_tests(row["public_test_cases"])
    if row.get("private_test_cases"):
        cases = cases + decode_lcb_tests(row["private_test_cases"])
    problem = row.get("question_content") or row.get("problem")
    return code_record(
        _row_id(row, index, source), problem, _lcb_tests(cases, fn_name),
        row.get("starter_code"), **_extra(row),
    )  # fmt: skip


def adapt_rllm(row, index, source):
    tests = _literal(row["tests"])
    fn_name = _fn_name(row)
    if isinstance(tests, dict) and "functional" in tests:
        tests = [_leetcode_assert(tests["functional"])]
    elif isinstance(tests, dict) and "inputs" in tests:
        tests = _io_tests(tests["inputs"], tests["outputs"], tests.get("fn_name"))
    elif isinstance(tests, list):
        tests = _lcb_tests(tests, fn_name)
    else:
        raise ValueError(f"unrecognized rllm tests of type {type(tests).__name__}")
    return code_record(_row_id(row, index, source), row["problem"], tests, row.get("starter_code"), **_extra(row))


def adapt_apps(row, index, source):
    io_spec = _literal(row["input_output"])
    tests = _io_tests(io_spec["inputs"], io_spec["outputs"], io_spec.get("fn_name"))
    problem = row.get("question") or row.get("problem")
    return code_record(_row_id(row, index, source), problem, tests, row.get("starter_code"), **_extra(row))


def adapt_code_contests(row, index, source):
    tests = []
    for key in ("public_tests", "private_tests", "generated_tests"):
        if row.get(key):
            tests += _io_tests(list(row[key]["input"]), list(row[key]["output"]))
    problem = row.get("description") or row.get("problem")
    return code_record(row.get("name") or _row_id(row, index, source), problem, tests, **_extra(row))


def adapt_humaneval(row, index, source):
    test = {"testtype": "assert", "check": row["test"], "entry_point": row["entry_point"]}
    return code_record(_row_id(row, index, source), row["prompt"], [test], row["prompt"])


def adapt_mbpp(row, index, source):
    setup = row.get("test_setup_code") or ""
    tests = []
    for line in row["test_list"]:
        m = re.match(r"\s*assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(", line)
        if not m:
            raise ValueError(f"cannot find the function named in MBPP test {line!r}")
        check = f"{setup}\ndef check(candidate):\n    {line.strip()}\n"
        tests.append({"testtype": "assert", "check": check, "entry_point": m[1]})
    problem = f"{row.get('text') or row.get('prompt')}\nYour code should pass these tests:\n" + "\n".join(row["test_list"])
    return code_record(_row_id(row, index, source), problem, tests)


ADAPTERS: dict[str, Callable[[dict, int, str], dict]] = {
    "canonical": adapt_canonical,
    "math": adapt_math,
    "lcb": adapt_lcb,
    "rllm": adapt_rllm,
    "apps": adapt_apps,
    "code_contests": adapt_code_contests,
    "humaneval": adapt_humaneval,
    "mbpp": adapt_mbpp,
}


def detect_format(row: dict) -> str:
    """Name of the adapter for one row, by its keys."""
    if row.get("domain") in ("math", "code") and ("answer" in row or "tests" in row):
        return "canonical"
    if "domain" not in row and _canonical_tests(row):
        return "canonical"
    if "public_test_cases" in row:
        return "lcb"
    if "input_output" in row:
        return "apps"
    if "test_list" in row:
        return "mbpp"
    if "entry_point" in row and "test" in row:
        return "humaneval"
    if "tests" in row:
        return "rllm"
    if "public_tests" in row or "private_tests" in row:
        return "code_contests"
    if ("problem" in row or "question" in row) and any(
        k in row for k in ("answer", "gt_answer", "final_answer", "solution")
    ):
        return "math"
    raise ValueError(f"unrecognized row format; keys: {sorted(row)[:12]}")


def _check_pass_rates(rates) -> None:
    if not isinstance(rates, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
            for k, v in rates.items()):
        raise ValueError(f"pass_rates must map proxy names to numbers in [0, 1], got {str(rates)[:100]}")


def adapt_row(row, index: int, source: str, fmt: str) -> tuple[dict, str]:
    """(canonical record with `pass_rates` / `levels` / `level` carried over, format name)."""
    if isinstance(row, BadLine):
        raise ValueError(str(row))
    if not isinstance(row, dict):
        raise ValueError(f"row is a {type(row).__name__}, not an object")
    name = detect_format(row) if fmt == "auto" else fmt
    record = ADAPTERS[name](row, index, source)
    for key in CARRIED:
        if row.get(key) is not None and key not in record:
            record[key] = row[key]
    if "pass_rates" in record:
        _check_pass_rates(record["pass_rates"])
    if "levels" in record and not (isinstance(record["levels"], list) and all(isinstance(x, str) for x in record["levels"])):
        raise ValueError(f"levels must be a list of names, got {record['levels']!r}")
    return record, name


def load_rows(rows: list, fmt: str, source: str, report: SkipReport, records: list[dict], seen: set[str], *,
              id_prefix: str = "", domain: str | None = None,
              drop: Callable[[dict], str | None] | None = None) -> None:
    """Adapt `rows` into `records` (appended), counting every row in `report`.

    A row that does not adapt, repeats an id in `seen` (after `id_prefix`) or belongs to
    the other `domain` is skipped and counted with its reason, never fatal; a record for
    which `drop(record)` names a reason is counted as filtered (not an error).
    """
    report.total += len(rows)
    for index, row in enumerate(rows):
        try:
            record, name = adapt_row(row, index, source, fmt)
            record["id"] = id_prefix + record["id"]
            if record["id"] in seen:
                raise ValueError(f"duplicate id {record['id']!r}")
            if domain and record["domain"] != domain:
                raise ValueError(f"domain mismatch: a {record['domain']} row in a {domain} source")
        except Exception as e:  # a bad row is counted, never fatal
            report.skip(index, f"{type(e).__name__}: {e}")
            continue
        why = drop(record) if drop else None
        if why:
            report.filtered[why] += 1
            continue
        seen.add(record["id"])
        records.append(record)
        report.formats[name] += 1
        report.loaded += 1


def load_problems(path_or_rows: str | pathlib.Path | Iterable[dict], format: str = "auto") -> tuple[list[dict], SkipReport]:
    """Canonical records from a file or rows; malformed rows are skipped and reported.

    Duplicate ids are skipped too (responses are matched to problems by id).
    """
    if format != "auto" and format not in ADAPTERS:
        raise ValueError(f"unknown format {format!r}; known: auto, {', '.join(ADAPTERS)}")
    if isinstance(path_or_rows, (str, pathlib.Path)):
        source, rows = pathlib.Path(path_or_rows).stem, read_rows(path_or_rows)
    else:
        source, rows = "row", list(path_or_rows)
    report, records = SkipReport(), []
    load_rows(rows, format, source, report, records, set())
    return records, report
