"""The one policy/rollout path: sharded loading, the same grades everywhere, tempered log-probs."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from dsrl_jax import parallel
from dsrl_jax.policy import THINK_PREFIX, load_policy, rollout
from dsrl_jax.rewards import RewardPool
from dsrl_jax.sampling import Sampler, SampleOutput, FINISH_LENGTH, FINISH_STOP
from tests.conftest import REPO, shared_path

MESH = {"fsdp": 4, "tensor": 2}


@pytest.fixture(scope="module")
def tiny_r1(tmp_path_factory):
    """A random Qwen2 (real vocabulary, 4 heads / 2 KV heads) with the R1-Distill tokenizer."""
    from tests.hf_utils import make_hf_model

    tok_dir = shared_path("tokenizers", "deepseek-r1-distill-qwen-1.5b")
    d = tmp_path_factory.mktemp("tiny_r1")
    make_hf_model(d, vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_scale=8.0)
    for f in tok_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, d / f.name)
    return str(d)


def math_rows(n):
    path = shared_path("data", "math", "aime24.jsonl")
    return [{**json.loads(line), "domain": "math"} for line in path.read_text().splitlines()[:n]]


def test_sharded_rollout_matches_one_device(tiny_r1):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    sharded = load_policy(tiny_r1, parallel.make_mesh(MESH))
    single = load_policy(tiny_r1, parallel.make_mesh({"fsdp": 1}, jax.devices()[:1]))
    q = sharded.params["layers"]["attn"]["q_proj"]
    spec = q.sharding.spec
    assert "tensor" in jax.tree.leaves(tuple(spec)) and "fsdp" in jax.tree.leaves(tuple(spec)), spec
    assert q.addressable_shards[0].data.size == q.size // 8  # each device holds an eighth
    records = math_rows(3)
    out = {}
    with RewardPool(num_workers=0) as pool:
        for name, policy in (("sharded", sharded), ("single", single)):
            sampler = Sampler(policy.cfg, policy.mesh, policy.rules)
            opts = policy.sample_options(max_new_tokens=12, temperature=0.0, n=2)
            out[name] = rollout(policy, sampler, records, jax.random.key(0), opts, pool).wait()
    a, b = out["sharded"], out["single"]
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.texts == b.texts and a.texts[0].startswith(THINK_PREFIX)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def _cli(args, devices, tmp_path):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


SCORE_CONFIG = """
import sys
sys.path.insert(0, {repo!r})
from configs.score import get_config as base, proxy

def get_config():
    c = base()
    c.paths = {data!r}
    c.limit = 3
    small = dict(k=2, max_new_tokens=12, temperature=0.0, dtype="float32", max_prompt_len=4096)
    c.proxies = [proxy("tiny", {model!r}, **small)]
    c.output = {out!r}
    c.reward_workers = 1
    c.decontaminate.against = ""  # offline: no hub benchmarks to check against
    return c
