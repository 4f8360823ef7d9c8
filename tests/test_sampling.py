"""The jitted KV-cache sampler: greedy parity with transformers, the sampling distribution,
log-probs, sharding and compilation counts."""
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dsrl_jax import parallel, sampling
from dsrl_jax.models import hf, qwen2
from dsrl_jax.sampling import FINISH_LENGTH, FINISH_STOP, SampleOptions, Sampler
from tests.hf_utils import make_hf_model

PROMPT_LENGTHS = (5, 12, 9, 1)


@pytest.fixture(scope="module")
def peaky(tmp_path_factory):
    """A tiny random model whose LM head is scaled so greedy decoding has no near-ties."""
    d = str(tmp_path_factory.mktemp("peaky"))
    model = make_hf_model(d, head_scale=8.0, tie_word_embeddings=False)
    cfg, params = hf.load_params(d)
    return model, cfg, params


def _prompts(vocab, lengths=PROMPT_LENGTHS, seed=0):
    rs = np.random.RandomState(seed)
    return [rs.randint(1, vocab, n).tolist() for n in lengths]


def _hf_greedy(model, prompts, max_new_tokens):
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    return out[:, width:].numpy()


def test_greedy_matches_transformers(peaky):
    model, cfg, params = peaky
    prompts = _prompts(cfg.vocab_size)
    out = Sampler(cfg).sample(params, prompts, jax.random.key(0),
                              SampleOptions(max_new_tokens=80, greedy=True, cache_dtype="float32"))
    np.testing.assert_array_equal(out.tokens, _hf_greedy(model, prompts, 80))
    assert (out.lengths == 80).all() and (out.finish_reason == FINISH_LENGTH).all()


def test_stop_tokens_end_each_sequence(peaky):
    _, cfg, params = peaky
    prompts = _prompts(cfg.vocab_size)
    sampler = Sampler(cfg)
    free = sampler.sample(params, prompts, jax.random.key(0), SampleOptions(max_new_tokens=32, greedy=True))
    stop = int(free.tokens[0, 6])  # the 7th token of the first sequence becomes a stop token
    out = sampler.sample(params, prompts, jax.random.key(0),
                         SampleOptions(max_new_tokens=32, greedy=True, stop_token_ids=(stop,), pad_token_id=0))
    for i in range(len(prompts)):
        hits = np.flatnonzero(free.tokens[i] == stop)
        if len(hits):
            n = hits[0] + 1
            assert out.lengths[i] == n and out.finish_reason[i] == FINISH_STOP
            np.testing.assert_array_equal(out.tokens[i, :n], free.tokens[i, :n])
            assert (out.tokens[i, n:] == 0).all() and (out.logprobs[i, n:] == 0).all()
        else:
            assert out.lengths[i] == 32 and out.finish_reason[i] == FINISH_LENGTH
    assert out.lengths[0] == 7


def _expected_probs(logits, temperature, top_k, top_p):
    """Reference truncation in numpy: sort, top-k, then the smallest prefix with mass >= top_p."""
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    keep = np.zeros(z.shape, bool)
    k = top_k or len(z)
    p = np.exp(z[order[:k]] - z[order[0]])
    p /= p.sum()
    before = np.cumsum(p) - p
    keep[order[:k][before < top_p]] = True
    probs = np.where(keep, np.exp(z - z.max()), 0.0)
    return probs / probs.sum()


