"""The colab/ notebooks run headless (nbclient) against real outputs of the project's code.

The fixture root holds, made by this file run as a script in a subprocess (fresh JAX, one
CPU device, cheap XLA compiles):
    train/             a 2-stage GRPO run of dsrl_jax.rl.trainer.Trainer (metrics.jsonl with
                       stage names and periodic eval/<bench>/pass@1, checkpoints)
    evals/step_N/      dsrl_jax.evaluate.evaluate_policy of that run at two steps (summary.json)
    scored/            dsrl_jax.score.run: one tiny proxy really sampled and graded (the
                       progress log) plus the paper's four proxies' rates merged from a
                       pass_rates_file (synthetic, seeded), levelled by the paper's rules
Model, tokenizer and problems are the CPU demo's (dsrl_jax.demo): a ~0.3M-parameter Qwen2,
a character tokenizer and synthetic arithmetic, so the whole build takes about a minute.

DSRL_NOTEBOOK_FIXTURES picks the fixtures: "demo" (default: the CPU demo's smoke run,
`python -m dsrl_jax.main --config=configs/demo.py --config.smoke=True`, whose workdir holds
metrics.jsonl, scored/ and evals/<label>/summary.json; every notebook's DSRL_RUN_DIR is that
workdir), "project" (the above), or the path of a prebuilt root (a demo workdir when it holds
metrics.jsonl, else the layout above). RUN_DIRS says which directory under the root each
notebook reads.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
FIXTURES = os.environ.get("DSRL_NOTEBOOK_FIXTURES", "demo")  # project | demo | /path/to/root
# The RUN_DIR of each notebook, relative to the fixture root, per layout.
RUN_DIRS = {
    "project": {"run_curves.ipynb": "train", "difficulty_levels.ipynb": "scored", "compare_evals.ipynb": "evals"},
    # Every notebook reads the demo's workdir itself, as `python -m dsrl_jax.main` wrote it.
    "demo": {"run_curves.ipynb": ".", "difficulty_levels.ipynb": ".", "compare_evals.ipynb": "."},
}
NOTEBOOKS = sorted(RUN_DIRS["project"])
# Subprocess environment: fresh JAX on one CPU device with cheap compiles (each program runs
# a few times only; halves the build time).
FIXTURE_ENV = {"JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0 "
                            "--xla_llvm_disable_expensive_passes=true"}
CELL_TIMEOUT_S = 120


# -- building the fixture root (runs in a subprocess: `python tests/test_notebooks.py ROOT PART`) --
def make_training_run(root: str) -> None:
    """A real 2-stage GRPO run (8 steps) with periodic evals, and evals at two steps."""
    from configs import base
    from dsrl_jax.demo import CharTokenizer, demo_model_config, make_split, save_model
    from dsrl_jax.evaluate import evaluate_policy
    from dsrl_jax.models import qwen2
    from dsrl_jax.rl.trainer import Trainer

    tok = CharTokenizer()
    cfg = demo_model_config(tok.vocab_size)
    model_dir = save_model(os.path.join(root, "init_model"), cfg, qwen2.init_params(cfg, 0))
    records = make_split(24, seed=0, difficulties=(1, 2, 3))
    records_path = os.path.join(root, "train_problems.jsonl")
    with open(records_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    eval_records = make_split(6, seed=5, difficulties=(1, 3), prefix="ev")
    eval_path = os.path.join(root, "eval_problems.jsonl")
    with open(eval_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in eval_records)

    c = base.get_config()
    c.total_steps = 8
    c.model.update(init=model_dir, dtype="float32", remat="none", attention_impl="plain")
    c.data.sources = [{"path": records_path}]
    c.mesh.fsdp = 1
    c.rollout.update(batch_prompts=4, group_size=4, cache_dtype="float32")
    c.train.micro_batch_size = 16
    c.loss.kl_coef = 0.0  # no reference log-prob pass: one compile less
    c.optim.lr = 1e-3
    c.reward_workers = 0  # grade in-process (no spawned workers to start)
    c.checkpoint.update(every=3, async_save=False)
    c.log.update(tensorboard=False, progress=False)
    c.eval.update(every=4, benchmarks=f"demo={eval_path}", n=2, max_new_tokens=24, prompt_mode="plain")
    c.curriculum.stages = [
        dict(name="stage1", max_response_len=16, max_prompt_len=32, end=dict(max_steps=4, plateau=None)),
        dict(name="stage2", max_response_len=24, max_prompt_len=32,
             loss=dict(mask_truncated=True, entropy_coef=0.0)),
    ]
    benchmarks = {"easy": eval_records[::2], "hard": eval_records[1::2]}

    def eval_checkpoint(trainer, step, metrics):  # what `dsrl_jax.evaluate` does per checkpoint
        if step % 4 == 0:
            evaluate_policy(trainer.policy, benchmarks, trainer.config.eval, params=trainer.state["params"],
                            sampler=trainer.sampler, pool=trainer.pool,
                            workdir=os.path.join(root, "evals", f"step_{step}"))

    trainer = Trainer(c, os.path.join(root, "train"))
    try:
        trainer.run(on_step=eval_checkpoint)
    finally:
        trainer.close()


def make_scored_dataset(root: str) -> None:
    """dsrl_jax.score.run on 40 problems: a tiny random proxy sampled for real (k=2) and the
    paper's proxies' rates from a pass_rates_file (synthetic: harder problems and smaller
    proxies solve less), levelled by the paper's rules."""
    import numpy as np

    from configs import score as score_config
    from dsrl_jax import score
    from dsrl_jax.demo import CharTokenizer, demo_model_config, make_split, save_model
    from dsrl_jax.models import qwen2

    tok = CharTokenizer()
    cfg = demo_model_config(tok.vocab_size)
    model_dir = save_model(os.path.join(root, "tiny_proxy"), cfg, qwen2.init_params(cfg, 0))
    records = make_split(40, seed=3, difficulties=(1, 2, 3, 4, 5), prefix="p")
    records_path = os.path.join(root, "problems.jsonl")
    with open(records_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    rng = np.random.default_rng(0)
    rates_path = os.path.join(root, "external_pass_rates.jsonl")
    with open(rates_path, "w", encoding="utf-8") as f:
        for r in records:
            rates = {}
            for proxy, skill in (("r1-distill-1.5b", 1.8), ("r1-distill-7b", 2.8),
                                 ("r1-distill-32b", 4.0), ("deepseek-r1", 5.0)):
                p = 1 / (1 + np.exp(r["difficulty"] - skill + rng.normal(0, 0.7)))
                rates[proxy] = rng.binomial(8, p) / 8
            f.write(json.dumps({"id": r["id"], "pass_rates": rates}) + "\n")
    c = score_config.get_config()
    c.proxies = [score_config.proxy("tiny-random", model_dir, k=2, max_new_tokens=8, batch_size=40,
                                    max_prompt_len=32, dtype="float32")]
    c.pass_rates_file = rates_path
    c.output = os.path.join(root, "scored", "problems.jsonl")
    c.sources = [{"path": records_path}]
    c.decontaminate.against = ""  # synthetic problems: no benchmark to check them against
    c.reward_workers = 0
    score.run(c)


FIXTURE_PARTS = {"train": make_training_run, "scored": make_scored_dataset}


def build_fixture_root(root: pathlib.Path, layout: str = "project") -> None:
    """The project's parts in parallel subprocesses (each compiles on its own core), or the
    CPU demo's smoke run."""
    env = {**os.environ, **FIXTURE_ENV,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if layout == "demo":
        commands = {"demo": [sys.executable, "-m", "dsrl_jax.main", "--config=configs/demo.py",
                             "--config.smoke=True", f"--workdir={root}"]}
    else:
        commands = {part: [sys.executable, __file__, str(root), part] for part in FIXTURE_PARTS}
    procs = {part: subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for part, cmd in commands.items()}
    for part, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"building fixture {part!r} failed:\n{out[-4000:]}"


# -- tests ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """{notebook: its RUN_DIR} in the fixture root (built once per session)."""
    if FIXTURES in RUN_DIRS:
        root, layout = tmp_path_factory.mktemp("notebook_fixtures"), FIXTURES
        start = time.perf_counter()
        build_fixture_root(root, layout)
        print(f"notebook fixtures ({layout}) built in {time.perf_counter() - start:.0f}s")
    else:
        root = pathlib.Path(FIXTURES)
        layout = "demo" if (root / "metrics.jsonl").exists() else "project"
    return {name: root / rel for name, rel in RUN_DIRS[layout].items()}


def executed(name: str, run_dir: pathlib.Path, workdir: pathlib.Path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("DSRL_RUN_DIR", str(run_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
    nb = nbformat.read(COLAB / name, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def figures_dir(run_dir: pathlib.Path) -> pathlib.Path:
    return (run_dir.parent if run_dir.is_file() else run_dir) / "figures"


def test_fixture_root_is_real_project_output(run_dirs):
    from dsrl_jax import analysis

    cols = analysis.load_metrics(str(run_dirs["run_curves.ipynb"]))
    assert len({s["stage"] for s in analysis.stage_spans(cols)}) >= 2, "no stage transition to draw"
    assert analysis.eval_series(cols), "no periodic eval/<bench>/pass@1 in metrics.jsonl (config.eval.every)"
    records = analysis.load_scored(str(run_dirs["difficulty_levels.ipynb"]))
    assert records and all("pass_rates" in r and "levels" in r for r in records)
    evals = run_dirs["compare_evals.ipynb"]
    assert len(analysis.load_eval_summaries(str(evals))) >= 2, f"needs >= 2 summary.json under {evals}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_draws(name, run_dirs, tmp_path, monkeypatch):
    run_dir = run_dirs[name]
    nb = executed(name, run_dir, tmp_path, monkeypatch)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs, f"{name} showed no figure"
    saved = list(figures_dir(run_dir).glob("*.png"))
    assert saved, f"{name} saved no figure under {figures_dir(run_dir)}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean_with_settings_cell(name):
    nb = nbformat.read(COLAB / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
    first = nb.cells[0].source
    assert nb.cells[0].cell_type == "code"
    assert 'RUN_DIR = os.environ.get("DSRL_RUN_DIR", RUN_DIR)' in first
    assert "import dsrl_jax" in first and "except ImportError" in first and "%pip install" in first
    # The install source is a variable the user sets, not a made-up repository URL.
    assert 'DSRL_SOURCE = os.environ.get("DSRL_SOURCE"' in first and "SET THIS" in first
    assert "placeholder" not in first and "github.com" not in first
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebooks_match_their_generator():
    sys.path.insert(0, str(COLAB))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(COLAB))
    built = make_notebooks.build()
    assert sorted(built) == sorted(p.name for p in COLAB.glob("*.ipynb")) == NOTEBOOKS
    for name, nb in built.items():
        committed = nbformat.read(COLAB / name, as_version=4)
        assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in nb.cells], (
            f"colab/{name} differs from colab/make_notebooks.py: regenerate with `python colab/make_notebooks.py`")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    root_dir, part_name = sys.argv[1], sys.argv[2]
    os.makedirs(root_dir, exist_ok=True)
    FIXTURE_PARTS[part_name](root_dir)
