"""Optional Weights & Biases logging beside metrics.jsonl, checked against wandb's offline
mode (the run's own .wandb record log is read back). Skipped where wandb is not installed:
it is never a dependency."""
from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys

import pytest

from dsrl_jax.metrics import MetricsWriter, read_metrics


def _records(path: str):
    """The protobuf records of a .wandb file (a LevelDB-style log: 7-byte file header, then
    32 KiB blocks of chunks with a 7-byte header: crc, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if n == 0 and kind == 0:  # block padding
            pos += left - 7
            continue
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _history(run_dir: str) -> tuple[list[dict], list]:
    runs, rows = [], []
    for path in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))):
        for r in _records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                runs.append(r.run)
            elif kind == "history":
                rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    return rows, runs


@pytest.mark.slow  # two W&B runs start (about 20 s each)
def test_wandb_offline_logs_the_scalars_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    workdir = tmp_path / "run"
    options = {"project": "dsrl-test", "mode": "offline", "name": "demo", "tags": ["t"]}
    with MetricsWriter(workdir, use_tensorboard=False, wandb=options, run_config={"optim": {"lr": 1e-6}}) as w:
        for step in range(1, 4):
            w.write(step, {"reward/mean": 0.25 * step, "note": "text is not a scalar"}, stage="stage1")
    run_id = (workdir / "wandb_run_id.txt").read_text().strip()
    # A resumed run (same workdir) continues the same W&B run.
    with MetricsWriter(workdir, use_tensorboard=False, wandb=options, resume_step=4) as w:
        w.write(4, {"reward/mean": 1.5})
    rows, runs = _history(str(workdir))
    assert {r.run_id for r in runs} == {run_id} and runs[0].project == "dsrl-test"
    assert runs[0].display_name == "demo"
    logged = {int(r["_step"]): r["reward/mean"] for r in rows}
    assert logged == {1: 0.25, 2: 0.5, 3: 0.75, 4: 1.5}
    assert all("note" not in r for r in rows)
    assert [m["step"] for m in read_metrics(workdir)] == [1, 2, 3, 4]  # metrics.jsonl as without W&B


def test_wandb_is_not_imported_when_off(tmp_path):
    code = ("import sys; from dsrl_jax.metrics import MetricsWriter\n"
            f"w = MetricsWriter({str(tmp_path)!r}, use_tensorboard=False, wandb={{'project': ''}})\n"
            "w.write(0, {'x': 1.0}); w.close()\n"
            "assert 'wandb' not in sys.modules, 'wandb imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_base_config_has_wandb_off():
    from configs import base

    c = base.get_config()
    assert c.log.wandb.project == ""