def _chi2_threshold(df, z=3.29):  # Wilson-Hilferty upper quantile, z=3.29 -> p ~ 5e-4
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.0, 12, 1.0), (1.0, 0, 0.8), (1.3, 40, 0.9)])
def test_sampling_distribution_chi_square(temperature, top_k, top_p):
    cfg = qwen2.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                            num_kv_heads=1)
    params = qwen2.init_params(cfg, 1)
    params["embed"] = params["embed"] * 60.0  # a spread-out next-token distribution
    prompt = [3, 17, 42]
    logits, _ = qwen2.forward(cfg, params, jnp.asarray([prompt]), jnp.arange(3)[None], jnp.ones((1, 3), bool))
    expected = _expected_probs(np.asarray(logits[0, -1]), temperature, top_k, top_p)
    n = 6000
    opts = SampleOptions(max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p, n=n,
                         cache_dtype="float32")
    sampler = Sampler(cfg)
    out = sampler.sample(params, [prompt], jax.random.key(7), opts)
    counts = np.bincount(out.tokens[:, 0], minlength=cfg.vocab_size)
    assert counts[expected == 0].sum() == 0, "sampled a token outside the top-k / top-p set"
    support = expected > 0
    assert support.sum() >= 5
    exp_counts = expected[support] * n
    big = exp_counts >= 5  # pool the rare categories into one bin
    obs = np.append(counts[support][big], counts[support][~big].sum())
    exp = np.append(exp_counts[big], exp_counts[~big].sum())
    obs, exp = obs[exp > 0], exp[exp > 0]
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert chi2 < _chi2_threshold(len(obs) - 1), (chi2, len(obs))
    # Same seed, same samples; another seed, other samples.
    again = sampler.sample(params, [prompt], jax.random.key(7), opts)
    np.testing.assert_array_equal(again.tokens, out.tokens)
    other = sampler.sample(params, [prompt], jax.random.key(8), opts)
    assert (other.tokens != out.tokens).any()


def test_nucleus_threshold_keeps_the_sorted_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    probs = jax.nn.softmax(logits, axis=-1)
    kept = np.asarray(probs >= sampling.nucleus_threshold(probs, jnp.float32(0.8))[:, None])
    assert kept[0].tolist() == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    # Against the sort-based definition on rows spanning several blocks.
    rs = np.random.RandomState(0)
    z = rs.randn(6, 3 * sampling.BLOCK + 17).astype(np.float32) * np.array([0.1, 0.5, 1, 2, 4, 8], np.float32)[:, None]
    probs = jax.nn.softmax(jnp.asarray(z), axis=-1)
    for top_p in (0.3, 0.9, 0.999):
        thr = np.asarray(sampling.nucleus_threshold(probs, jnp.float32(top_p)))
        for row, t in zip(np.asarray(probs), thr):
            order = np.argsort(-row)
            before = np.cumsum(row[order]) - row[order]
            expected = np.zeros(row.shape, bool)
            expected[order[before < top_p]] = True
            np.testing.assert_array_equal(row >= t, expected)


def test_blocked_argmax_is_first_maximum():
    rs = np.random.RandomState(1)
    x = rs.randn(5, 2 * sampling.BLOCK + 3).astype(np.float32)
    x[1, [7, 200]] = 9.0  # a tie across blocks: the first wins
    x[2, [130, 131]] = 9.0  # a tie inside a block
    x[3, -1] = 9.0  # the last (padded) block
    x[4] = -np.inf
    np.testing.assert_array_equal(np.asarray(sampling.argmax(jnp.asarray(x))), np.argmax(x, axis=-1))


def test_sample_weights_follows_the_weights():
    rs = np.random.RandomState(2)
    w = rs.rand(3 * sampling.BLOCK + 5) ** 4
    w[rs.rand(w.size) < 0.3] = 0.0  # zero-weight tokens must never come out
    n = 40000
    draws = np.asarray(sampling.sample_weights(jnp.asarray(np.tile(w, (n, 1)), jnp.float32),
                                               jax.random.uniform(jax.random.key(3), (n,))))
    counts = np.bincount(draws, minlength=w.size)
    assert counts[w == 0].sum() == 0
    exp = w / w.sum() * n
    big = exp >= 5
    obs, exp = np.append(counts[big], counts[~big & (w > 0)].sum()), np.append(exp[big], exp[~big & (w > 0)].sum())
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert chi2 < _chi2_threshold(len(obs) - 1), (chi2, len(obs))
    # u at the top of [0, 1): rounding never selects the zero-weight tail.
    tail = np.zeros((1, 2 * sampling.BLOCK), np.float32)
    tail[0, :10] = 1.0
    assert int(sampling.sample_weights(jnp.asarray(tail), jnp.asarray([np.nextafter(1.0, 0, dtype=np.float32)]))[0]) == 9


def _full_forward_logprobs(cfg, params, prompt, completion, temperature):
    """log_softmax(logits / T) at each completion token, from one forward of the whole sequence."""
    seq = prompt + completion
    logits, _ = qwen2.forward(cfg, params, jnp.asarray([seq]), jnp.arange(len(seq))[None],
                              jnp.ones((1, len(seq)), bool))
    logp = jax.nn.log_softmax(np.asarray(logits[0], np.float32) / temperature, axis=-1)
    return np.asarray([logp[len(prompt) - 1 + t, seq[len(prompt) + t]] for t in range(len(completion))])


