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
The workdir may be a URL (gs://...): object stores cannot append, so the files are written
in a local copy (`paths.Staged`) and uploaded on every `flush()` and on `close()`; a resumed
run downloads metrics.jsonl first.

Weights & Biases (optional, never required): `wandb={"project": "my-project", ...}` (keys
project, entity, name, mode, tags; from `config.log.wandb`) also logs every record's
scalars with `wandb.log(..., step=step)`, the run's config as the W&B config; the run id is
kept in `<workdir>/wandb_run_id.txt` so a resumed run continues the same W&B run. An empty
project turns it off; wandb is imported only then.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import time
from typing import Any, Iterator

import numpy as np

from dsrl_jax import paths

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
    with paths.Path(path).open("r") as f:
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
    if paths.isdir(path):
        path = paths.join(path, METRICS_FILE)
    return read_jsonl(path)


class MetricsWriter:
    """Appends metrics to `<workdir>/metrics.jsonl` and TensorBoard scalars."""

    def __init__(self, workdir: str | os.PathLike, use_tensorboard: bool = True, *,
                 resume_step: int | None = None, is_primary: bool = True,
                 wandb: dict | None = None, run_config: dict | None = None):
        self.workdir = paths.normalize(workdir)
        self.path = paths.join(self.workdir, METRICS_FILE)  # where the record ends up
        self.enabled = is_primary
        self._file = self._tb = self._wandb = self._staged = None
        if not self.enabled:
            return
        # A local directory, or a local copy of a remote one (only metrics.jsonl is needed).
        self._staged = paths.Staged(self.workdir, download=False)
        if self._staged.remote and paths.exists(paths.join(self.workdir, METRICS_FILE)):
            paths.copy_file(paths.join(self.workdir, METRICS_FILE), os.path.join(self._staged.local, METRICS_FILE))
        local_path = os.path.join(self._staged.local, METRICS_FILE)
        if resume_step is not None:
            truncate_metrics(local_path, resume_step)
        self._file = open(local_path, "a", encoding="utf-8")
        if use_tensorboard:
            from tensorboardX import SummaryWriter  # heavy import, only when used
            # tensorboardX names event files by the second and opens them with "wb": a
            # run resumed within the same second would overwrite the old file without
            # a unique suffix; nanoseconds keep the files' name order chronological.
            self._tb = SummaryWriter(os.path.join(self._staged.local, TB_DIR), purge_step=resume_step,
                                     flush_secs=30, filename_suffix=f".{time.time_ns()}")
        if wandb and wandb.get("project"):
            self._wandb = _start_wandb(self.workdir, dict(wandb), run_config)

    def write(self, step: int, metrics: dict[str, Any], stage: Any = None) -> dict:
        """Write one record for `step`; returns the JSON-able record that was written."""
        record = {"step": int(step), "stage": to_json_value(stage)}
        record.update({k: to_json_value(v) for k, v in metrics.items()})
        if not self.enabled:
            return record
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        scalars = {name: _scalar_or_none(value) for name, value in metrics.items()}
        scalars = {name: v for name, v in scalars.items() if v is not None}
        if self._tb is not None:
            for name, scalar in scalars.items():
                self._tb.add_scalar(name, scalar, int(step))
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))
        return record

    # (attribute, its flush method, its close method), in the order they are flushed and
    # closed: the staged copy of a remote workdir uploads what the writers before it wrote.
    _OUTPUTS = (("_file", "flush", "close"), ("_tb", "flush", "close"), ("_wandb", None, "finish"),
                ("_staged", "sync", "close"))

    def flush(self) -> None:
        """Flush the files (and upload them when the workdir is remote)."""
        for attr, flush, _ in self._OUTPUTS:
            if flush and getattr(self, attr) is not None:
                getattr(getattr(self, attr), flush)()

    def close(self) -> None:
        for attr, _, close in self._OUTPUTS:
            if getattr(self, attr) is not None:
                getattr(getattr(self, attr), close)()
                setattr(self, attr, None)

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start_wandb(workdir: str, options: dict, run_config: dict | None):
    """A W&B run for `workdir`, resumed when the workdir already has one."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError("config.log.wandb.project is set but wandb is not installed (pip install wandb)") from e
    id_file = paths.join(workdir, "wandb_run_id.txt")
    run_id = paths.read_text(id_file).strip() if paths.exists(id_file) else secrets.token_hex(6)
    local = None if paths.is_url(workdir) else workdir
    run = wandb.init(project=options["project"], entity=options.get("entity") or None,
                     name=options.get("name") or None, mode=options.get("mode") or None,
                     tags=list(options.get("tags") or []) or None, config=run_config, id=run_id,
                     resume="allow", dir=local)
    paths.write_text(id_file, run_id + "\n")
    return run


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
