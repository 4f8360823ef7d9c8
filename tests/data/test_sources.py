"""Source specs: local files, counted skips, carried pass rates, filters, hub (offline/fake)."""
import json

import pytest

from dsrl_jax.data import sources
from tests.conftest import shared_path


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def lcb_row(i, date):
    tests = json.dumps([{"input": "1\n", "output": "2\n", "testtype": "stdin"}])
    return {"question_id": f"q{i}", "question_content": f"problem {i}", "public_test_cases": tests,
            "starter_code": "", "contest_date": date}


def test_local_shared_math_file():
    recs, report = sources.load_source({"path": str(shared_path("data", "math", "aime24.jsonl"))})
    assert len(recs) == 30 and report.skipped == 0 and report.loaded == 30
    assert all(r["domain"] == "math" and r["source"] == "aime24" for r in recs)
    assert str(report).startswith("aime24: 30 rows: 30 loaded")


def test_bad_rows_are_counted_and_rates_carried(tmp_path):
    rows = [
        {"id": "a", "question": "1+1?", "gt_answer": "2", "pass_rates": {"p": 0.5}, "levels": ["L1"]},
        "{not json",
        {"id": "b", "problem": "no answer here"},
        {"id": "c", "problem": "x", "answer": "1", "pass_rates": {"p": 1.5}},
        {"id": "a", "problem": "dup", "answer": "3"},
        {"id": "d", "domain": "math", "problem": "y", "answer": "4", "pass_rates": {"p": 0, "q": 1}, "level": 3},
        [1, 2],
    ]
    recs, report = sources.load_source({"path": str(write_jsonl(tmp_path / "mix.jsonl", rows))})
    assert [r["id"] for r in recs] == ["a", "d"]
    assert recs[0]["pass_rates"] == {"p": 0.5} and recs[0]["levels"] == ["L1"] and recs[0]["answer"] == "2"
    assert recs[1]["pass_rates"] == {"p": 0, "q": 1} and recs[1]["level"] == 3
    assert report.total == 7 and report.loaded == 2 and report.skipped == 5
    text = str(report)
    for needle in ("not JSON", "unrecognized row format", "pass_rates must", "duplicate id 'a'", "not an object"):
        assert needle in text or any(needle in e for _, e in report.examples), needle


def test_date_window_limit_prefix_and_domain(tmp_path):
    rows = [lcb_row(0, "2024-07-30T00:00:00"), lcb_row(1, "2024-08-01T00:00:00"),
            lcb_row(2, "2024-12-15"), lcb_row(3, "2025-02-01"), {**lcb_row(4, ""), "contest_date": None}]
    path = tmp_path / "lcb.json"
    path.write_text(json.dumps(rows))
    spec = {"path": str(path), "filters": {"date_from": "2024-08-01", "date_to": "2025-01-31"}}
    recs, report = sources.load_source(spec)
    assert [r["id"] for r in recs] == ["q1", "q2"] and all(r["domain"] == "code" for r in recs)
    assert report.filtered == {"date window": 2, "no contest_date": 1} and report.skipped == 0
    recs, report = sources.load_source({**spec, "filters": {"limit": 2}, "id_prefix": "lcb/", "name": "LCB"})
    assert [r["id"] for r in recs] == ["lcb/q0", "lcb/q1"] and recs[0]["source"] == "LCB"
    assert report.filtered == {"limit": 3}
    recs, report = sources.load_source({"path": str(path), "domain": "math"})
    assert recs == [] and report.skipped == 5 and "domain mismatch" in str(report)


def test_load_sources_dedupes_across_sources(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "problem": "p", "answer": "1"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "problem": "q", "answer": "2"},
                                           {"id": "2", "problem": "r", "answer": "3"}])
    recs, reports = sources.load_sources([{"path": str(a)}, {"path": str(b)}])
    assert [(r["id"], r["source"]) for r in recs] == [("1", "a"), ("2", "b")]
    assert reports[1].loaded == 1 and reports[1].skipped == 1 and "set id_prefix" in str(reports[1])
    recs, _ = sources.load_sources([{"path": str(a)}, {"path": str(b), "id_prefix": "b-"}])
    assert [r["id"] for r in recs] == ["1", "b-1", "b-2"]
    recs, _ = sources.load_source({"path": str(tmp_path)})  # a folder: both files
    assert len(recs) == 2


@pytest.mark.parametrize("spec,needle", [
    ({"path": "x", "hub": "y"}, "exactly one of"),
    ({}, "exactly one of"),
    ({"path": "x", "fromat": "lcb"}, "unknown keys"),
    ({"path": "x", "format": "csv"}, "unknown format"),
    ({"path": "x", "filters": {"since": 1}}, "filters: unknown keys"),
    ({"path": "x", "domain": "bio"}, "domain"),
])
def test_bad_specs(spec, needle):
    with pytest.raises(ValueError, match=needle):
        sources.load_source(spec)


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .jsonl"):
        sources.load_source({"path": str(tmp_path / "nope.jsonl")})


def test_hub_offline_fails_clearly(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"(?s)cannot fetch dataset 'nobody/no-such-set'.*offline"):
        sources.load_source({"hub": "nobody/no-such-set"})


def test_hub_split_and_subset_selection(tmp_path, monkeypatch):
    import huggingface_hub

    for rel, pid in [("default/train-00000-of-00001.jsonl", "t"), ("default/test-00000-of-00001.jsonl", "s"),
                     ("other/train-00000-of-00001.jsonl", "o"), ("data/train.jsonl", "d")]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(tmp_path / rel, [{"id": pid, "problem": "p", "answer": "1"}])
    calls = []

    def fake_snapshot(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    recs, report = sources.load_source({"hub": "org/set", "split": "train", "subset": "default", "revision": "abc"})
    assert [r["id"] for r in recs] == ["t"] and recs[0]["source"] == "org/set"
    assert calls[0][0] == "org/set" and calls[0][1]["repo_type"] == "dataset" and calls[0][1]["revision"] == "abc"
    recs, _ = sources.load_source({"hub": "org/set", "split": "train"})
    assert sorted(r["id"] for r in recs) == ["d", "o", "t"]
    recs, _ = sources.load_source({"hub": "org/set", "files": ["default/test-*"]})
    assert [r["id"] for r in recs] == ["s"]
    with pytest.raises(FileNotFoundError, match="no data files for split 'validation'"):
        sources.load_source({"hub": "org/set", "split": "validation"})


def test_parquet_without_pyarrow_is_clear(tmp_path):
    try:
        import pyarrow  # noqa: F401
        pytest.skip("pyarrow is installed")
    except ImportError:
        pass
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="needs pyarrow"):
        sources.load_source({"path": str(tmp_path / "x.parquet")})
