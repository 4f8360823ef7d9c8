"""Benchmark evaluation end to end on a random tiny checkpoint: files, counts, resume."""
import importlib.util
import json
import shutil

import numpy as np
import pytest

from dsrl_jax import evaluate as ev
from dsrl_jax.data.prompts import format_prompt
from dsrl_jax.policy import load_policy
from dsrl_jax.sampling import Sampler
from tests.conftest import REPO, shared_path
from tests.hf_utils import make_hf_model


def eval_config(**overrides):
    spec = importlib.util.spec_from_file_location("eval_config", REPO / "configs" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(dict(n=2, max_new_tokens=8, batch_size=2, reward_workers=0, dtype="float32"))
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random Qwen2 with the real vocabulary and the R1-Distill tokenizer files."""
    tok_dir = shared_path("tokenizers", "deepseek-r1-distill-qwen-1.5b")
    model_dir = tmp_path_factory.mktemp("tiny_model")
    make_hf_model(model_dir, vocab_size=151936, hidden_size=32, intermediate_size=64,
                  num_attention_heads=4, num_key_value_heads=2)
    for f in tok_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, model_dir / f.name)
    return str(model_dir)


class CountingSampler(Sampler):
    """Counts prompts sent for sampling, to see what a resumed run regenerates."""

    def __init__(self, cfg, mesh):
        super().__init__(cfg, mesh)
        self.prompts = 0

    def sample(self, params, prompts, rng, opts, **kwargs):
        self.prompts += len(prompts)
        return super().sample(params, prompts, rng, opts, **kwargs)


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_run_writes_documented_files_and_counts(tiny_model, tmp_path):
    aime = shared_path("data", "math", "aime24.jsonl")
    lcb = shared_path("data", "code", "lcb_2408_2501_public.json")
    config = eval_config(model=tiny_model, benchmarks=f"aime={aime},lcb={lcb}", limit=3,
                         n_per_benchmark="lcb=2", batch_size=3)  # one compile per benchmark
    summary = ev.run(config, str(tmp_path))

    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == summary
    assert summary["aime"]["n_problems"] == 3 and summary["aime"]["n_samples"] == 6
    assert summary["lcb"]["n_problems"] == 3 and summary["lcb"]["n_samples"] == 6
    assert {"pass@1", "pass@2", "maj@2", "mean_reward"} <= set(summary["aime"])
    assert "maj@2" not in summary["lcb"]  # no majority vote for code
    rows = read_lines(tmp_path / "aime" / "responses.jsonl")
    assert len(rows) == 6
    expected_ids = [json.loads(line)["id"] for line in aime.read_text(encoding="utf-8").splitlines()[:3]]
    assert sorted({r["id"] for r in rows}) == sorted(expected_ids)
    for r in rows:
        assert set(r) >= {"id", "sample", "response", "extracted", "reward", "length", "finish_reason"}
        assert 1 <= r["length"] <= 8 and r["finish_reason"] in ("stop", "length")
        assert r["reward"] == 0.0  # a random model does not solve AIME
    assert summary["aime"]["pass@1"] == 0.0
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "| aime | 3 | 6 |" in table and "| lcb | 3 | 6 |" in table


def test_limit_and_per_domain_default_n(tiny_model, tmp_path):
    lcb = shared_path("data", "code", "lcb_2408_2501_public.json")
    config = eval_config(model=tiny_model, benchmarks=f"lcb={lcb}", limit=1, n=0, max_new_tokens=4)
    summary = ev.run(config, str(tmp_path))
    assert summary["lcb"]["n_samples"] == 4  # the paper's 4 samples for LiveCodeBench


def test_resume_regenerates_only_missing_problem(tiny_model, tmp_path):
    aime = shared_path("data", "math", "aime24.jsonl")
    policy = load_policy(tiny_model)
    opts = eval_config(limit=3, batch_size=1)
    benchmarks = {"aime": ev.load_benchmark("aime", str(aime), opts)}
    sampler = CountingSampler(policy.cfg, policy.mesh)
    first = ev.evaluate_policy(policy, benchmarks, opts, sampler=sampler, workdir=str(tmp_path))
    assert sampler.prompts == 3
    path = tmp_path / "aime" / "responses.jsonl"
    original = path.read_text(encoding="utf-8").splitlines()
    last_id = json.loads(original[-1])["id"]
    kept = [line for line in original if json.loads(line)["id"] != last_id]
    assert len(kept) == 4
    path.write_text("\n".join(kept) + "\n" + original[-1][:25])  # killed mid-write

    sampler.prompts = 0
    second = ev.evaluate_policy(policy, benchmarks, opts, sampler=sampler, workdir=str(tmp_path))
    assert sampler.prompts == 1  # only the problem whose samples were lost
    rows = read_lines(path)
    assert len(rows) == 6
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted(
        (json.loads(line)["id"], json.loads(line)["sample"]) for line in original)
    # Problem seeds do not depend on what else is in the batch: the file is as before.
    assert sorted(path.read_text(encoding="utf-8").splitlines()) == sorted(original)
    assert second == first

    sampler.prompts = 0
    ev.evaluate_policy(policy, benchmarks, opts, sampler=sampler, workdir=str(tmp_path))
    assert sampler.prompts == 0  # complete: nothing to do

    with pytest.raises(ValueError, match="new workdir"):  # different settings must not mix
        ev.evaluate_policy(policy, benchmarks, eval_config(limit=3, temperature=1.0),
                           sampler=sampler, workdir=str(tmp_path))


def test_prompts_use_chat_template_and_domain_instruction(r1_tokenizer_dir):
    from dsrl_jax.models import hf

    tok = hf.load_tokenizer(str(r1_tokenizer_dir))
    math = {"id": "m", "domain": "math", "problem": "What is 1+1?", "answer": "2"}
    text = tok.decode(format_prompt(math, tok))
    assert "What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}." in text
    assert text.startswith("<｜begin▁of▁sentence｜>") and text.endswith("<｜Assistant｜><think>\n")
    code = {"id": "c", "domain": "code", "problem": "Add.", "starter_code": "class Solution:\n    def add(self, a, b):",
            "tests": [{"testtype": "functional", "input": "1\n2", "output": "3"}]}
    text = tok.decode(format_prompt(code, tok))
    assert "```python\nclass Solution:\n    def add(self, a, b):\n```" in text and "```python" in text


def test_benchmark_spec_parsing_and_offline_errors(tmp_path):
    assert ev.parse_benchmarks("aime24, mine=/x/y.jsonl") == [("aime24", None), ("mine", "/x/y.jsonl")]
    with pytest.raises(ValueError, match="unknown benchmark 'aime23'"):
        ev.parse_benchmarks("aime23")
    with pytest.raises(ValueError, match="twice"):
        ev.parse_benchmarks("aime24,aime24")
    with pytest.raises(ValueError, match="no benchmarks"):
        ev.parse_benchmarks(" , ")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        ev.load_benchmark("mine", str(tmp_path / "nope.jsonl"), ev.default_eval_config())
    with pytest.raises(RuntimeError, match="aime24=/path/to/aime24.jsonl"):  # HF_HUB_OFFLINE=1 in tests
        ev.load_benchmark("aime24", None, ev.default_eval_config())


def test_read_complete_drops_partial_problems_and_corrupt_lines(tmp_path):
    path = tmp_path / "responses.jsonl"
    good = [{"id": "a", "sample": 1}, {"id": "a", "sample": 0}, {"id": "b", "sample": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"id": "b", "sam')
    done = ev.read_complete(str(path), n=2)
    assert list(done) == ["a"] and [r["sample"] for r in done["a"]] == [0, 1]
    assert [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] == ["a", "a"]
    # A complete last line cut before its newline must not swallow the next append.
    path.write_text(json.dumps(good[0]) + "\n" + json.dumps(good[1]))
    assert list(ev.read_complete(str(path), n=2)) == ["a"] and path.read_text(encoding="utf-8").endswith("\n")


def test_load_policy_from_training_workdir(tmp_path, r1_tokenizer_dir):
    """The trainer's layout: model_config.json, tokenizer/, checkpoints/<step>/ (orbax)."""
    import jax

    from dsrl_jax.checkpoint import Checkpointer
    from dsrl_jax.models import qwen2
    from dsrl_jax.models.config import preset

    cfg = preset("tiny")
    params = qwen2.init_params(cfg, jax.random.PRNGKey(0))
    (tmp_path / "model_config.json").write_text(json.dumps(cfg.to_hf()))
    shutil.copytree(r1_tokenizer_dir, tmp_path / "tokenizer")
    with Checkpointer(str(tmp_path / "checkpoints"), async_save=False) as ckpt:
        for step, scale in ((10, 1.0), (20, 2.0)):
            state = {"params": jax.tree.map(lambda x: x * scale, params),
                     "opt_state": {"mu": jax.tree.map(lambda x: x * 0, params)}, "step": np.int32(step)}
            ckpt.save(step, state, {"data": step})

    got = load_policy(str(tmp_path))
    assert got.cfg.hidden_size == cfg.hidden_size and got.tokenizer.eos_token_id == 151643
    np.testing.assert_allclose(got.params["embed"], params["embed"] * 2.0)  # latest step
    older = load_policy(str(tmp_path / "checkpoints" / "10")).params
    np.testing.assert_allclose(older["embed"], params["embed"])
    assert jax.tree.structure(older) == jax.tree.structure(params)
    np.testing.assert_allclose(load_policy(f"{tmp_path}@10").params["embed"], params["embed"])


def test_named_benchmarks_resolve_to_hub_sources():
    opts = ev.default_eval_config()
    assert ev.benchmark_source("math500", None, opts)["hub"] == "HuggingFaceH4/MATH-500"
    lcb = ev.benchmark_source("livecodebench", None, opts)
    assert lcb["hub"] == "livecodebench/code_generation_lite"
    assert lcb["files"] == ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl"]
    assert lcb["filters"] == {"date_from": "2024-08-01", "date_to": "2025-01-31"}
    assert ev.benchmark_source("livecodebench", "/x.json", opts) == {"path": "/x.json", "name": "livecodebench"}
    opts.n_per_benchmark = "livecodebench=8"
    assert ev.samples_for("livecodebench", [{"domain": "code"}], opts) == 8
    assert ev.samples_for("aime24", [{"domain": "math"}], opts) == 16
