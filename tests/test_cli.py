"""A user's mistake on the command line: one line on stderr, non-zero exit, no traceback;
and configs found by path or by name (dsrl_jax/cli.py)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from dsrl_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}

CASES = {
    "unknown_override_key": (["dsrl_jax.main", "--config=configs/demo.py", "--config.loss.kl_cof=0"],
                             ["--config.loss.kl_cof", 'did you mean "kl_coef"']),
    "missing_config_file": (["dsrl_jax.main", "--config=configs/stage_two.py"],
                            ["config file not found: configs/stage_two.py", "stage2"]),
    "unknown_loss_aggregation": (["dsrl_jax.main", "--config=configs/stage1.py", "--config.loss.loss_agg=tokenmean"],
                                 ["config.loss.loss_agg", "'tokenmean'", "token-mean", "seq-mean-token-mean"]),
    "evaluate_without_config": (["dsrl_jax.evaluate", "--workdir=/tmp/unused"], ["--config is required"]),
    "generate_missing_model": (["dsrl_jax.generate", "--model=/no/such/model", "--prompts=p.jsonl", "--out=o.jsonl"],
                               ["--model /no/such/model", "not a directory"]),
    "export_not_a_workdir": (["dsrl_jax.export", "--workdir=/no/such/run", "--out=/tmp/unused"],
                             ["not a training workdir"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_error_is_one_line(case, tmp_path):
    args, expected = CASES[case]
    proc = subprocess.run([sys.executable, "-m", *args, f"--workdir={tmp_path / 'run'}"] if args[0] == "dsrl_jax.main"
                          else [sys.executable, "-m", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0], lines[0]
    assert not (tmp_path / "run").exists()  # failed before starting anything


def test_unknown_stage_loss_aggregation_lists_the_choices():
    from configs import base
    from dsrl_jax.validate import ConfigError, validate_config

    c = base.get_config()
    c.curriculum.stages = [dict(name="a", loss=dict(loss_agg="mean"))]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.loss\.loss_agg: unknown loss_agg 'mean'; choices: .*token-mean"):
        validate_config(c, check_files=False, num_devices=8)


def test_config_by_path_or_name_from_anywhere(tmp_path, monkeypatch):
    checkout = str(REPO / "configs" / "stage2.py")
    assert cli.resolve_config(checkout) == checkout
    monkeypatch.chdir(tmp_path)  # no configs/ here: names resolve to the project's configs
    for spec in ("stage2", "stage2.py", "configs/stage2.py"):
        assert os.path.samefile(cli.resolve_config(spec), checkout)
    assert cli.resolve_config("configs/stage2.py:arg").endswith("stage2.py:arg")
    with pytest.raises(cli.UsageError, match="stage2"):
        cli.resolve_config("configs/stage3.py")
    for other in ("/elsewhere/stage2.py", "/elsewhere/configs/stage2.py"):
        with pytest.raises(cli.UsageError):
            cli.resolve_config(other)  # an explicit other directory is not redirected


def test_training_config_by_name_outside_the_checkout(tmp_path):
    """`--config=demo` from another directory reaches the demo (stopped at its first
    config check by an impossible mesh)."""
    proc = subprocess.run([sys.executable, "-m", "dsrl_jax.main", "--config=demo", "--config.mesh.fsdp=3",
                           f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: config.mesh"), proc.stderr[-3000:]
