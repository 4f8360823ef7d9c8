"""MetricsWriter: JSONL round trip, TensorBoard events, resume truncation, timers."""
import glob
import json
import math
import os
import struct

import jax.numpy as jnp
import numpy as np
from tensorboardX.proto import event_pb2

from dsrl_jax import metrics as M


def tb_events(logdir):
    """All Event protos in the TFRecord event files under `logdir`, in order."""
    events = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
            pos += 12 + length + 4  # length, its crc, payload, payload crc
    return events


def tb_scalars(logdir):
    """{tag: [(step, value), ...]} from the event files under `logdir`."""
    out = {}
    for event in tb_events(logdir):
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_write_read_round_trip(tmp_path):
    with M.MetricsWriter(tmp_path) as w:
        w.write(1, {"loss": jnp.float32(0.5), "reward/mean": np.float64(0.25),
                    "n": np.int32(7), "ok": jnp.array(True), "bf": jnp.bfloat16(1.5),
                    "hist": np.array([1.0, 2.0]), "name": "l2"}, stage=1)
        w.write(2, {"loss": float("nan"), "kl": jnp.array(float("inf"))}, stage="stage2")
    lines = open(tmp_path / "metrics.jsonl").read().splitlines()
    assert all(json.loads(l) for l in lines)  # strict JSON
    assert "NaN" not in lines[1] and "Infinity" not in lines[1]
    recs = M.read_metrics(tmp_path)
    assert recs[0] == {"step": 1, "stage": 1, "loss": 0.5, "reward/mean": 0.25, "n": 7,
                       "ok": True, "bf": 1.5, "hist": [1.0, 2.0], "name": "l2"}
    assert isinstance(recs[0]["n"], int)
    assert recs[1] == {"step": 2, "stage": "stage2", "loss": None, "kl": None}


def test_tensorboard_event_file_has_tags(tmp_path):
    with M.MetricsWriter(tmp_path) as w:
        for step in range(3):
            w.write(step, {"train/loss": jnp.float32(step * 0.5), "name": "x",
                           "hist": np.array([1.0, 2.0])})
    scalars = tb_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert "name" not in scalars and "hist" not in scalars


def test_resume_drops_steps_at_or_after_resume_step(tmp_path):
    with M.MetricsWriter(tmp_path) as w:
        for step in range(1, 6):
            w.write(step, {"loss": step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss"')  # half-written line of a killed run
    with M.MetricsWriter(tmp_path, resume_step=4) as w:  # checkpoint was at step 4
        for step in range(4, 8):
            w.write(step, {"loss": step * 10})
    recs = M.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["loss"] for r in recs] == [1, 2, 3, 40, 50, 60, 70]
    # TensorBoard is told to discard the old events from step 4 on (SessionLog.START).
    starts = [e.step for e in tb_events(tmp_path / "tensorboard")
              if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [4]
    points = tb_scalars(tmp_path / "tensorboard")["loss"]
    assert points[:3] == [(1, 1), (2, 2), (3, 3)]  # the first run's file was kept
    assert points[-4:] == [(4, 40), (5, 50), (6, 60), (7, 70)]


def test_truncate_metrics_counts_dropped(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)) + "garbage")
    assert M.truncate_metrics(path, 2) == 3
    assert M.read_metrics(path) == [{"step": 1}]
    assert M.truncate_metrics(tmp_path / "missing.jsonl", 1) == 0


def test_non_primary_writes_nothing(tmp_path):
    with M.MetricsWriter(tmp_path / "w", is_primary=False) as w:
        rec = w.write(1, {"loss": 1.0})
    assert rec["loss"] == 1.0 and not (tmp_path / "w").exists()


def test_timer_accumulates_phases_and_resets():
    t = M.Timer()
    with t.phase("sample"):
        pass
    with t.phase("sample"):
        pass
    with t.phase("train"):
        pass
    s = t.summary()
    assert set(s) == {"time/sample", "time/train"} and all(v >= 0 for v in s.values())
    assert t.summary() == {}
    sink = {}
    with M.phase_timer("reward", sink):
        pass
    assert set(sink) == {"reward"} and math.isfinite(sink["reward"])
