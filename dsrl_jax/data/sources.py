"""Load problem records from a source spec: a local file/folder or a Hugging Face dataset.

    records, report = load_source({"path": "data/lcb.jsonl", "format": "auto",
                                   "filters": {"date_from": "2024-08-01", "date_to": "2025-01-31"}})
    print(report)   # "lcb: 300 rows: 279 loaded, 0 skipped, 21 filtered {'date window': 21}"

Spec fields (a dict or ConfigDict):
    path       a .jsonl / .json / .parquet file, a folder of them, or a glob
    hub        a HF dataset id, with `split` (default "train"), `subset` (config name),
               `revision` and optional `files` (glob patterns inside the repo)
    format     "auto" (detected per row) or an adapter name (dsrl_jax/data/adapters.py)
    domain     "math" / "code": rows that adapt to the other domain are skipped and counted
    name       the source name, written to every record's `source` (default: keep the row's
               own `source` field, else the file stem / dataset id); mixtures may select by it
    id_prefix  prepended to ids (ids must be unique across the sources of a run)
    filters    {date_from, date_to}: ISO dates, inclusive, on `contest_date` (LiveCodeBench
               release windows; rows without a date are filtered out); {limit}: first N

Rows carry `pass_rates` ({proxy: rate}), `levels` and `level` through whatever adapter
reads them, so a scored dataset (dsrl_jax.score output) loads straight back. Malformed
rows are skipped and counted with examples; filtered rows are counted separately.

The hub path uses `huggingface_hub` (the `datasets` package is not needed): the dataset's
parquet/JSON(L) files are fetched with `snapshot_download` and read locally; parquet needs
pyarrow. Offline, or without the files cached, it fails with a message that says so.
"""
from __future__ import annotations

import collections
import dataclasses
import fnmatch
import glob
import os
import pathlib
from collections.abc import Mapping

from dsrl_jax.data.adapters import ADAPTERS, SkipReport, detect_format, read_rows

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
SPEC_KEYS = {"path", "hub", "split", "subset", "revision", "files", "format", "domain", "name",
             "id_prefix", "filters"}
FILTER_KEYS = {"date_from", "date_to", "limit"}
CARRIED = ("pass_rates", "levels", "level")


@dataclasses.dataclass
class SourceReport(SkipReport):
    """SkipReport plus the source's name, its files and rows filtered out (not errors)."""

    name: str = ""
    files: list[str] = dataclasses.field(default_factory=list)
    filtered: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def skipped(self) -> int:
        return self.total - self.loaded - sum(self.filtered.values())

    def __str__(self) -> str:
        text = f"{self.name}: " + super().__str__()
        if self.filtered:
            text += f", {sum(self.filtered.values())} filtered {dict(self.filtered)}"
        return text


def _plain(spec) -> dict:
    return spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)


def _require_pyarrow(files: list[str]) -> None:
    if any(f.endswith(".parquet") for f in files):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ImportError("reading .parquet files needs pyarrow (pip install pyarrow), "
                              "or convert them to JSONL") from None


