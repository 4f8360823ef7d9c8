"""gs:// workdirs and model paths, for real, against a local GCS emulator
(tests/gcs_emulator.py): epath/gcsfs for files, orbax/tensorstore's GCS driver for
checkpoints. The CPU demo (smoke) trains in a gs:// workdir, its step N is exported to a
gs:// directory that transformers loads with our logits, and that exported model is loaded
from gs:// and evaluated into a gs:// workdir."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from dsrl_jax import paths
from dsrl_jax.metrics import MetricsWriter, read_metrics
from tests import gcs_emulator

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(gcs_emulator.missing() is not None, reason=str(gcs_emulator.missing()))
ROOT = f"gs://{gcs_emulator.BUCKET}"


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator.emulator() as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_staged_directory_and_local_copy(gcs, tmp_path):
    remote = f"{ROOT}/staged"
    paths.write_text(f"{remote}/a.txt", "a")
    with paths.staged(remote) as local:
        assert open(os.path.join(local, "a.txt")).read() == "a"  # downloaded
        os.makedirs(os.path.join(local, "sub"))
        open(os.path.join(local, "sub", "b.txt"), "w").write("b")
        paths.write_text(f"{remote}/a.txt", "written meanwhile")  # unchanged locally: not re-uploaded
    assert paths.read_text(f"{remote}/sub/b.txt") == "b"
    assert paths.read_text(f"{remote}/a.txt") == "written meanwhile"
    copy = paths.local_copy(remote, cache_dir=str(tmp_path))
    assert open(os.path.join(copy, "sub", "b.txt")).read() == "b" and not paths.is_url(copy)


def test_metrics_writer_on_gcs_uploads_and_resumes(gcs):
    workdir = f"{ROOT}/metrics"
    with MetricsWriter(workdir) as w:
        for step in range(5):
            w.write(step, {"reward/mean": step / 4}, stage="s1")
        w.flush()
        assert [r["step"] for r in read_metrics(workdir)] == [0, 1, 2, 3, 4]  # uploaded on flush
    assert list(paths.Path(f"{workdir}/tensorboard").glob("events.out.tfevents.*"))
    with MetricsWriter(workdir, resume_step=3) as w:  # killed after 4, checkpointed at 2
        w.write(3, {"reward/mean": 9.0})
    assert [(r["step"], r["reward/mean"]) for r in read_metrics(workdir)] == [(0, 0), (1, .25), (2, .5), (3, 9.0)]


@pytest.mark.slow  # the CPU demo's smoke run (a few minutes on 2 busy cores)
def test_demo_train_export_and_evaluate_on_gcs(gcs, tmp_path):
    from dsrl_jax.checkpoint import Checkpointer
    from dsrl_jax.demo import CharTokenizer
    from dsrl_jax.checkpoint import abstract_like
    from dsrl_jax.evaluate import default_eval_config, evaluate_policy
    from dsrl_jax.policy import load_policy
    from dsrl_jax.models import hf
    from tests.export_utils import ours, transformers_logits

    env = {**os.environ, **gcs, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
           "DSRL_CACHE": str(tmp_path / "cache")}
    run = f"{ROOT}/demo"
    proc = subprocess.run([sys.executable, "-m", "dsrl_jax.main", "--config=configs/demo.py", "--config.smoke=True",
                           f"--workdir={run}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not os.path.exists(REPO / "gs:"), "a local gs: folder was written"
    # The run's files are on GCS: metrics, TensorBoard, checkpoints, the demo's own outputs.
    metrics = read_metrics(run)
    assert metrics and {"reward/mean", "stage"} <= set(metrics[-1])
    assert list(paths.Path(f"{run}/tensorboard").glob("events.out.tfevents.*"))
    for f in ("config.json", "model_config.json", "demo_results.json", "scored/problems.jsonl",
              "models/warm-start/model.safetensors", "eval_problems.jsonl"):
        assert paths.exists(f"{run}/{f}"), f
    with Checkpointer(f"{run}/checkpoints", read_only=True) as ckpt:
        steps = ckpt.all_steps()
    assert len(steps) >= 2, steps
    step = steps[0]  # not the latest: --step picks it

    out = f"{ROOT}/exports/step_{step}"
    proc = subprocess.run([sys.executable, "-m", "dsrl_jax.export", f"--workdir={run}", f"--step={step}",
                           f"--out={out}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # transformers on the export == our model on the checkpoint of that step (not the warm start).
    tok = CharTokenizer()
    policy = load_policy(out, tokenizer=tok, prompt_fn=lambda r: tok.format_prompt(r["problem"]))  # on GCS too
    cfg, params, model_dir = policy.cfg, policy.params, policy.model_dir
    with Checkpointer(f"{run}/checkpoints", read_only=True) as ckpt:
        trained = ckpt.restore_subtree(step, "params", abstract_like(params))
    tokens = np.asarray([CharTokenizer().format_prompt("3+4-2")] * 2, np.int32)
    ours_step = ours(cfg, trained, tokens)
    np.testing.assert_allclose(transformers_logits(model_dir, tokens), ours_step, atol=1e-4)
    _, warm = hf.load_params(f"{run}/models/warm-start", cfg)
    assert np.abs(ours(cfg, warm, tokens) - ours_step).max() > 1e-4, "step N equals the warm start"

    # Evaluation of the exported model into a gs:// workdir.
    records = [json.loads(line) for line in paths.read_text(f"{run}/eval_problems.jsonl").splitlines()][:4]
    opts = default_eval_config()
    opts.update(n=2, temperature=1.0, top_p=1.0, max_new_tokens=24, batch_size=4, reward_workers=0)
    evals = f"{ROOT}/evals/step_{step}"
    summary = evaluate_policy(policy, {"demo": records}, opts, workdir=evals)
    assert json.loads(paths.read_text(f"{evals}/summary.json")) == json.loads(json.dumps(summary))
    rows = paths.read_text(f"{evals}/demo/responses.jsonl").splitlines()
    assert len(rows) == 2 * len(records)


def test_training_model_init_from_gcs(gcs, r1_tokenizer_dir):
    """`config.model.init=gs://...`: the trainer's model loading (and the config check)."""
    import jax

    from configs import base
    from dsrl_jax import parallel
    from dsrl_jax.models import hf, qwen2
    from dsrl_jax.models.config import preset
    from dsrl_jax.policy import load_policy
    from dsrl_jax.validate import ConfigError, validate_config

    cfg = preset("tiny-untied", param_dtype="float32", dtype="float32")
    params = qwen2.init_params(cfg, 3)
    model_url = f"{ROOT}/models/tiny"
    hf.save_params(model_url, cfg, params, tokenizer_dir=str(r1_tokenizer_dir))  # written to gs:// too
    c = base.get_config()
    c.model.update(init=model_url, dtype="float32", remat="none")
    mesh = parallel.make_mesh(c.mesh.to_dict())
    policy = load_policy(c.model.init, mesh, c.sharding_rules.to_dict(), dtype="float32", remat="none")
    got_cfg, got, tokenizer, model_dir = policy.cfg, policy.params, policy.tokenizer, policy.model_dir
    assert not paths.is_url(model_dir) and tokenizer.eos_token_id == 151643
    assert got_cfg.hidden_size == cfg.hidden_size
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), got, params))
    c.model.init = f"{ROOT}/models/missing"
    c.data.sources = [{"hub": "unused/never-read"}]
    with pytest.raises(ConfigError, match="model.init: .*no such directory"):
        validate_config(c, num_devices=8)
