import contextlib
import io
import json

import pytest

from dsrl_jax.data import decontaminate as dc
from tests.conftest import shared_path


def _cli(*argv) -> tuple[dict, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dc.main(list(argv))
    text = out.getvalue()
    return json.loads(text.strip().splitlines()[-1]), text


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _read(path):
    return [json.loads(line) for line in open(path)]


def rewrite(problem: str) -> str:
    """What a copy edited by hand looks like: other spacing, case and LaTeX spacing."""
    text = problem.upper().replace(" ", "  \n ").replace("(", r"\left(").replace(")", r"\right)")
    return text.replace(",", r",\,").replace("$", "") + r" \quad"


def test_normalisation_ignores_spacing_case_and_latex_sizing():
    a = r"Find $f\left( \frac{1}{2} \right)$,\, if  $f(x)=x^{2}$."
    b = r"FIND f(\dfrac{1} {2}),   IF f(x) = x^2 ."
    assert dc.tokens(a) == dc.tokens(b)
    assert dc.tokens("a+b") == ["a", "+", "b"]
    assert dc.tokens("x_1") == dc.tokens("x _ 1")


def test_exact_match_catches_short_problems_and_coverage_rejects_boilerplate():
    bench = {"b": [{"id": "short", "problem": "Compute $2+3$."},
                   {"id": "long", "problem": "The input is given from Standard Input in the following format: "
                                             "N M. Print the number of ways to tile an N by M board with dominoes."}]}
    rows = [{"id": "copy", "problem": "compute 2 + 3 ."},
            {"id": "contains-short", "problem": "Compute $2+3$. Then add seven to it."},  # not the same problem
            {"id": "boilerplate", "problem": "The input is given from Standard Input in the following format: "
                                             "N. Print the N-th prime number, which is a totally different task."},
            {"id": "paraphrase-tail", "problem": "the input is given from standard input in the following format: "
                                                 "n m. print the number of ways to tile an n by m board with dominoes, "
                                                 "modulo 998244353."}]
    kept, report = dc.decontaminate(rows, bench)
    assert [r["id"] for r in kept] == ["contains-short", "boilerplate"]
    assert report.summary() == {"n_rows": 4, "n_overlap": 2, "by_benchmark": {"b": 2}, "n_kept": 2}
    assert {e["id"]: e["how"].split()[0] for e in report.examples} == {"copy": "exact", "paraphrase-tail": "ngram"}


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="ngram"):
        dc.OverlapIndex({}, ngram=0)
    with pytest.raises(ValueError, match="min_coverage"):
        dc.OverlapIndex({}, min_coverage=1.5)


def test_lcb_v5_contains_the_whole_evaluation_window():
    train = shared_path("data", "code", "lcb_v5_public.json")
    window = shared_path("data", "code", "lcb_2408_2501_public.json")
    summary, text = _cli("--data", str(train), "--against", f"lcb={window}")
    assert summary == {"n_rows": 879, "n_overlap": 279, "by_benchmark": {"lcb": 279}, "n_kept": 600}
    assert "lcb: 279 rows" in text


def test_rewritten_eval_problem_in_a_training_file_is_found(tmp_path):
    aime = _read(shared_path("data", "math", "aime24.jsonl"))
    train = _read(shared_path("data", "math", "train_math_l3to5.jsonl"))[:300]
    planted = {"id": "planted", "problem": rewrite(aime[7]["problem"]), "answer": aime[7]["answer"]}
    assert planted["problem"] != aime[7]["problem"]
    data = _jsonl(tmp_path / "train.jsonl", train[:150] + [planted] + train[150:])
    out = tmp_path / "clean.jsonl"
    summary, _ = _cli("--data", data, "--against", f"aime24={shared_path('data', 'math', 'aime24.jsonl')}",
                      "--out", str(out))
    assert summary["n_overlap"] == 1 and summary["by_benchmark"] == {"aime24": 1}
    kept = _read(out)
    assert len(kept) == 300 and "planted" not in {r["id"] for r in kept}
    report = json.load(open(str(out) + ".decontamination.json"))
    assert report["examples"][0]["id"] == "planted" and report["examples"][0]["match"] == aime[7]["id"]


def test_math_train_vs_math500_known_overlaps_and_disjoint_sets():
    records = [r for r in _read(shared_path("data", "math", "train_math_l3to5.jsonl")) if r.get("answer")]
    bench = {name: _read(shared_path("data", "math", f"{name}.jsonl")) for name in ("math500", "aime24", "aime25", "amc23")}
    kept, report = dc.decontaminate(records, bench)
    dropped = {r["id"] for r in records} - {r["id"] for r in kept}
    # Known MATH train/test pairs: the same statement reworded (answer 2k in both), and
    # problems sharing the test problem's whole setup and figure with another question.
    known = {"mathtrain-645", "mathtrain-4617", "mathtrain-2098", "mathtrain-7169", "mathtrain-3237", "mathtrain-8287"}
    assert known <= dropped
    assert report.by_benchmark["math500"] == len(dropped) < 100  # < 1.2% of 8521 rows
    # AIME 2024/2025 and AMC 2023 postdate MATH: nothing of MATH train may match them.
    assert report.by_benchmark["aime24"] == report.by_benchmark["aime25"] == report.by_benchmark["amc23"] == 0


