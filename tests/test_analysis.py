"""dsrl_jax.analysis: the notebooks' data helpers, on files written by the project's writers."""
import json
import math

import pytest

from dsrl_jax import analysis, eval_metrics
from dsrl_jax.data import levels as levels_lib
from dsrl_jax.metrics import MetricsWriter


def write_run(workdir, rows):
    with MetricsWriter(workdir, use_tensorboard=False) as w:
        for step, stage, metrics in rows:
            w.write(step, metrics, stage=stage)


def test_metric_columns_from_a_written_run(tmp_path):
    write_run(tmp_path, [
        (1, "stage1", {"reward/mean": 0.1, "entropy": 2.0}),
        (2, "stage1", {"reward/mean": float("nan"), "entropy": 1.9}),  # NaN -> null on disk
        (3, "stage2", {"reward/mean": 0.3, "eval/aime24/pass@1": 0.25, "eval/aime24/pass@4": 0.5}),
    ])
    cols = analysis.load_metrics(str(tmp_path))
    assert cols["step"] == [1, 2, 3] and cols["stage"] == ["stage1", "stage1", "stage2"]
    assert cols["reward/mean"][0] == 0.1 and math.isnan(cols["reward/mean"][1])
    assert math.isnan(cols["entropy"][2])  # missing in that record
    assert analysis.finite(cols["step"], cols["reward/mean"]) == ([1, 3], [0.1, 0.3])
    assert analysis.eval_series(cols) == {"aime24": ([3], [0.25])}
    assert analysis.eval_series(cols, "pass@4") == {"aime24": ([3], [0.5])}
    panels = dict(analysis.curve_panels(cols))
    assert panels == {"reward": ["reward/mean"], "entropy": ["entropy"]}  # absent panels dropped


def test_metric_columns_sorts_and_keeps_last_record_of_a_step():
    cols = analysis.metric_columns([
        {"step": 2, "stage": 0, "x": 2.0}, {"step": 1, "stage": 0, "x": 1.0},
        {"step": 2, "stage": 1, "x": 5.0, "y": None}, {"step": 3, "stage": None, "x": "text"},
    ])
    assert cols["step"] == [1, 2, 3] and cols["stage"] == ["0", "1", None]
    assert cols["x"][:2] == [1.0, 5.0] and math.isnan(cols["x"][2])
    assert all(math.isnan(v) for v in cols["y"]) and not analysis.has_data(cols, "y")


def test_stage_spans_tile_the_axis_between_stages():
    cols = {"step": [1, 2, 3, 4, 6, 8], "stage": ["s1", "s1", "s1", "s2", "s2", "s3"]}
    spans = analysis.stage_spans(cols)
    assert [(s["stage"], s["first"], s["last"]) for s in spans] == [("s1", 1, 3), ("s2", 4, 6), ("s3", 8, 8)]
    assert [(s["start"], s["end"]) for s in spans] == [(0.5, 3.5), (3.5, 7.0), (7.0, 8.5)]
    assert analysis.stage_transitions(cols) == [(3.5, "s2"), (7.0, "s3")]
    assert analysis.stage_spans({"step": [5], "stage": [None]}) == [
        {"stage": None, "first": 5, "last": 5, "start": 4.5, "end": 5.5}]


def test_run_summary_means_per_stage():
    cols = analysis.metric_columns([
        {"step": 1, "stage": "a", "reward/mean": 0.0}, {"step": 2, "stage": "a", "reward/mean": 1.0},
        {"step": 3, "stage": "b", "reward/mean": None}])
    rows = analysis.run_summary(cols, names=("reward/mean",))
    assert rows[0] == {"stage": "a", "steps": "1-2", "n": 2, "reward/mean": 0.5}
    assert rows[1]["n"] == 1 and math.isnan(rows[1]["reward/mean"])


def test_smooth_is_debiased_and_skips_nan():
    assert analysis.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    out = analysis.smooth([1.0, float("nan"), 3.0], weight=0.5)
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == pytest.approx((0.25 + 1.5) / 0.75)
    assert analysis.smooth([1.0, 3.0], weight=0.0) == [1.0, 3.0]


