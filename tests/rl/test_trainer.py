"""Kill -9 a real training process, run the same command again: bit-identical parameters.

tests/rl/trainer_script.py is a small but complete run (sampler, reward workers, sharded
micro-batched updates, two curriculum stages, async orbax checkpoints). The test runs it
once uninterrupted, then again in another workdir: SIGKILL to the whole process group once
a checkpoint is complete, a half-written checkpoint of a later step left behind (what a
kill during a save leaves), and the same command once more. The resumed run must start
from the last complete checkpoint and end with exactly the uninterrupted run's parameters
and metrics, one metrics line per step. A second test trains the same run with continuous
batching and checks it ends where the static path does.
"""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).with_name("trainer_script.py")
REPO = SCRIPT.parents[2]
STEPS = 6
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax 0.12: <step>.orbax-checkpoint-tmp[-<timestamp>] while writing
# Fields of metrics.jsonl that depend on the run's arithmetic (not on timing).
DETERMINISTIC = ("reward/mean", "response_length/mean", "loss", "pg_loss", "kl", "grad_norm", "num_tokens",
                 "approx_kl", "skipped_updates", "stage")


def _env(cache_dir):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the script picks 2 devices
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
               # One compile for the three processes (the first fills the cache); the
               # executables are the same, so this saves time and changes no result.
               JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _command(workdir, step_sleep=0.0):
    return [sys.executable, str(SCRIPT), str(workdir), "--steps", str(STEPS), "--step_sleep", str(step_sleep)]


def _run(workdir, env, step_sleep=0.0):
    proc = subprocess.run(_command(workdir, step_sleep), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def _complete_steps(ckpt_dir):
    """Steps whose checkpoint directory is final (renamed from its tmp name)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


def _params(workdir):
    with np.load(workdir / "final_params.npz") as f:
        return {k: f[k] for k in f.files}


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_and_restarted_run_equals_uninterrupted_run(tmp_path):
    env = _env(tmp_path / "jax_cache")
    t0 = time.perf_counter()

    # 1. Uninterrupted.
    ref_dir = tmp_path / "uninterrupted"
    out = _run(ref_dir, env)
    ref_hash = re.search(r"PARAMS_SHA256 (\w+)", out).group(1)
    assert f"FINAL_STEP {STEPS}" in out and "resumed" not in out
    t_ref = time.perf_counter() - t0

    # 2. The same command in another workdir, SIGKILLed (with its reward workers) once a
    #    checkpoint is complete, while steps remain.
    run_dir = tmp_path / "killed"
    ckpt_dir = run_dir / "checkpoints"
    proc = subprocess.Popen(_command(run_dir, step_sleep=1.0), env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _complete_steps(ckpt_dir) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()[-3000:]
        assert _complete_steps(ckpt_dir), "no checkpoint within 300 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    killed_out = proc.stdout.read()
    assert proc.returncode == -signal.SIGKILL
    assert "FINAL_STEP" not in killed_out and not (run_dir / "final_params.npz").exists()
    steps = _complete_steps(ckpt_dir)
    last = steps[-1]
    assert last < STEPS

    # What a kill in the middle of writing the next checkpoint leaves behind: the step's
    # directory under its temporary name, never renamed, without the commit marker.
    partial = ckpt_dir / f"{last + 1}{TMP_SUFFIX}-{time.time_ns() // 1000}"
    for p in ckpt_dir.iterdir():
        if TMP_SUFFIX in p.name:  # a real in-flight save of the killed run, if any
            shutil.rmtree(p)
    shutil.copytree(ckpt_dir / str(last), partial)
    (partial / "commit_success.txt").unlink(missing_ok=True)
    (partial / "state" / "_METADATA").unlink(missing_ok=True)

    # 3. Restart: resumes from the last complete checkpoint, ends bit-identical.
    out = _run(run_dir, env)
    assert f"resumed from step {last} " in out, out[-3000:]
    assert f"PARAMS_SHA256 {ref_hash}" in out
    ref, got = _params(ref_dir), _params(run_dir)
    assert sorted(ref) == sorted(got)
    for name in ref:
        assert ref[name].dtype == got[name].dtype and ref[name].tobytes() == got[name].tobytes(), name
    assert not partial.exists()  # orbax removed the leftover before saving over it
    assert _complete_steps(ckpt_dir)[-1] == STEPS

    # One metrics line per step, equal to the uninterrupted run's; TensorBoard events.
    ref_m, got_m = _metrics(ref_dir), _metrics(run_dir)
    assert [m["step"] for m in got_m] == list(range(1, STEPS + 1)) == [m["step"] for m in ref_m]
    for a, b in zip(ref_m, got_m):
        assert {k: a.get(k) for k in DETERMINISTIC} == {k: b.get(k) for k in DETERMINISTIC}, a["step"]
    assert any(m["reward/std"] > 0 for m in ref_m)  # rewards differed: the policy gradient was live
    assert [m["stage"] for m in ref_m] == ["s1"] * (STEPS // 2) + ["s2"] * (STEPS - STEPS // 2)
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)  # (one file per process)
    print(f"uninterrupted run {t_ref:.0f} s; whole test {time.perf_counter() - t0:.0f} s; "
          f"killed after checkpoint {last}")


@pytest.mark.slow
def test_continuous_batching_trains_like_the_static_path(tmp_path):
    """rollout.max_in_flight=3 (3 slots for 8 rows per step, refilled as rows stop; decoding
    from Sampler.prepare's layout) yields the static path's tokens, so training ends with
    bit-identical parameters and the same metrics."""
    env = _env(tmp_path / "jax_cache")
    runs = {}
    for name, extra in (("static", []), ("continuous", ["--max_in_flight", "3"])):
        cmd = [sys.executable, str(SCRIPT), str(tmp_path / name), "--steps", "2", *extra]
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        runs[name] = re.search(r"PARAMS_SHA256 (\w+)", proc.stdout).group(1), _metrics(tmp_path / name)
    (h_static, m_static), (h_cont, m_cont) = runs["static"], runs["continuous"]
    assert h_static == h_cont
    assert len(m_static) == len(m_cont) == 2
    for a, b in zip(m_static, m_cont):
        assert {k: a.get(k) for k in DETERMINISTIC} == {k: b.get(k) for k in DETERMINISTIC}, a["step"]
    assert any(m["reward/std"] > 0 for m in m_static)
