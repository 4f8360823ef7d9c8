"""Whole GRPO steps (rollout, reward workers, update, checkpoints) on two processes x 4 fake
CPU devices (gloo) end where one process x 8 devices ends: the same parameters and metrics."""
import json
import os
import sys

import numpy as np
import pytest

from tests.processes import free_port, run_all
from tests.rl.test_trainer import SCRIPT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESH = "fsdp=4,tensor=2"
STEPS = 4


def _env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSRL_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def _run(workdirs, envs, timeout=600):
    cmd = lambda w: [sys.executable, str(SCRIPT), str(w), f"--steps={STEPS}", f"--mesh={MESH}", "--micro_batch=4"]
    return run_all([cmd(w) for w in workdirs], envs, timeout, what="run")


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    single = tmp_path / "single"
    _run([single], [_env(8)])
    multi = tmp_path / "multi"
    port = free_port()
    envs = [_env(4, DSRL_COORDINATOR=f"127.0.0.1:{port}", DSRL_NUM_PROCESSES="2", DSRL_PROCESS_ID=str(i))
            for i in range(2)]
    logs = _run([multi, multi], envs)

    one, two = _metrics(single), _metrics(multi)
    assert [m["step"] for m in one] == [m["step"] for m in two] == list(range(1, STEPS + 1))  # written once
    for a, b in zip(one, two):
        # The same rows were sampled and graded (each process graded its share) ...
        for key in ("reward/mean", "reward/std", "response_length/mean", "truncation_rate", "solve_partial"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
        # ... and the update saw the whole batch.
        for key in ("loss", "pg_loss", "entropy", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    p1, p2 = np.load(single / "final_params.npz"), np.load(multi / "final_params.npz")
    assert sorted(p1.files) == sorted(p2.files)
    for name in p1.files:
        # Collectives sum in another order: ~1e-6 apart after 4 Adam steps of lr 1e-3 (each
        # step moves a weight by up to ~1e-3), i.e. well under 1% of one update.
        np.testing.assert_allclose(p2[name], p1[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert all("FINAL_STEP 4" in log for log in logs)
    steps = sorted(int(d) for d in os.listdir(multi / "checkpoints") if d.isdigit())
    assert steps and steps[-1] == STEPS  # one collective checkpoint directory, complete