# -- scored datasets -------------------------------------------------------------------------
def scored_records():
    """Records with pass rates, levelled by the real paper rules (math and code)."""
    rates = [  # (1.5b, 7b, 32b, r1)
        (0.5, 0.5, 1.0, 1.0), (0.0, 0.25, 0.0, 0.5), (0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0),
        (0.25, 1.0, 0.75, 1.0), (0.0, 0.0, 0.0, 0.25),
    ]
    records = []
    for i, r in enumerate(rates):
        names = ("r1-distill-1.5b", "r1-distill-7b", "r1-distill-32b", "deepseek-r1")
        records.append({"id": f"q{i}", "domain": "code" if i % 2 else "math", "problem": "p",
                        "pass_rates": dict(zip(names, r))})
    records[0]["pass_rates"]["my-proxy"] = 0.5
    return levels_lib.assign_levels(records, levels_lib.paper_level_rules(), seed=0)


def test_level_counts_and_labels_agree_with_levels_module():
    records = scored_records()
    assert [r["id"] for r in records] == ["q0", "q1", "q3", "q4", "q5"]  # q2: R1 never solves it
    levels, domains, counts = analysis.level_domain_counts(records)
    assert domains == ["code", "math"]
    flat = {(lvl, d): n for lvl in levels for d, n in counts[lvl].items() if n}
    assert flat == levels_lib.level_counts(records)
    assert levels == sorted(levels, key=lambda s: (s == "-", s))
    by_id = {r["id"]: analysis.level_label(r) for r in records}
    # q0 is in L3 by the seeded 50% draw of 32B-solved math problems; q3 is solved by all
    assert by_id == {"q0": "L1+L2+L3", "q1": "L2+L3", "q3": "none", "q4": "L1", "q5": "L3"}
    assert analysis.level_label({"levels": []}) == "none"


def test_pass_rate_histogram_and_pairs():
    records = scored_records()
    edges, counts = analysis.pass_rate_histogram(records, "r1-distill-1.5b", bins=4)
    assert edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert counts == [2, 1, 1, 1]  # 0, 0 | .25 | .5 | 1.0 (the last bin holds 1)
    assert sum(analysis.pass_rate_histogram(records, "my-proxy")[1]) == 1
    assert analysis.proxies_of(records) == ["r1-distill-1.5b", "r1-distill-7b", "r1-distill-32b",
                                            "deepseek-r1", "my-proxy"]
    pairs = analysis.rate_pairs(records, "r1-distill-1.5b", "r1-distill-7b")
    assert sum(len(xs) for xs, _ in pairs.values()) == 5
    assert pairs["L2+L3"] == ([0.0], [0.25])
    assert analysis.rate_pairs(records, "r1-distill-1.5b", "my-proxy") == {"L1+L2+L3": ([0.5], [0.5])}


