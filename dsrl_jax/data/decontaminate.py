"""Decontamination: drop training rows that overlap the evaluation benchmarks.

    python -m dsrl_jax.data.decontaminate --data train.jsonl[,more.json] \
        --against aime24=../shared/data/math/aime24.jsonl,math500=... [--out clean.jsonl]

Text is normalised before it is compared: Unicode NFKC, lower case, LaTeX spacing and
sizing dropped (`\\left` `\\right` `\\big..` `\\,` `\\;` `\\:` `\\!` `\\ ` `\\quad` `~` `$`
`\\displaystyle`, braces; `\\dfrac`/`\\tfrac` read as `\\frac`), then split into tokens (runs
of letters/digits, and every other non-space character alone), so whitespace and line
breaks do not matter. A training row overlaps a benchmark problem when

  * their normalised token sequences are equal (exact match; the only test for problems
    shorter than `ngram` tokens), or
  * the row's `ngram`-grams (default 13) cover at least `min_coverage` (default 0.5) of
    the problem's distinct `ngram`-grams.

Coverage, not "any shared n-gram", because statement boilerplate is long: every AtCoder
problem shares "the input is given from standard input in the following format" and
MATH figures share Asymptote code, so any-13-gram flags 761 of LiveCodeBench v5's 879
problems against its Aug 2024 - Jan 2025 window, while coverage >= 0.5 flags exactly the
279 that are in the window (any threshold from 0.3 to 0.99 gives the same 279).
N-grams are kept as hashes in one dict per run (n-gram -> benchmark problems), so a pass
over 10k training rows against ~1k benchmark problems takes seconds.

The CLI prints one line per benchmark and, last, a JSON object
{"n_rows", "n_overlap", "by_benchmark": {name: rows}, "n_kept"}; a row overlapping two
benchmarks counts under each but once in n_overlap. `--out` writes the kept rows as
canonical JSONL and the report beside it (`<out>.decontamination.json`).

In training and scoring the same step runs on the loaded records through `apply()`, from
the config block `data.decontaminate` (`against`, `ngram`, `min_coverage`); the paper
configs check against PAPER_BENCHMARKS. Benchmarks are named as in `dsrl_jax.evaluate`
(`aime24,math500` from the hub, `name=path` for a local file), with the evaluation's
LiveCodeBench release and contest-date window.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import sys
import unicodedata

import ml_collections

from dsrl_jax import defaults, paths
from dsrl_jax.data.sources import load_sources
from dsrl_jax.evaluate import default_eval_config, load_benchmark, parse_benchmarks

# The paper's evaluation benchmarks plus AIME25 and AMC23 (common companions), by their
# dsrl_jax.evaluate names; offline, give `name=path` pairs instead.
PAPER_BENCHMARKS = defaults.PAPER_BENCHMARKS

_SPACING = re.compile(r"\\(?:left|right|bigg?[lr]?|displaystyle|textstyle|q?quad)(?![a-zA-Z])|\\[ ,;:!]|[{}$~]")
_FRAC = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")


def default_config(against: str = "") -> ml_collections.ConfigDict:
    """The `data.decontaminate` block: `against` "" = off."""
    return ml_collections.ConfigDict({**defaults.DECONTAMINATE, "against": against})


def tokens(text: str) -> list[str]:
    """Normalised tokens of a problem statement (see the module docstring)."""
    text = unicodedata.normalize("NFKC", str(text)).lower()  # "\\LEFT(" reads as "\\left("
    text = _FRAC.sub(r"\\frac", text)
    text = _SPACING.sub(" ", text)
    return _TOKEN.findall(text)


def _ngrams(toks: list[str], n: int) -> set[int]:
    return {hash(tuple(toks[i:i + n])) for i in range(len(toks) - n + 1)}


@dataclasses.dataclass
class Report:
    n_rows: int = 0
    n_overlap: int = 0
    by_benchmark: dict = dataclasses.field(default_factory=dict)
    examples: list = dataclasses.field(default_factory=list)  # a few {id, benchmark, match, how}

    def summary(self) -> dict:
        return {"n_rows": self.n_rows, "n_overlap": self.n_overlap, "by_benchmark": dict(self.by_benchmark),
                "n_kept": self.n_rows - self.n_overlap}

    def __str__(self) -> str:
        lines = [f"decontamination: {self.n_overlap} of {self.n_rows} rows overlap an evaluation benchmark "
                 f"(dropped)"]
        lines += [f"  {name}: {n} rows" for name, n in self.by_benchmark.items()]
        return "\n".join(lines)


class OverlapIndex:
    """The n-grams and exact texts of benchmark problems, and `matches(text)` against them."""

    def __init__(self, benchmarks: dict[str, list[dict]], ngram: int = 13, min_coverage: float = 0.5):
        if not isinstance(ngram, int) or isinstance(ngram, bool) or ngram < 1:
            raise ValueError(f"decontaminate.ngram: must be a positive integer, got {ngram!r}")
        if not isinstance(min_coverage, (int, float)) or not 0 < min_coverage <= 1:
            raise ValueError(f"decontaminate.min_coverage: must be in (0, 1], got {min_coverage!r}")
        self.ngram, self.min_coverage = ngram, float(min_coverage)
        self.problems: list[tuple[str, str, int]] = []  # (benchmark, problem id, number of n-grams)
        self.by_gram: dict[int, list[int]] = collections.defaultdict(list)
        self.exact: dict[int, list[int]] = collections.defaultdict(list)
        for name, records in benchmarks.items():
            for record in records:
                toks = tokens(record["problem"])
                grams = _ngrams(toks, ngram)
                j = len(self.problems)
                self.problems.append((name, str(record.get("id", j)), len(grams)))
                self.exact[hash(tuple(toks))].append(j)
                for g in grams:
                    self.by_gram[g].append(j)

    def matches(self, text: str) -> list[tuple[int, str]]:
        """(benchmark problem index, "exact" | "ngram <coverage>") for every problem `text` overlaps."""
        toks = tokens(text)
        found = {j: "exact" for j in self.exact.get(hash(tuple(toks)), ())}
        shared = collections.Counter(j for g in _ngrams(toks, self.ngram) for j in self.by_gram.get(g, ()))
        for j, k in shared.items():
            coverage = k / self.problems[j][2]
            if j not in found and coverage >= self.min_coverage:
                found[j] = f"ngram {coverage:.2f}"
        return sorted(found.items())


def decontaminate(records: list[dict], benchmarks: dict[str, list[dict]], ngram: int = 13,
                  min_coverage: float = 0.5) -> tuple[list[dict], Report]:
    """(rows that overlap no benchmark problem, in input order; the report)."""
    index = OverlapIndex(benchmarks, ngram, min_coverage)
    report = Report(n_rows=len(records), by_benchmark={name: 0 for name in benchmarks})
    kept = []
    for record in records:
        hits = index.matches(record.get("problem", ""))
        if not hits:
            kept.append(record)
            continue
        report.n_overlap += 1
        for name in sorted({index.problems[j][0] for j, _ in hits}):
            report.by_benchmark[name] += 1
        if len(report.examples) < 20:
            j, how = hits[0]
            report.examples.append({"id": record.get("id"), "benchmark": index.problems[j][0],
                                    "match": index.problems[j][1], "how": how})
    return kept, report


def load_benchmarks(spec: str, eval_opts=None) -> dict[str, list[dict]]:
    """{name: records} for a benchmark spec as dsrl_jax.evaluate reads it (hub names or name=path)."""
    opts = ml_collections.ConfigDict(dict(default_eval_config() if eval_opts is None else eval_opts))
    with opts.unlocked():
        opts.limit = 0  # decontaminate against every problem, whatever an eval's limit
    return {name: load_benchmark(name, path, opts) for name, path in parse_benchmarks(spec)}


def apply(records: list[dict], cfg, report_path: str | None = None, eval_opts=None) -> list[dict]:
    """The pipeline step: `records` without the rows overlapping `cfg.against`'s benchmarks.

    `cfg` is a `data.decontaminate` block (None or `against=""`: records unchanged). The
    report is printed and, with `report_path`, written there as JSON.
    """
    if cfg is None or not str(cfg.get("against") or "").strip():
        return records
    benchmarks = load_benchmarks(str(cfg["against"]), eval_opts)
    kept, report = decontaminate(records, benchmarks, cfg.get("ngram", 13), cfg.get("min_coverage", 0.5))
    print(report)
    if report_path:
        write_report(report_path, report, cfg)
    return kept


def write_report(path: str, report: Report, cfg) -> None:
    """The report as JSON: the summary, the settings and a few example overlaps."""
    if not paths.is_url(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    paths.write_text(path, json.dumps({**report.summary(), "against": str(cfg["against"]), "ngram": cfg.get("ngram", 13),
                                       "min_coverage": cfg.get("min_coverage", 0.5), "examples": report.examples},
                                      indent=2))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training files, comma-separated (any supported format)")
    p.add_argument("--against", required=True, help="benchmarks: NAME=PATH[,...] or hub names (aime24,math500)")
    p.add_argument("--out", help="write the kept rows here (JSONL) and the report beside it")
    p.add_argument("--ngram", type=int, default=13, help="n-gram length in normalised tokens (default 13)")
    p.add_argument("--min-coverage", type=float, default=0.5,
                   help="share of a benchmark problem's n-grams a row must cover to overlap (default 0.5)")
    args = p.parse_args(argv)
    try:
        specs = [{"path": f.strip()} for f in args.data.split(",") if f.strip()]
        if not specs:
            raise ValueError("--data: no files given")
        records, reports = load_sources(specs)
        for r in reports:
            print(r, file=sys.stderr)
        cfg = {"against": args.against, "ngram": args.ngram, "min_coverage": args.min_coverage}
        benchmarks = load_benchmarks(args.against)
        kept, report = decontaminate(records, benchmarks, args.ngram, args.min_coverage)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        p.exit(2, f"decontaminate: error: {e}\n")
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        write_report(args.out + ".decontamination.json", report, cfg)
        print(f"wrote {len(kept)} rows to {args.out}")
    summary = report.summary()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
