"""Load problem records from a source spec: a local file/folder or a Hugging Face dataset.

    records, report = load_source({"path": "data/lcb.jsonl", "format": "auto",
                                   "filters": {"date_from": "2024-08-01", "date_to": "2025-01-31"}})
    print(report)   # "lcb: 300 rows: 279 loaded, 0 skipped, 21 filtered {'date window': 21}"

Spec fields (a plain dict):
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

import dataclasses
import fnmatch
import glob
import os
import pathlib
from collections.abc import Mapping

from dsrl_jax.data.adapters import ADAPTERS, SkipReport, load_rows, read_rows

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
SPEC_KEYS = {"path", "hub", "split", "subset", "revision", "files", "format", "domain", "name",
             "id_prefix", "filters"}
FILTER_KEYS = {"date_from", "date_to", "limit"}


@dataclasses.dataclass
class SourceReport(SkipReport):
    """SkipReport plus the source's name and its files."""

    name: str = ""
    files: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.name}: " + super().__str__()


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


def load_source(spec) -> tuple[list[dict], SourceReport]:
    """Records of one source spec (see the module docstring) and a report of skips/filters."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"source spec: unknown keys {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    if bool(spec.get("path")) == bool(spec.get("hub")):
        raise ValueError(f"source spec needs exactly one of 'path' or 'hub', got {spec}")
    fmt = spec.get("format") or "auto"
    if fmt != "auto" and fmt not in ADAPTERS:
        raise ValueError(f"source spec: unknown format {fmt!r}; known: auto, {', '.join(ADAPTERS)}")
    filters = spec.get("filters") or {}
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
    records, seen, limit = [], set(), filters.get("limit")

    def drop(record: dict) -> str | None:
        return _date_ok(record, filters) or ("limit" if limit is not None and len(records) >= limit else None)

    for path in files:
        start = len(records)
        load_rows(read_rows(path), fmt, pathlib.Path(path).name.split(".")[0], report, records, seen,
                  id_prefix=spec.get("id_prefix") or "", domain=domain, drop=drop)
        for record in records[start:]:
            if spec.get("name"):
                record["source"] = spec["name"]
            else:
                record.setdefault("source", report.name)
    return records, report


def load_sources(specs) -> tuple[list[dict], list[SourceReport]]:
    """Records of several sources, concatenated; an id seen in an earlier source is a skip."""
    if isinstance(specs, Mapping):
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
