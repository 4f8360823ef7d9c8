"""The memory planner CLI (python -m dsrl_jax.tools.memory) on a tiny model: it compiles the
train step, the sampler and the reference log-prob program of a paper config on fake devices
and ends with one JSON line of per-device figures."""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_memory_tool_prints_the_json_summary():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    proc = subprocess.run(
        [sys.executable, "-m", "dsrl_jax.tools.memory", "--config=configs/stage1.py", "--topology=cpu-8",
         "--config.model.init=preset:tiny"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["topology"] == "cpu-8" and summary["hbm_bytes_per_device"] == 16 * 1024**3
    for name in ("train_step", "sampler", "ref_logprobs"):  # stage 1 has a KL term: reference log-probs
        p = summary[name]
        for key in ("peak_bytes_per_device", "argument_bytes", "output_bytes", "temp_bytes", "flops",
                    "total_bytes_per_device", "fits"):
            assert key in p, (name, key)
        assert 0 < p["peak_bytes_per_device"] <= p["total_bytes_per_device"]
        assert p["fits"] is True  # a tiny model fits in 16 GiB
    r = summary["rollout"]  # continuous batching: 24 rows in flight per chip by default
    for key in ("rows_in_flight_per_chip", "decode_step_bytes", "decode_step_flops", "modeled_step_s",
                "modeled_rollout_s_per_grpo_step", "static_modeled_rollout_s_per_grpo_step"):
        assert r[key] > 0, key
    assert r["rows_in_flight_per_chip"] == 24 and r["slots"] == 24 * 8 and r["fits"] is True
    assert r["decode_step_bytes"] < r["decode_step_bytes_counted_by_xla"]  # in-place pool writes
    # Rows decode until they stop, not until the longest row of a call reaches the cap.
    assert r["modeled_rollout_s_per_grpo_step"] < r["static_modeled_rollout_s_per_grpo_step"]
    table = "\n".join(lines[:-1])
    # micro_batch_size -1: one sequence per device (8); lengths bucketed to the stage's
    # limits, not rounded up to powers of two; 4 prompts x 16 samples per sampler call.
    assert "256x8x(1024+16384)" in table, table
    assert "4p x16 cache 17408" in table, table
