"""Run metrics: one JSON object per line in `<workdir>/metrics.jsonl`, plus TensorBoard.

metrics.jsonl is the record the notebooks read (`read_metrics`); TensorBoard event files
under `<workdir>/tensorboard` are for watching a run live. Each line is
`{"step": int, "stage": int|str|null, <name>: value, ...}` where values are plain JSON:
numpy/jax scalars become int/float/bool, small arrays become lists, and non-finite
floats (NaN, +-inf) become `null`, because bare NaN is not valid JSON and would break
strict readers (pandas, jq). TensorBoard still receives the raw non-finite values.

Resuming: a run killed after step 120 but last checkpointed at step 100 has already
written metrics for steps 100..120, which the resumed run writes again. Pass
`resume_step=100` and lines with step >= 100 are dropped first (and TensorBoard is told
to purge them via `purge_step`), so a resumed run leaves one line per step.

Only the primary process should write: pass `is_primary=jax.process_index() == 0`.
Paths are local; for a gs:// workdir, write metrics to a local directory and sync it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any, Iterator

import numpy as np

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"


def to_json_value(value: Any) -> Any:
    """A JSON-valid Python value for a metric (NaN/inf -> None)."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    arr = np.asarray(value)  # numpy and jax arrays/scalars (jax: fetched to host)
    if arr.ndim > 0 and arr.size != 1:
        return [to_json_value(v) for v in arr.reshape(-1).tolist()]
    item = arr.reshape(()).item()
    return to_json_value(item)


def _scalar_or_none(value: Any) -> float | None:
    """The float TensorBoard should get, or None for non-scalars and strings."""
    if isinstance(value, (str, type(None))):
        return None
    arr = np.asarray(value)
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        return None
    return float(arr.reshape(()))


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Rewrite `path` keeping only lines with step < `step`; returns lines dropped.

    Lines that do not parse (the half-written last line of a killed run) are dropped too.
    The rewrite goes to a temporary file renamed over the original, so a kill during the
    truncation cannot lose the kept lines.
    """
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                keep = json.loads(line)["step"] < step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    return dropped


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Lines of a JSONL file; blank and unparseable (half-written last) lines are skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics.jsonl (or of `<workdir>/metrics.jsonl`), in file order.

    Non-finite values come back as None; an unparseable (half-written) line is skipped.
    """
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    return read_jsonl(path)


class MetricsWriter:
    """Appends metrics to `<workdir>/metrics.jsonl` and TensorBoard scalars."""

    def __init__(self, workdir: str | os.PathLike, use_tensorboard: bool = True, *,
                 resume_step: int | None = None, is_primary: bool = True):
        self.workdir = os.fspath(workdir)
        if "://" in self.workdir:
            raise ValueError(f"MetricsWriter needs a local directory, got {self.workdir}")
        self.path = os.path.join(self.workdir, METRICS_FILE)
        self.enabled = is_primary
        self._file = self._tb = None
        if not self.enabled:
            return
        os.makedirs(self.workdir, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if use_tensorboard:
            from tensorboardX import SummaryWriter  # heavy import, only when used
            # tensorboardX names event files by the second and opens them with "wb": a
            # run resumed within the same second would overwrite the old file without
            # a unique suffix; nanoseconds keep the files' name order chronological.
            self._tb = SummaryWriter(os.path.join(self.workdir, TB_DIR), purge_step=resume_step,
                                     flush_secs=30, filename_suffix=f".{time.time_ns()}")

    def write(self, step: int, metrics: dict[str, Any], stage: Any = None) -> dict:
        """Write one record for `step`; returns the JSON-able record that was written."""
        record = {"step": int(step), "stage": to_json_value(stage)}
        record.update({k: to_json_value(v) for k, v in metrics.items()})
        if not self.enabled:
            return record
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        if self._tb is not None:
            for name, value in metrics.items():
                scalar = _scalar_or_none(value)
                if scalar is not None:
                    self._tb.add_scalar(name, scalar, int(step))
        return record

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Timer:
    """Wall time per named phase of a step, summed until `summary()` reads and resets it.

        timer = Timer()
        with timer.phase("sample"):
            out = jax.block_until_ready(sample(...))   # block, or you time dispatch only
        writer.write(step, {**metrics, **timer.summary()})
    """

    def __init__(self, prefix: str = "time/"):
        self.prefix = prefix
        self._totals: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self._totals[name] = self._totals.get(name, 0.0) + elapsed

    def summary(self, reset: bool = True) -> dict[str, float]:
        """{prefix + phase: seconds} accumulated since the last reset."""
        out = {self.prefix + k: v for k, v in self._totals.items()}
        if reset:
            self._totals = {}
        return out


@contextlib.contextmanager
def phase_timer(name: str, sink: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in the block to `sink[name]` (a one-off Timer.phase)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        sink[name] = sink.get(name, 0.0) + time.perf_counter() - start
