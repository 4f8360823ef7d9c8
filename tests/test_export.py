"""`python -m dsrl_jax.export`: step N of a training workdir's orbax checkpoints as a HF
directory that transformers loads with the same logits as our model at that step.
(The CPU demo's smoke run exported from a gs:// workdir: tests/test_cloud_paths.py.)"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dsrl_jax import cli, export
from dsrl_jax.checkpoint import Checkpointer
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import preset
from tests.export_utils import ours, transformers_logits

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A trainer-shaped workdir: model_config.json and the train state of steps 1 and 2."""
    d = tmp_path_factory.mktemp("run")
    cfg = preset("tiny-untied", param_dtype="float32", dtype="float32")
    (d / "model_config.json").write_text(json.dumps(cfg.to_hf()))
    states = {}
    with Checkpointer(str(d / "checkpoints"), async_save=False) as ckpt:
        for step in (1, 2):
            params = qwen2.init_params(cfg, step)
            states[step] = params
            ckpt.save(step, {"params": params, "step": np.int32(step), "rng": jax.random.key(step)},
                      {"curriculum": {}}, force=True)
    return d, cfg, states


def test_export_step_n_matches_our_logits(workdir, tmp_path):
    pytest.importorskip("torch")
    d, cfg, states = workdir
    tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 9)).astype(np.int32)
    assert export.export(str(d), str(tmp_path / "s1"), step=1) == 1
    got = transformers_logits(str(tmp_path / "s1"), tokens)
    np.testing.assert_allclose(got, ours(cfg, states[1], tokens), atol=1e-4)
    assert np.abs(got - ours(cfg, states[2], tokens)).max() > 1e-2  # step 1, not the latest
    assert export.export(str(d), str(tmp_path / "latest")) == 2


def test_export_cli_and_its_errors(workdir, tmp_path):
    d, _, _ = workdir
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    out = tmp_path / "hf"
    proc = subprocess.run([sys.executable, "-m", "dsrl_jax.export", f"--workdir={d}", "--step=2", f"--out={out}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported step 2 of {d}" in proc.stdout
    assert {"config.json", "model.safetensors", "generation_config.json"} <= set(os.listdir(out))
    with pytest.raises(cli.UsageError, match="no checkpoint of step 7 .*steps: 1, 2"):
        export.export(str(d), str(tmp_path / "x"), step=7)