@pytest.mark.parametrize("max_in_flight", [None, 4])
def test_logprobs_are_tempered_full_forward(peaky, max_in_flight):
    """log_softmax(logits / T) at the sampled token, before top-p truncation (T = 1 greedy)."""
    _, cfg, params = peaky
    prompts = _prompts(cfg.vocab_size, (7, 3))
    n, new = 3, 20
    sampler = Sampler(cfg)
    for temperature, greedy in ((0.6, False), (1.0, True)):
        out = sampler.sample(params, prompts, jax.random.key(3), SampleOptions(
            max_new_tokens=new, temperature=temperature, greedy=greedy, top_p=0.9, n=n, cache_dtype="float32",
            max_in_flight=max_in_flight, page_size=8, steps_per_call=5))
        for row in range(len(prompts) * n):
            ref = _full_forward_logprobs(cfg, params, prompts[row // n], out.completion(row), temperature)
            np.testing.assert_allclose(out.logprobs[row, : out.lengths[row]], ref, atol=2e-4)


def test_sharded_sampler_matches_single_device(peaky):
    _, cfg, params = peaky
    prompts = _prompts(cfg.vocab_size, (5, 12, 9, 1, 3, 8, 2, 6))
    opts = SampleOptions(max_new_tokens=48, greedy=True, n=2, cache_dtype="float32")
    single = Sampler(cfg).sample(params, prompts, jax.random.key(0), opts)
    mesh = parallel.make_mesh({"fsdp": 4, "tensor": 2})
    shardings = parallel.param_shardings(qwen2.logical_axes(cfg), qwen2.abstract_params(cfg), mesh)
    sharded_params = jax.device_put(params, shardings)
    assert len(sharded_params["layers"]["mlp"]["up_proj"].sharding.device_set) == 8
    multi = Sampler(cfg, mesh).sample(sharded_params, prompts, jax.random.key(0), opts)
    np.testing.assert_array_equal(multi.tokens, single.tokens)
    np.testing.assert_allclose(multi.logprobs, single.logprobs, atol=1e-4)


def test_no_recompilation_within_a_bucket(peaky):
    _, cfg, params = peaky
    sampler = Sampler(cfg)
    base = dict(top_p=0.95, n=2)
    sampler.sample(params, _prompts(cfg.vocab_size, (5, 12, 9)), jax.random.key(0),
                   SampleOptions(max_new_tokens=40, temperature=0.6, **base))
    assert sampler.compiled_programs() == 1
    # Other prompts, batch size, lengths, temperature and max_new_tokens in the same buckets.
    sampler.sample(params, _prompts(cfg.vocab_size, (16, 2, 3, 4), seed=1), jax.random.key(1),
                   SampleOptions(max_new_tokens=64, temperature=1.0, **base))
    sampler.sample(params, _prompts(cfg.vocab_size, (7,), seed=2)[:1] * 4, jax.random.key(2),
                   SampleOptions(max_new_tokens=33, temperature=0.9, **base))
    assert sampler.compiled_programs() == 1
    sampler.sample(params, _prompts(cfg.vocab_size, (40,)), jax.random.key(0),
                   SampleOptions(max_new_tokens=40, **base))  # a new prompt bucket
    assert sampler.compiled_programs() == 2


def test_bad_prompts_and_options_fail_clearly(peaky):
    _, cfg, params = peaky
    with pytest.raises(ValueError, match="at least one token"):
        Sampler(cfg).sample(params, [[1, 2], []], jax.random.key(0), SampleOptions())
    with pytest.raises(ValueError, match="temperature"):
        SampleOptions(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SampleOptions(top_p=1.5)


@pytest.fixture(scope="module")
def model_with_tokenizer(tmp_path_factory):
    """A tiny random model with the real R1-Distill vocabulary and tokenizer files."""
    from tests.conftest import shared_path

    tok_dir = shared_path("tokenizers", "deepseek-r1-distill-qwen-1.5b")
    d = tmp_path_factory.mktemp("tok_model")
    model = make_hf_model(str(d), vocab_size=151936, hidden_size=32, intermediate_size=64, head_scale=30.0,
                          tie_word_embeddings=False)
    for f in os.listdir(tok_dir):
        if f != "config.json":
            shutil.copy(os.path.join(tok_dir, f), d / f)
    return model, d


def _run_generate(*args):
    return subprocess.run([sys.executable, "-m", "dsrl_jax.generate", *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})


def test_generate_cli_greedy_matches_transformers(model_with_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    model, d = model_with_tokenizer
    tok = AutoTokenizer.from_pretrained(d)
    lines = [
        {"id": "chat", "messages": [{"role": "user", "content": "What is 2 + 3?"}]},
        {"id": "text", "prompt": "The quick brown fox"},
        {"id": "ids", "prompt_token_ids": [151646, 9707, 11, 1879]},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = _run_generate("--model", d, "--prompts", tmp_path / "in.jsonl", "--out", tmp_path / "out.jsonl",
                        "--greedy", "--max_new_tokens", 64, "--ignore_eos", "--batch_size", 2)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["chat", "text", "ids"]
    prompts = [hf.chat_prompt_ids(tok, lines[0]["messages"]), tok("The quick brown fox", add_special_tokens=False)["input_ids"],
               lines[2]["prompt_token_ids"]]
    ref = _hf_greedy(model, prompts, 64)
    for r, expected in zip(rows, ref):
        assert r["token_ids"] == expected.tolist() and r["num_tokens"] == 64 and r["finish_reason"] == "length"
        # The response as graders see it: the chat template opened <think> in the prompt.
        prefix = "<think>\n" if r["id"] == "chat" else ""
        assert r["response"] == prefix + tok.decode(r["token_ids"], skip_special_tokens=True)


def test_generate_cli_names_a_bad_line(model_with_tokenizer, tmp_path):
    _, d = model_with_tokenizer
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "ok"}\n{"id": 2, "prompt": "a", "messages": []}\n')
    res = _run_generate("--model", d, "--prompts", tmp_path / "in.jsonl", "--out", tmp_path / "o.jsonl")
    assert res.returncode != 0 and "in.jsonl:2" in res.stderr and "exactly one of" in res.stderr


def test_buckets_past_4096_are_multiples_of_1024():
    from dsrl_jax.sampling import bucket

    assert [bucket(n) for n in (1, 17, 3000, 4096)] == [16, 32, 4096, 4096]
    assert bucket(24576) == 24576 and bucket(16385) == 17408 and bucket(4097) == 5120
    assert bucket(3000, cap=3000) == 3000 and bucket(20000, cap=24576) == 20480


def test_decode_segments_tile_the_bucket():
    for new in (16, 64, 128, 256, 1024, 5120, 24576):
        segs = sampling.segments(new)
        assert segs[0][0] == 0 and sum(size for _, size in segs) == new
        assert all(a + n == b for (a, n), (b, _) in zip(segs, segs[1:]))
        assert len(segs) <= sampling.MAX_SEGMENTS
        assert all(n >= min(new, sampling.MIN_SEGMENT) for _, n in segs)
    assert sampling.segments(256) == [(0, 64), (64, 64), (128, 64), (192, 64)]


def test_few_prompts_on_many_devices_repeat_before_prefill(peaky):
    """1 or 2 prompts x n samples on a data-parallel size of 4: only the rows divide by it."""
    _, cfg, params = peaky
    mesh = parallel.make_mesh({"fsdp": 4, "tensor": 2})
    sharded = Sampler(cfg, mesh)
    assert sharded.batch_bucket(1, 4) == 1 and sharded.batch_bucket(1, 2) == 2 and sharded.batch_bucket(3, 1) == 4
    shardings = parallel.param_shardings(qwen2.logical_axes(cfg), qwen2.abstract_params(cfg), mesh)
    opts = SampleOptions(max_new_tokens=24, greedy=True, n=4, cache_dtype="float32")
    prompts = _prompts(cfg.vocab_size, (5,))
    single = Sampler(cfg).sample(params, prompts, jax.random.key(0), opts)
    multi = sharded.sample(jax.device_put(params, shardings), prompts, jax.random.key(0), opts)
    np.testing.assert_array_equal(multi.tokens, single.tokens)
    np.testing.assert_allclose(multi.logprobs, single.logprobs, atol=1e-4)
