"""Small pure helpers behind the colab/ notebooks: runs, scored datasets, eval summaries.

Everything here reads the project's own files and returns plain Python (lists, dicts,
floats; missing values as NaN) so the notebooks only plot. No JAX import: a notebook
kernel starts in a second.

    cols = metric_columns(read_metrics(workdir))       # run_curves.ipynb
    spans = stage_spans(cols)
    records = load_scored(path)                        # difficulty_levels.ipynb
    summaries = load_eval_summaries(run_dir)           # compare_evals.ipynb
"""
from __future__ import annotations

import collections
import glob
import json
import math
import os
import re
import tempfile
from typing import Iterable, Mapping, Sequence

from dsrl_jax.data.levels import DEFAULT_PROXIES, level_counts
from dsrl_jax.metrics import read_jsonl, read_metrics

NAN = float("nan")

# The paper's Table (arXiv 2504.00829), Pass@1 in %: 16 samples (AIME24, MATH-500), 4 (LCB).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "R1-Distill-Qwen-1.5B (base)": {"aime24": 28.9, "math500": 83.9, "livecodebench": 16.9},
    "paper: staged math": {"aime24": 42.3, "math500": 89.5, "livecodebench": 17.8},
    "paper: math+code": {"aime24": 36.7, "math500": 89.1, "livecodebench": 20.4},
}

# Other names a benchmark goes by in eval specs (`--config.benchmarks=aime=/path,...`).
BENCHMARK_ALIASES = {
    "aime": "aime24", "aime2024": "aime24", "aime_2024": "aime24",
    "math": "math500", "math-500": "math500", "math_500": "math500",
    "lcb": "livecodebench", "live_code_bench": "livecodebench",
}

# Training curves: (panel title, metric names plotted in it), in the order worth reading.
CURVE_PANELS: list[tuple[str, list[str]]] = [
    ("reward", ["reward/mean"]),
    ("accuracy", ["accuracy"]),
    ("response length (tokens)", ["response_length/mean", "response_length/max"]),
    ("truncation rate", ["truncation_rate"]),
    ("entropy", ["entropy"]),
    ("KL to reference", ["kl"]),
    ("grad norm", ["grad_norm"]),
    ("learning rate", ["lr"]),
]


# -- numbers ---------------------------------------------------------------------------------
def as_float(value) -> float:
    """A metric value as float; None, strings, lists and bools-as-missing become NaN."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return NAN


def finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[list, list]:
    """The (x, y) pairs whose y is a finite number."""
    pairs = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float)) and math.isfinite(y)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def smooth(values: Sequence[float], weight: float = 0.6) -> list[float]:
    """TensorBoard-style exponential moving average, debiased; NaNs are passed over."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            out.append(NAN)
            continue
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


# -- training runs (metrics.jsonl) -----------------------------------------------------------
def metric_columns(records: Iterable[Mapping]) -> dict[str, list]:
    """Records of dsrl_jax.metrics.read_metrics as columns: {"step": [...], "stage": [...],
    name: [float, ...]} with NaN where a record lacks the metric (or it was null).

    Records are sorted by step; a step written twice (a resumed run that was not truncated)
    keeps its last record."""
    by_step: dict[int, Mapping] = {}
    for r in records:
        by_step[int(r["step"])] = r
    rows = [by_step[s] for s in sorted(by_step)]
    names = []
    for r in rows:
        names += [k for k in r if k not in ("step", "stage") and k not in names]
    cols: dict[str, list] = {"step": [int(r["step"]) for r in rows],
                             "stage": [None if r.get("stage") is None else str(r["stage"]) for r in rows]}
    for name in names:
        cols[name] = [as_float(r.get(name)) for r in rows]
    return cols


def load_metrics(workdir: str) -> dict[str, list]:
    """Columns of `<workdir>/metrics.jsonl` (or of that file)."""
    return metric_columns(read_metrics(workdir))


def has_data(cols: Mapping[str, list], name: str) -> bool:
    return any(math.isfinite(v) for v in cols.get(name, []))


def curve_panels(cols: Mapping[str, list], panels=None) -> list[tuple[str, list[str]]]:
    """The panels of CURVE_PANELS (or `panels`) with at least one metric that has data."""
    out = []
    for title, names in panels or CURVE_PANELS:
        present = [n for n in names if has_data(cols, n)]
        if present:
            out.append((title, present))
    return out


def stage_spans(cols: Mapping[str, list]) -> list[dict]:
    """Consecutive runs of one stage: [{"stage", "first", "last", "start", "end"}].

    `first`/`last` are the stage's first and last logged steps; `start`/`end` are the
    edges to shade (half-way to the neighbouring steps), so spans tile the x axis and a
    stage boundary falls between the last step of one stage and the first of the next.
    A stage that comes back later (it should not) gets a second span."""
    steps, stages = cols["step"], cols["stage"]
    spans: list[dict] = []
    for step, stage in zip(steps, stages):
        if spans and spans[-1]["stage"] == stage:
            spans[-1]["last"] = step
        else:
            spans.append({"stage": stage, "first": step, "last": step})
    for i, span in enumerate(spans):
        prev_last = spans[i - 1]["last"] if i else None
        nxt_first = spans[i + 1]["first"] if i + 1 < len(spans) else None
        span["start"] = (prev_last + span["first"]) / 2 if prev_last is not None else span["first"] - 0.5
        span["end"] = (span["last"] + nxt_first) / 2 if nxt_first is not None else span["last"] + 0.5
    return spans


