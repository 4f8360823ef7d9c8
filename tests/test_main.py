"""Config validation: bad configs fail before anything compiles, naming the field to fix.

`validate_config` directly on a table of broken configs, and the real CLI
(`python -m dsrl_jax.main --config=<file>`) on variant config files that import
configs/base.py: non-zero exit within ten seconds, the field's name on stderr.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from configs import base
from dsrl_jax.validate import ConfigError, validate_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text('{"problem": "1+1", "answer": "2"}\n')
    return str(path)


def valid_config(data_file):
    c = base.get_config()
    c.data.sources = [{"path": data_file}]
    c.model.init = "preset:tiny"
    return c


def _set(c, dotted, value):
    *parents, last = dotted.split(".")
    for p in parents:
        c = c[p]
    c[last] = value


# (overrides, field named in the error). Base: 128 prompts x 16 samples, micro-batch 16.
CASES = [
    ({"mesh": {"data": 1, "fsdp": 3, "tensor": 1}}, "config.mesh"),
    ({"mesh": {"data": -1, "fsdp": -1, "tensor": 1}}, "config.mesh"),
    ({"sharding_rules.vocab": "model"}, "config.sharding_rules"),
    ({"rollout.batch_prompts": 0}, "config.rollout.batch_prompts"),
    ({"train.mini_batch_size": 100}, "config.train.mini_batch_size"),
    ({"train.micro_batch_size": 24}, "config.train.micro_batch_size"),  # does not divide 2048
    ({"train.micro_batch_size": 4}, "config.train.micro_batch_size"),  # 4 sequences over 8 devices
    ({"rollout.batch_prompts": 3, "rollout.group_size": 2, "train.micro_batch_size": 6},
     "config.train.micro_batch_size"),  # batch of 6 not divisible by the mesh of 8
    ({"train.epochs_per_batch": 0}, "config.train.epochs_per_batch"),
    ({"rewards": {"math": [{"name": "no_such_reward"}]}}, "config.rewards"),
    ({"loss.kl_estimator": "k9"}, "config.loss"),
    ({"loss.loss_agg": "median"}, "config.loss"),
    ({"curriculum.stages": [{"name": "s", "no_such_field": 1}]}, "config.curriculum.stages"),
    ({"curriculum.stages": [{"name": "s", "loss": {"kl_coeff": 0.0}}]}, "config.curriculum.stages[0].loss.kl_coeff"),
    ({"curriculum.stages": [{"name": "s", "sampling": {"temp": 0.5}}]},
     "config.curriculum.stages[0].sampling.temp"),
    ({"model.init": "preset:no_such_preset"}, "config.model.init"),
    ({"model.init": "/no/such/model/dir"}, "config.model.init"),
    ({"data.sources": []}, "config.data.sources"),
    ({"data.sources": [{"path": "/no/such/file.jsonl"}]}, "config.data.sources[0].path"),
    ({"data.sources": [{"split": "train"}]}, "config.data.sources[0]"),
    ({"checkpoint.every": 0}, "config.checkpoint.every"),
]


@pytest.mark.parametrize("overrides,field", CASES, ids=[f for _, f in CASES])
def test_validate_config_names_the_field(data_file, overrides, field):
    c = valid_config(data_file)
    for k, v in overrides.items():
        _set(c, k, v)
    with pytest.raises(ConfigError) as e:
        validate_config(c, num_devices=8)
    assert str(e.value).startswith(field + ":") or str(e.value).startswith(field + "."), str(e.value)


def test_valid_config_passes(data_file):
    validate_config(valid_config(data_file), num_devices=8)
    validate_config(valid_config(data_file), num_devices=1)
    c = valid_config(data_file)
    c.data.sources = [{"path": "/no/such/file.jsonl"}]
    validate_config(c, check_files=False, num_devices=8)  # records given by the caller


# ------------------------------------------------------------------ the CLI
CONFIG_FILE = textwrap.dedent("""
    from configs import base

    def get_config():
        c = base.get_config()
        c.data.sources = [{{"path": {data!r}}}]
        c.reward_workers = 1
    {body}
        return c
""")

CLI_CASES = {
    "batch_not_divisible": ("    c.mesh.fsdp = 8\n    c.rollout.batch_prompts = 3\n    c.rollout.group_size = 4\n"
                            "    c.train.micro_batch_size = 12", "train.micro_batch_size"),
    "mesh_does_not_fit": ("    c.mesh.fsdp = 3", "config.mesh"),
    "missing_data_file": ("    c.data.sources = [{'path': '/no/such/dir/aime.jsonl'}]", "data.sources[0].path"),
    "unknown_reward": ("    c.rewards.math = [{'name': 'math_verfy', 'weight': 1.0}]", "config.rewards"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_rejects_bad_config_fast(tmp_path, data_file, case):
    body, field = CLI_CASES[case]
    config = tmp_path / f"{case}.py"
    config.write_text(CONFIG_FILE.format(data=data_file, body=body))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "dsrl_jax.main", f"--config={config}",
                           f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert field in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was started
    assert "policy " not in proc.stdout  # rejected before the model was loaded (load_policy reports it)


# ------------------------------------------------------------------ recipes and variants
def test_recipe_names_an_entry_function():
    from dsrl_jax import cli, main
    from dsrl_jax.demo import run as demo_run

    assert main.recipe("dsrl_jax.demo.run:run") is demo_run.run
    for bad, text in (("dsrl_jax.demo.run", "not 'module:function'"), ("no_such_module:run", "cannot import"),
                      ("dsrl_jax.demo.run:nope", "no function 'nope'")):
        with pytest.raises(cli.UsageError, match=text):
            main.recipe(bad)


def test_smoke_flag_selects_the_smoke_variant_without_touching_sys_path():
    from configs import demo
    from dsrl_jax import cli

    path = sys.path[:]
    argv = cli.prepare_argv(["main", "--config=configs/demo.py", "--config.smoke=True"])
    assert argv[1].endswith("demo.py:smoke") and argv[2] == "--config.smoke=True"
    assert cli.prepare_argv(["main", "--config=configs/demo.py", "--config.smoke=False"])[1].endswith("demo.py")
    assert sys.path == path
    full, smoke = demo.get_config(), demo.get_config("smoke")
    assert (full.smoke, smoke.smoke) == (False, True)
    assert smoke.demo.sft_steps < full.demo.sft_steps and smoke.rollout.batch_prompts < full.rollout.batch_prompts
    assert full.recipe == smoke.recipe == "dsrl_jax.demo.run:run"
    with pytest.raises(ValueError, match="unknown variant"):
        demo.get_config("large")