def test_scored_file_lookup_and_progress_log(tmp_path):
    out = tmp_path / "problems.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in scored_records()))
    log = tmp_path / "problems.jsonl.scores.jsonl"
    log.write_text(
        json.dumps({"proxy": "a", "id": "q0", "pass_rate": 0.5, "k": 4, "scores": [1, 0, 1, 0], "truncated": 1}) + "\n"
        + json.dumps({"proxy": "a", "id": "q1", "pass_rate": 0.0, "k": 4, "scores": [0] * 4, "truncated": 3}) + "\n"
        + '{"proxy": "a", "id": "q')  # torn last line: skipped, and the file is left alone
    before = log.read_text()
    assert analysis.find_scored_file(str(tmp_path)) == str(out) == analysis.find_scored_file(str(out))
    assert len(analysis.load_scored(str(tmp_path))) == 5
    rows = analysis.load_score_log(str(tmp_path))
    assert len(rows) == 2 and log.read_text() == before
    assert analysis.log_summary(rows) == {"a": {"problems": 2, "k": 4.0, "mean_pass_rate": 0.25,
                                                "truncation_rate": 0.5}}
    (tmp_path / "other.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="expected one scored"):
        analysis.find_scored_file(str(tmp_path))


# -- eval summaries --------------------------------------------------------------------------
def write_summary(directory, correct_by_bench):
    """summary.json as dsrl_jax.evaluate writes it (eval_metrics.summarize of sample rows)."""
    summary = {}
    for bench, (domain, rows) in correct_by_bench.items():
        by_problem = {f"p{i}": [{"reward": float(c), "extracted": str(c)} for c in row] for i, row in enumerate(rows)}
        summary[bench] = eval_metrics.summarize(by_problem, domain, len(rows[0]))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    (directory / list(correct_by_bench)[0]).mkdir(exist_ok=True)  # per-benchmark dir, no summary
    return summary


def test_eval_summaries_across_checkpoints(tmp_path):
    write_summary(tmp_path / "step_10", {"aime": ("math", [[1, 0], [0, 0]]), "lcb": ("code", [[1, 1]])})
    write_summary(tmp_path / "step_2", {"aime": ("math", [[1, 1], [0, 0]])})
    write_summary(tmp_path / "nested" / "step_5", {"math500": ("math", [[0, 0]])})
    (tmp_path / "figures").mkdir()
    found = analysis.find_eval_dirs(str(tmp_path))
    assert [p.split(str(tmp_path))[1].strip("/") for p in found] == ["nested/step_5", "step_2", "step_10"]
    summaries = analysis.load_eval_summaries(str(tmp_path))
    assert list(summaries) == ["nested/step_5", "step_2", "step_10"]
    assert [analysis.step_of(lbl) for lbl in summaries] == [5, 2, 10]
    assert analysis.benchmarks_of(summaries) == ["math500", "aime", "lcb"]
    table = analysis.metric_table(summaries)
    assert table["aime"]["step_2"] == pytest.approx(50.0) and table["aime"]["step_10"] == pytest.approx(25.0)
    assert math.isnan(table["aime"]["nested/step_5"]) and table["lcb"]["step_10"] == 100.0
    assert analysis.metric_table(summaries, "mean_reward", percent=False)["aime"]["step_2"] == 0.5

    single = analysis.load_eval_summaries(str(tmp_path / "step_2"))
    assert list(single) == ["step_2"] and analysis.find_eval_dirs(str(tmp_path / "step_2")) == [str(tmp_path / "step_2")]
    assert analysis.load_eval_summaries(str(tmp_path / "figures")) == {}
    assert analysis.step_of("final") is None and analysis.step_of("run3/ckpt-1600") == 1600


def test_paper_reference_numbers_and_aliases():
    assert analysis.PAPER_RESULTS["R1-Distill-Qwen-1.5B (base)"] == {"aime24": 28.9, "math500": 83.9, "livecodebench": 16.9}
    assert analysis.PAPER_RESULTS["paper: staged math"] == {"aime24": 42.3, "math500": 89.5, "livecodebench": 17.8}
    assert analysis.PAPER_RESULTS["paper: math+code"] == {"aime24": 36.7, "math500": 89.1, "livecodebench": 20.4}
    assert analysis.paper_reference("AIME") == analysis.paper_reference("aime24")
    assert list(analysis.paper_reference("lcb").values()) == [16.9, 17.8, 20.4]
    assert analysis.paper_reference("math-500")["paper: staged math"] == 89.5
    assert analysis.paper_reference("demo") == {}


def test_markdown_table_and_figure_dir(tmp_path):
    text = analysis.markdown_table([{"a": 1, "b": 0.123456}, {"a": "x"}])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| x |  |"]
    f = tmp_path / "scored.jsonl"
    f.write_text("")
    assert analysis.figure_dir(str(f)) == str(tmp_path / "figures") == analysis.figure_dir(str(tmp_path))
    assert (tmp_path / "figures").is_dir()
    assert analysis.figure_dir("gs://bucket/run").startswith("/")  # not local: a temporary directory