def stage_transitions(cols: Mapping[str, list]) -> list[tuple[float, str]]:
    """(x, name of the stage that starts there) for every stage change."""
    return [(s["start"], s["stage"]) for s in stage_spans(cols)[1:]]


def eval_series(cols: Mapping[str, list], metric: str = "pass@1") -> dict[str, tuple[list, list]]:
    """{benchmark: (steps, values)} of the periodic evals' `eval/<bench>/<metric>` columns,
    keeping only the steps that were evaluated."""
    out = {}
    for name in cols:
        m = re.fullmatch(r"eval/(.+)/([^/]+)", name)
        if m and m.group(2) == metric:
            xs, ys = finite(cols["step"], cols[name])
            if xs:
                out[m.group(1)] = (xs, ys)
    return out


def run_summary(cols: Mapping[str, list], names: Sequence[str] = ("reward/mean", "accuracy",
                "response_length/mean", "truncation_rate", "entropy")) -> list[dict]:
    """Per stage span: steps and the mean of `names` over the span (for a quick table)."""
    rows = []
    for span in stage_spans(cols):
        idx = [i for i, s in enumerate(cols["step"]) if span["first"] <= s <= span["last"]]
        row = {"stage": span["stage"], "steps": f"{span['first']}-{span['last']}", "n": len(idx)}
        for name in names:
            vals = [cols[name][i] for i in idx if name in cols and math.isfinite(cols[name][i])]
            row[name] = sum(vals) / len(vals) if vals else NAN
        rows.append(row)
    return rows


# -- scored datasets (python -m dsrl_jax.score) ----------------------------------------------
def find_scored_file(path: str) -> str:
    """The merged JSONL that dsrl_jax.score wrote: `path` itself, or the one file in the
    directory `path` that is not a progress log (`*.scores.jsonl`). A run's workdir (the
    demo's) keeps it under `scored/`, which is looked in first."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(os.path.join(path, "scored")):
        path = os.path.join(path, "scored")
    cands = sorted(p for p in glob.glob(os.path.join(path, "*.jsonl"))
                   if not p.endswith(".scores.jsonl") and not p.endswith(".tmp"))
    if len(cands) != 1:
        raise FileNotFoundError(f"{path}: expected one scored *.jsonl (not *.scores.jsonl), found {cands}")
    return cands[0]


def load_scored(path: str) -> list[dict]:
    return read_jsonl(find_scored_file(path))


def load_score_log(path: str) -> list[dict]:
    """The progress log `<output>.scores.jsonl` beside a scored file ([] when absent).
    Read only: unlike dsrl_jax.score.read_progress, the file is never repaired here."""
    log = find_scored_file(path) + ".scores.jsonl"
    return read_jsonl(log) if os.path.exists(log) else []


def proxies_of(records: Iterable[Mapping]) -> list[str]:
    """Proxy names with rates, the paper's proxies first (weakest to strongest)."""
    seen = collections.Counter(p for r in records for p in (r.get("pass_rates") or {}))
    known = [p for p in DEFAULT_PROXIES if p in seen]
    return known + sorted(p for p in seen if p not in known)


def pass_rates(records: Iterable[Mapping], proxy: str) -> list[float]:
    return [float(r["pass_rates"][proxy]) for r in records
            if (r.get("pass_rates") or {}).get(proxy) is not None]


def pass_rate_histogram(records: Iterable[Mapping], proxy: str, bins: int = 10) -> tuple[list[float], list[int]]:
    """(bin edges, counts) of `proxy`'s pass rates over [0, 1] in `bins` equal bins (the
    last bin includes 1). Pass rates are multiples of 1/k, so bins=k+1 centred bins may
    read better; this keeps it simple."""
    edges = [i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for rate in pass_rates(records, proxy):
        counts[min(bins - 1, max(0, int(rate * bins)))] += 1
    return edges, counts


def level_names(records: Iterable[Mapping]) -> list[str]:
    names = {lvl for r in records for lvl in (r.get("levels") or ["-"])}
    return sorted(names, key=lambda s: (s == "-", s))


def level_domain_counts(records: Sequence[Mapping]) -> tuple[list[str], list[str], dict[str, dict[str, int]]]:
    """(levels, domains, {level: {domain: count}}); a record counts under each of its
    levels (they overlap), "-" = kept but in no level."""
    counts = level_counts(list(records))
    levels = level_names(records)
    domains = sorted({d for _, d in counts})
    return levels, domains, {lvl: {d: counts.get((lvl, d), 0) for d in domains} for lvl in levels}


def level_label(record: Mapping) -> str:
    """"L1+L2" for a record in both levels, "none" for none: the scatter's colour key."""
    return "+".join(record.get("levels") or []) or "none"


def rate_pairs(records: Iterable[Mapping], x_proxy: str, y_proxy: str) -> dict[str, tuple[list, list]]:
    """{level label: (x rates, y rates)} over records scored by both proxies."""
    out: dict[str, tuple[list, list]] = {}
    for r in records:
        rates = r.get("pass_rates") or {}
        if rates.get(x_proxy) is None or rates.get(y_proxy) is None:
            continue
        xs, ys = out.setdefault(level_label(r), ([], []))
        xs.append(float(rates[x_proxy]))
        ys.append(float(rates[y_proxy]))
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == "none", kv[0])))