def local_files(path: str) -> list[str]:
    """The data files a `path` names: a file, a folder (recursively) or a glob."""
    if os.path.isdir(path):
        files = [str(p) for p in sorted(pathlib.Path(path).rglob("*")) if p.suffix in DATA_SUFFIXES]
    elif os.path.isfile(path):
        files = [path]
    else:
        files = sorted(f for f in glob.glob(path, recursive=True) if f.endswith(DATA_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"source path {path!r}: no {'/'.join(DATA_SUFFIXES)} files there")
    return files


def _matches_split(rel: str, split: str, subset: str | None) -> bool:
    """HF layouts: {subset}/{split}-0000-of-0001.parquet, data/{split}-*.parquet,
    {subset}/{split}/0000.parquet (parquet-converted branch), {split}.jsonl."""
    parts = pathlib.PurePosixPath(rel).parts
    if subset and subset not in parts[:-1]:
        return False
    stem = pathlib.PurePosixPath(rel).name.split(".")[0]
    return split in parts[:-1] or stem == split or stem.startswith(f"{split}-") or stem.startswith(f"{split}_")


def hub_files(repo_id: str, split: str = "train", subset: str | None = None, revision: str | None = None,
              files: list[str] | None = None) -> list[str]:
    """Local paths of a hub dataset's data files for one split (downloaded or from the cache)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError("loading from the hub needs huggingface_hub (pip install huggingface_hub)") from None
    patterns = list(files) if files else [f"*{s}" for s in DATA_SUFFIXES] + [f"**/*{s}" for s in DATA_SUFFIXES]
    try:
        root = snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns)
    except Exception as e:  # offline, unknown repo, gated, no cache: all end here
        raise RuntimeError(
            f"cannot fetch dataset {repo_id!r} (revision {revision or 'main'}) from the Hugging Face hub: "
            f"{type(e).__name__}: {str(e)[:300]}\nIf this machine is offline, download the dataset's "
            f"files elsewhere and point the source's `path` at them (or set HF_HUB_OFFLINE=0 when online).") from e
    rels = sorted(str(p.relative_to(root)) for p in pathlib.Path(root).rglob("*") if p.suffix in DATA_SUFFIXES)
    if files:
        chosen = [r for r in rels if any(fnmatch.fnmatch(r, pat) for pat in files)]
    else:
        chosen = [r for r in rels if _matches_split(r, split, subset)]
    if not chosen:
        raise FileNotFoundError(f"dataset {repo_id!r}: no data files for split {split!r}"
                                f"{f' subset {subset!r}' if subset else ''}; files there: {rels[:10]}")
    return [os.path.join(root, r) for r in chosen]


def _date_ok(record: dict, filters: Mapping) -> str | None:
    """None when inside the window, else the reason it is filtered out."""
    if filters.get("date_from") is None and filters.get("date_to") is None:
        return None
    date = str(record.get("contest_date") or "")[:10]
    if not date:
        return "no contest_date"
    if filters.get("date_from") and date < str(filters["date_from"])[:10]:
        return "date window"
    if filters.get("date_to") and date > str(filters["date_to"])[:10]:
        return "date window"
    return None


def _check_pass_rates(rates) -> None:
    if not isinstance(rates, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
            for k, v in rates.items()):
        raise ValueError(f"pass_rates must map proxy names to numbers in [0, 1], got {str(rates)[:100]}")


def adapt_row(row, index: int, file_source: str, fmt: str) -> tuple[dict, str]:
    """(canonical record with `pass_rates` / `levels` / `level` carried over, format name)."""
    if isinstance(row, str):  # a JSONL line that did not parse (adapters.read_rows keeps it)
        raise ValueError(str(row))
    if not isinstance(row, dict):
        raise ValueError(f"row is a {type(row).__name__}, not an object")
    name = detect_format(row) if fmt == "auto" else fmt
    record = ADAPTERS[name](row, index, file_source)
    for key in CARRIED:
        if row.get(key) is not None and key not in record:
            record[key] = row[key]
    if "pass_rates" in record:
        _check_pass_rates(record["pass_rates"])
    if "levels" in record and not (isinstance(record["levels"], list) and all(isinstance(x, str) for x in record["levels"])):
        raise ValueError(f"levels must be a list of names, got {record['levels']!r}")
    return record, name


def load_source(spec) -> tuple[list[dict], SourceReport]:
    """Records of one source spec (see the module docstring) and a report of skips/filters."""
    spec = _plain(spec)
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"source spec: unknown keys {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    if bool(spec.get("path")) == bool(spec.get("hub")):
        raise ValueError(f"source spec needs exactly one of 'path' or 'hub', got {spec}")
    fmt = spec.get("format") or "auto"
    if fmt != "auto" and fmt not in ADAPTERS:
        raise ValueError(f"source spec: unknown format {fmt!r}; known: auto, {', '.join(ADAPTERS)}")
    filters = _plain(spec.get("filters") or {})
    if set(filters) - FILTER_KEYS:
        raise ValueError(f"source spec filters: unknown keys {sorted(set(filters) - FILTER_KEYS)}; known: {sorted(FILTER_KEYS)}")
    domain = spec.get("domain")
    if domain not in (None, "math", "code"):
        raise ValueError(f"source spec domain: {domain!r} is not 'math' or 'code'")
    if spec.get("path"):
        files, default_name = local_files(str(spec["path"])), pathlib.Path(str(spec["path"])).stem
    else:
        files = hub_files(spec["hub"], spec.get("split") or "train", spec.get("subset"), spec.get("revision"), spec.get("files"))
        default_name = spec["hub"]
    _require_pyarrow(files)
    report = SourceReport(name=spec.get("name") or default_name, files=files)
    records, seen, limit, prefix = [], set(), filters.get("limit"), spec.get("id_prefix") or ""
    for path in files:
        file_source = pathlib.Path(path).name.split(".")[0]
        rows = read_rows(path)
        report.total += len(rows)
        for index, row in enumerate(rows):
            try:
                record, name = adapt_row(row, index, file_source, fmt)
                record["id"] = prefix + record["id"]
                if record["id"] in seen:
                    raise ValueError(f"duplicate id {record['id']!r}")
                if domain and record["domain"] != domain:
                    raise ValueError(f"domain mismatch: a {record['domain']} row in a {domain} source")
            except Exception as e:  # a bad row is counted, never fatal
                report.skip(index, f"{type(e).__name__}: {e}")
                continue
            why = _date_ok(record, filters) or ("limit" if limit is not None and len(records) >= limit else None)
            if why:
                report.filtered[why] += 1
                continue
            seen.add(record["id"])
            if spec.get("name"):
                record["source"] = spec["name"]
            else:
                record.setdefault("source", report.name)
            records.append(record)
            report.formats[name] += 1
    report.loaded = len(records)
    return records, report


def load_sources(specs) -> tuple[list[dict], list[SourceReport]]:
    """Records of several sources, concatenated; an id seen in an earlier source is a skip."""
    if isinstance(specs, Mapping) or hasattr(specs, "to_dict"):
        specs = [specs]
    records, reports, seen = [], [], set()
    for spec in specs:
        got, report = load_source(spec)
        for r in got:
            if r["id"] in seen:
                report.loaded -= 1
                report.skip(-1, f"ValueError: duplicate id {r['id']!r} (also in an earlier source; set id_prefix)")
            else:
                seen.add(r["id"])
                records.append(r)
        reports.append(report)
    return records, reports