def test_no_false_positives_on_lcb_problems_outside_the_window(tmp_path):
    """The 600 v5 problems outside the window share AtCoder/LeetCode boilerplate with it."""
    window = shared_path("data", "code", "lcb_2408_2501_public.json")
    out = tmp_path / "clean.jsonl"
    _cli("--data", str(shared_path("data", "code", "lcb_v5_public.json")), "--against", f"lcb={window}", "--out", str(out))
    summary, _ = _cli("--data", str(out), "--against", f"lcb={window}")
    assert summary == {"n_rows": 600, "n_overlap": 0, "by_benchmark": {"lcb": 0}, "n_kept": 600}


def test_apply_is_the_pipeline_step(tmp_path, capsys):
    bench = _jsonl(tmp_path / "b.jsonl", [{"id": "b1", "problem": "What is one plus one?", "answer": "2"}])
    rows = [{"id": "r1", "domain": "math", "problem": "what is ONE plus one ?", "answer": "2"},
            {"id": "r2", "domain": "math", "problem": "What is two plus two?", "answer": "4"}]
    assert dc.apply(rows, dc.default_config()) is rows  # off by default
    cfg = dc.default_config(against=f"tiny={bench}")
    kept = dc.apply(rows, cfg, report_path=str(tmp_path / "run" / "decontamination.json"))
    assert [r["id"] for r in kept] == ["r2"]
    assert "tiny: 1 rows" in capsys.readouterr().out
    report = json.load(open(tmp_path / "run" / "decontamination.json"))
    assert report["n_overlap"] == 1 and report["against"] == f"tiny={bench}"


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        dc.main(["--data", str(tmp_path / "missing.json"), "--against", "x=y.jsonl"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().startswith("decontaminate: error:")


def _tiny_data(tmp_path):
    bench = _jsonl(tmp_path / "bench.jsonl", [{"id": "b1", "problem": "What is one plus one?", "answer": "2"}])
    data = _jsonl(tmp_path / "train.jsonl", [{"id": "r1", "problem": "what is ONE plus one ?", "answer": "2"},
                                            {"id": "r2", "problem": "What is two plus two?", "answer": "4"}])
    return bench, data


def test_trainer_loads_decontaminated_records(tmp_path):
    from types import SimpleNamespace

    from configs import base
    from dsrl_jax import settings
    from dsrl_jax.rl.trainer import Trainer

    bench, data = _tiny_data(tmp_path)
    c = base.get_config()
    c.data.sources = [{"path": data}]
    c.data.decontaminate.against = f"tiny={bench}"
    records = Trainer._load_records(SimpleNamespace(config=c, settings=settings.from_config(c), workdir=str(tmp_path)))
    assert [r["id"] for r in records] == ["r2"]
    assert json.load(open(tmp_path / "decontamination.json"))["by_benchmark"] == {"tiny": 1}


def test_scoring_drops_overlaps_before_scoring(tmp_path):
    from configs.score import get_config

    from dsrl_jax import score

    bench, data = _tiny_data(tmp_path)
    c = get_config()
    c.paths, c.proxies, c.reward_workers = data, [], 1
    c.output = str(tmp_path / "scored.jsonl")
    c.decontaminate.against = f"tiny={bench}"
    c.level_rules = {"keep": None, "levels": [{"name": "L1", "when": {"sample": 1.0}}]}
    out = score.run(c)
    assert [r["problem"] for r in out] == ["What is two plus two?"]
    assert json.load(open(str(tmp_path / "scored.jsonl") + ".decontamination.json"))["n_overlap"] == 1


def test_paper_configs_decontaminate_by_default():
    import importlib

    for name in ("stage1", "stage2", "staged", "math_code"):
        c = importlib.import_module(f"configs.{name}").get_config()
        assert c.data.decontaminate.against == dc.PAPER_BENCHMARKS, name
    assert importlib.import_module("configs.score").get_config().decontaminate.against == dc.PAPER_BENCHMARKS
    assert importlib.import_module("configs.base").get_config().data.decontaminate.against == ""
    names = [n for n, _ in __import__("dsrl_jax.evaluate", fromlist=["x"]).parse_benchmarks(dc.PAPER_BENCHMARKS)]
    assert names == ["aime24", "aime25", "math500", "amc23", "livecodebench"]