def log_summary(rows: Iterable[Mapping]) -> dict[str, dict]:
    """Per proxy in a progress log: problems, samples per problem, mean pass rate and the
    fraction of samples cut at the token limit (high = raise max_new_tokens)."""
    acc: dict[str, dict] = {}
    for row in rows:
        a = acc.setdefault(row["proxy"], {"problems": 0, "samples": 0, "rate_sum": 0.0, "truncated": 0})
        a["problems"] += 1
        a["samples"] += int(row.get("k") or len(row.get("scores") or []))
        a["rate_sum"] += float(row["pass_rate"])
        a["truncated"] += int(row.get("truncated") or 0)
    return {p: {"problems": a["problems"], "k": a["samples"] / max(1, a["problems"]),
                "mean_pass_rate": a["rate_sum"] / max(1, a["problems"]),
                "truncation_rate": a["truncated"] / max(1, a["samples"])} for p, a in acc.items()}


# -- evaluation summaries (python -m dsrl_jax.evaluate) --------------------------------------
def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def find_eval_dirs(run_dir: str, max_depth: int = 3) -> list[str]:
    """Directories holding a summary.json: `run_dir` itself, or those below it (up to
    `max_depth` levels), in natural order (step_2 before step_10)."""
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        return [run_dir]
    found = []
    base_depth = run_dir.rstrip(os.sep).count(os.sep)
    for root, dirs, files in os.walk(run_dir):
        if root.count(os.sep) - base_depth >= max_depth:
            dirs[:] = []
        if "summary.json" in files and root != run_dir:
            found.append(root)
            dirs[:] = []  # a benchmark subdirectory holds no summary of its own
    return sorted(found, key=lambda p: _natural_key(os.path.relpath(p, run_dir)))


def step_of(label: str) -> int | None:
    """The checkpoint step in a label like "step_1600" or "ckpt-200" (its last integer)."""
    nums = re.findall(r"\d+", os.path.basename(label.rstrip("/")))
    return int(nums[-1]) if nums else None


def load_eval_summaries(run_dir: str) -> dict[str, dict]:
    """{label: summary.json} for every eval dir under `run_dir`; the label is the path
    relative to `run_dir` (the directory's own name when it is a single eval dir)."""
    out = {}
    for d in find_eval_dirs(run_dir):
        label = os.path.relpath(d, run_dir)
        label = os.path.basename(os.path.abspath(d)) if label == "." else label
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
            out[label] = json.load(f)
    return out


def canonical_benchmark(name: str) -> str:
    key = name.lower()
    return BENCHMARK_ALIASES.get(key, key)


def benchmarks_of(summaries: Mapping[str, Mapping]) -> list[str]:
    names: list[str] = []
    for summary in summaries.values():
        names += [b for b in summary if b not in names]
    return names


def metric_table(summaries: Mapping[str, Mapping], metric: str = "pass@1",
                 percent: bool = True) -> dict[str, dict[str, float]]:
    """{benchmark: {checkpoint label: value}}, in % by default; NaN where missing."""
    scale = 100.0 if percent else 1.0
    return {b: {label: scale * as_float(s.get(b, {}).get(metric)) for label, s in summaries.items()}
            for b in benchmarks_of(summaries)}


def paper_reference(benchmark: str) -> dict[str, float]:
    """{row of PAPER_RESULTS: pass@1 %} for a benchmark (under any alias); {} if unknown."""
    key = canonical_benchmark(benchmark)
    return {row: vals[key] for row, vals in PAPER_RESULTS.items() if key in vals}


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """A markdown table of dict rows (IPython.display.Markdown renders it)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    fmt = lambda v: (f"{v:.{digits}g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# -- figures ---------------------------------------------------------------------------------
def figure_dir(path: str) -> str:
    """Where a notebook saves its figures: `<path>/figures` (beside a file: its directory's
    figures/), or a fresh temporary directory when that is not writable (gs://, read-only)."""
    base = os.path.dirname(path) if os.path.isfile(path) else path
    out = os.path.join(base, "figures")
    if "://" not in out:
        try:
            os.makedirs(out, exist_ok=True)
            if os.access(out, os.W_OK):
                return out
        except OSError:
            pass
    return tempfile.mkdtemp(prefix="dsrl_figures_")