"""


@pytest.mark.slow
def test_evaluate_and_score_clis_run_sharded_like_one_device(tiny_r1, tmp_path):
    aime = shared_path("data", "math", "aime24.jsonl")
    results = {}
    for devices, mesh in ((1, []), (8, ["--config.mesh.fsdp=4", "--config.mesh.tensor=2"])):
        work = tmp_path / f"eval{devices}"
        log = _cli(["dsrl_jax.evaluate", "--config=configs/eval.py", f"--workdir={work}", f"--config.model={tiny_r1}",
                    f"--config.benchmarks=aime={aime}", "--config.limit=3", "--config.n=2",
                    "--config.temperature=0.0", "--config.max_new_tokens=12", "--config.dtype=float32",
                    "--config.reward_workers=1", *mesh], devices, tmp_path)
        assert ("{'data': 1, 'fsdp': 4, 'tensor': 2}" if devices == 8 else "{'data': 1, 'fsdp': 1, 'tensor': 1}") in log
        rows = [json.loads(x) for x in (work / "aime" / "responses.jsonl").read_text().splitlines()]
        summary = json.loads((work / "summary.json").read_text())
        cfg = tmp_path / f"score{devices}.py"
        out = tmp_path / f"scored{devices}.jsonl"
        cfg.write_text(SCORE_CONFIG.format(repo=str(REPO), data=str(aime), model=tiny_r1, out=str(out)))
        _cli(["dsrl_jax.score", f"--config={cfg}", *mesh], devices, tmp_path)
        progress = [json.loads(x) for x in open(str(out) + ".scores.jsonl")]
        results[devices] = (sorted((r["id"], r["sample"], r["response"], r["reward"]) for r in rows), summary,
                            sorted((p["id"], p["scores"], p["truncated"]) for p in progress))
    assert results[1] == results[8]
    assert len(results[8][0]) == 6 and len(results[8][2]) == 3


def scripted_sample(completions, finish):
    """A `Sampler.sample` that returns fixed completions (row i gets completions[i % len])
    instead of sampling: the same completion then goes down every entry point's path."""
    def sample(self, params, prompts, rng, opts, on_finished=None, first_row=0):
        rows = len(prompts) * opts.n
        toks = np.zeros((rows, max(map(len, completions))), np.int32)
        lens = np.zeros(rows, np.int32)
        for i in range(rows):
            c = completions[i % len(completions)]
            toks[i, :len(c)], lens[i] = c, len(c)
        fin = np.asarray([finish[i % len(finish)] for i in range(rows)], np.int32)
        out = SampleOutput(toks, np.zeros(toks.shape, np.float32), lens, fin)
        if on_finished is not None:  # every row finishes at once, as on the static path
            on_finished(list(range(rows)), out)
        return out
    return sample


def test_same_completion_gets_the_same_reward_in_training_scoring_and_evaluation(tiny_r1, tmp_path, monkeypatch):
    from configs import base
    from configs import score as score_config
    from dsrl_jax import evaluate as ev
    from dsrl_jax import score
    from dsrl_jax.metrics import Timer
    from dsrl_jax.rl.trainer import Trainer

    policy = load_policy(tiny_r1, parallel.make_mesh({"fsdp": -1}))
    tok = policy.tokenizer
    record = {"id": "p1", "domain": "math", "problem": "What is 2 + 3?", "answer": "5"}
    # Truncated inside the reasoning, with an intermediate boxed answer; and one that closes
    # the think block and answers after it.
    truncated = tok("Try: 2+3 gives \\boxed{5}, or is it", add_special_tokens=False)["input_ids"]
    finished = tok("2+3=5.\n</think>\n\nThe answer is \\boxed{5}.", add_special_tokens=False)["input_ids"]
    completions, finish = [truncated, finished + [tok.eos_token_id]], [FINISH_LENGTH, FINISH_STOP]
    monkeypatch.setattr(Sampler, "sample", scripted_sample(completions, finish))

    # evaluation
    opts = ev.default_eval_config()
    opts.update(n=2, max_new_tokens=64, batch_size=1)
    with RewardPool(num_workers=1) as pool:
        ev.evaluate_policy(policy, {"b": [record]}, opts, pool=pool, workdir=str(tmp_path / "ev"))
    rows = [json.loads(x) for x in (tmp_path / "ev" / "b" / "responses.jsonl").read_text().splitlines()]
    evaluation = [(r["response"], r["reward"], r["extracted"]) for r in rows]
    # scoring
    sc = score_config.get_config()
    sc.proxies = [score_config.proxy("tiny", tiny_r1, k=2, max_new_tokens=64, dtype="float32")]
    sc.output, sc.reward_workers = str(tmp_path / "scored.jsonl"), 1
    score.run(sc, records=[record])
    scoring = [json.loads(x) for x in open(sc.output + ".scores.jsonl")][0]["scores"]
    # training
    c = base.get_config()
    c.model.init, c.model.dtype = tiny_r1, "float32"
    c.rollout.update(batch_prompts=1, group_size=8, cache_dtype="float32")
    c.train.micro_batch_size = 8
    c.reward_workers, c.log.tensorboard, c.log.progress = 1, False, False
    c.curriculum.stages = [dict(name="s", max_response_len=64, max_prompt_len=256)]
    (tmp_path / "problem.jsonl").write_text(json.dumps(record) + "\n")
    c.data.sources = [{"path": str(tmp_path / "problem.jsonl")}]
    trainer = Trainer(c, str(tmp_path / "train"))
    try:
        groups, _ = trainer._rollout(trainer.curriculum.stage, jax.random.key(0), Timer())
    finally:
        trainer.close()
    g = groups[0]
    training = [(t, float(r), i.get("extracted")) for t, r, i in zip(g.responses, g.rewards, g.infos)]

    assert training[:2] == evaluation and training[2:4] == evaluation
    assert [x[1] for x in evaluation] == scoring == [0.0, 1.0]
    assert evaluation[0][0].startswith(THINK_PREFIX)  # truncated reasoning: no final answer
    assert evaluation[1][2] is not None  # the answer after </think> was extracted


