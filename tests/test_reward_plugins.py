"""A reward from the user's own package, named in the user's own config file, used by the
trainer's reward workers: `python -m dsrl_jax.main --config=<user cfg.py>` with
`rewards.modules` naming the package (README "Rewards, sandbox and grading")."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from dsrl_jax.metrics import read_metrics
from tests.conftest import REPO, shared_path
from tests.hf_utils import make_hf_model

# The user's package: one reward, one registry line. Each call leaves a file named after the
# scoring process (its pid and its parent's) in $USER_REWARD_CALLS.
USER_REWARDS = '''
import os

from dsrl_jax.rewards import RewardResult, register


@register("quarter_unless_marker")
def quarter_unless_marker(response, record, *, marker="@@", **_):
    calls = os.environ.get("USER_REWARD_CALLS")
    if calls:
        with open(os.path.join(calls, f"{os.getpid()}-{os.getppid()}"), "a") as f:
            f.write("x")
    return RewardResult(1.0 if marker in response else 0.25, {"marker": marker in response})
'''

# The user's config file: the project's base config, a tiny model, smoke sizes, the user reward.
USER_CONFIG = '''
from configs import base


def get_config():
    c = base.get_config()
    c.total_steps = 2
    c.model.init = {model!r}
    c.model.dtype = "float32"
    c.model.remat = "none"
    c.data.sources = [{{"path": {data!r}}}]
    c.rollout.batch_prompts = 2
    c.rollout.group_size = 2
    c.rollout.cache_dtype = "float32"
    c.train.micro_batch_size = 4
    c.curriculum.stages = [dict(name="main", max_prompt_len=128, max_response_len=6)]
    c.rewards.math = [{{"name": "quarter_unless_marker", "weight": 1.0}}]
    c.rewards.modules = "user_rewards"
    c.reward_workers = 2
    c.checkpoint.every = 100
    c.checkpoint.export_hf = False
    c.log.tensorboard = False
    c.log.progress = False
    return c
'''


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """The user's package, model, problems and config in a directory of their own."""
    tok_dir = shared_path("tokenizers", "deepseek-r1-distill-qwen-1.5b")
    root = tmp_path_factory.mktemp("user")
    model = root / "model"
    make_hf_model(model, vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2)
    for f in tok_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, model / f.name)
    (root / "user_rewards").mkdir()
    (root / "user_rewards" / "__init__.py").write_text(USER_REWARDS)
    data = root / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"{i}+1", "answer": str(i + 1)}) + "\n"
                            for i in range(4)))
    (root / "cfg.py").write_text(USER_CONFIG.format(model=str(model), data=str(data)))
    return root


def _main(root, *args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]), "USER_REWARD_CALLS": str(root / "calls")}
    return subprocess.Popen([sys.executable, "-m", "dsrl_jax.main", f"--config={root / 'cfg.py'}", *args],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_user_reward_runs_in_the_trainers_reward_workers(user_run):
    (user_run / "calls").mkdir()
    workdir = user_run / "run"
    proc = _main(user_run, f"--workdir={workdir}")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    files = sorted((user_run / "calls").iterdir())
    calls = [f.name.split("-") for f in files]
    assert sum(len(f.read_text()) for f in files) >= 2 * 4, "fewer calls than rows sampled (2 steps x 4 rows)"
    assert all(int(pid) != proc.pid and int(ppid) == proc.pid for pid, ppid in calls), (proc.pid, calls)
    # Every logged reward is the user reward's: a random model never writes the marker.
    rewards = [m["reward/mean"] for m in read_metrics(str(workdir))]
    assert len(rewards) == 2 and all(r == pytest.approx(0.25) for r in rewards), rewards


def test_unknown_user_module_is_a_one_line_error(user_run):
    proc = _main(user_run, f"--workdir={user_run / 'bad'}", "--config.rewards.modules=no_such_user_rewards")
    out, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "no_such_user_rewards" in lines[0] and "Traceback" not in out + err