def test_update_and_reference_logprobs_use_the_rollout_temperature():
    """At T=0.6, the update's log-probs are log_softmax(logits / 0.6) at the sampled tokens."""
    from dsrl_jax.models import qwen2
    from dsrl_jax.models.config import preset
    from dsrl_jax.rl import update

    cfg = preset("tiny", dtype="float32")
    params = qwen2.init_params(cfg, 0)
    rng = np.random.default_rng(0)
    plen, m = 8, 8
    tokens = rng.integers(1, cfg.vocab_size, (2, plen + m)).astype(np.int32)
    mask = np.ones_like(tokens, bool)
    mask[0, :3] = False
    fn = update.make_logprob_fn(cfg, plen, 4, 0.6)
    got = np.asarray(fn(params, tokens, mask))
    positions = qwen2.positions_from_mask(mask)
    logits, _ = qwen2.forward(cfg, params, tokens, positions, mask)
    lp = jax.nn.log_softmax(np.asarray(logits, np.float64)[:, plen - 1:-1] / 0.6, axis=-1)
    want = np.take_along_axis(np.asarray(lp), tokens[:, plen:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(got, want, atol=2e-5)
    untempered = np.asarray(update.make_logprob_fn(cfg, plen, 4)(params, tokens, mask))
    assert np.abs(untempered - got).max() > 1e-2  # the temperature is not a no-op


def test_one_queue_static_chunks_and_continuous_batching_grade_the_same_rows(tiny_r1):
    """The rollout's queue split into static calls of 1 prompt, or decoded in 3 slots with
    continuous batching (rows graded as they finish), gives the same rows as one call."""
    policy = load_policy(tiny_r1, parallel.make_mesh({"fsdp": 1}, jax.devices()[:1]))
    sampler = Sampler(policy.cfg, policy.mesh)
    records = math_rows(3)
    base = policy.sample_options(max_new_tokens=10, temperature=0.0, n=2)
    with RewardPool(num_workers=1) as pool:
        one = rollout(policy, sampler, records, jax.random.key(1), base, pool).wait()
        chunked = rollout(policy, sampler, records, jax.random.key(1), base, pool, rows_per_call=1).wait()
        import dataclasses

        cont = rollout(policy, sampler, records, jax.random.key(1), dataclasses.replace(base, max_in_flight=3),
                       pool).wait()
    for other in (chunked, cont):
        np.testing.assert_array_equal(other.lengths, one.lengths)
        np.testing.assert_array_equal(other.tokens[:, :10], one.tokens[:, :10])
        assert other.texts == one.texts and other.rewards.tolist() == one.rewards.tolist()
        assert [i.get("extracted") for i in other.infos] == [i.get("extracted") for i in one.infos]
