"""Continuous batching (SampleOptions.max_in_flight): the same rows as the static path,
whatever the slots, pool size and rounds; finished rows handed out as they finish; sharded."""
import dataclasses

import jax
import numpy as np
import pytest

from dsrl_jax import parallel
from dsrl_jax.models import hf, qwen2
from dsrl_jax.sampling import FINISH_LENGTH, FINISH_STOP, SampleOptions, Sampler
from tests.hf_utils import make_hf_model

LENGTHS = (5, 12, 9, 1, 30, 7, 3, 16)
SLOTS = dict(max_in_flight=3, page_size=8, steps_per_call=5)  # one layout: few programs to compile


@pytest.fixture(scope="module")
def peaky(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("peaky"))
    make_hf_model(d, head_scale=8.0, tie_word_embeddings=False)
    cfg, params = hf.load_params(d)
    return cfg, params


def _prompts(vocab, lengths=LENGTHS, seed=0):
    rs = np.random.RandomState(seed)
    return [rs.randint(1, vocab, n).tolist() for n in lengths]


def _stops(sampler, params, prompts):
    """Stop ids that end rows at many different lengths (from a free-running greedy pass)."""
    free = sampler.sample(params, prompts, jax.random.key(0), SampleOptions(max_new_tokens=48, greedy=True))
    return tuple(sorted({int(free.tokens[i, 3 + 5 * i]) for i in range(0, len(prompts), 2)}))


def _same(a, b, atol=2e-4):
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    np.testing.assert_array_equal(a.finish_reason, b.finish_reason)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=atol)


@pytest.fixture(scope="module")
def setup(peaky):
    cfg, params = peaky
    sampler = Sampler(cfg)
    prompts = _prompts(cfg.vocab_size)
    return cfg, params, sampler, prompts, _stops(sampler, params, prompts)


@pytest.mark.parametrize("greedy", [True, False])
def test_matches_the_static_path_row_by_row(setup, greedy):
    cfg, params, sampler, prompts, stops = setup
    opts = SampleOptions(max_new_tokens=48, greedy=greedy, temperature=0.8, top_p=0.9, n=2, stop_token_ids=stops,
                         cache_dtype="float32")
    static = sampler.sample(params, prompts, jax.random.key(5), opts)
    assert len(set(static.lengths.tolist())) > 3 and (static.finish_reason == FINISH_STOP).any()
    if greedy:
        assert (static.finish_reason == FINISH_LENGTH).any()
    # Fewer slots than rows, slots refilled: the same rows.
    _same(sampler.sample(params, prompts, jax.random.key(5), dataclasses.replace(opts, **SLOTS)), static)
    if not greedy:  # other rounds, and a pool too small for every slot's whole row (rows get
        # preempted and resumed): still the same rows, whatever slot each one ran in.
        small = dict(SLOTS, steps_per_call=7, kv_cache_tokens=160)
        _same(sampler.sample(params, prompts, jax.random.key(5), dataclasses.replace(opts, **small)), static)


def test_finished_rows_arrive_while_others_decode_and_refills_join(setup):
    cfg, params, sampler, prompts, stops = setup
    opts = SampleOptions(max_new_tokens=48, temperature=0.8, top_p=0.9, n=2, stop_token_ids=stops,
                         cache_dtype="float32", **SLOTS)
    seen, extra = [], _prompts(cfg.vocab_size, (4, 6), seed=3)

    def on_finished(rows, out):
        assert len(out.lengths) == len(rows)
        seen.append((list(rows), out))
        if len(seen) == 1:
            return extra  # e.g. dynamic sampling's refill prompts join the queue

    out = sampler.sample(params, prompts, jax.random.key(1), opts, on_finished=on_finished)
    n_rows = (len(prompts) + len(extra)) * 2
    assert sorted(r for rows, _ in seen for r in rows) == list(range(n_rows))
    assert len(seen) > 3  # handed out over many rounds, not once at the end
    for rows, part in seen:
        np.testing.assert_array_equal(part.tokens, out.tokens[rows])
        np.testing.assert_array_equal(part.lengths, out.lengths[rows])
    # The refill rows are numbered after the others and sample as if asked for up front.
    both = sampler.sample(params, prompts + extra, jax.random.key(1), opts)
    _same(out, both)


def test_no_recompilation_within_a_bucket(setup):
    cfg, params, _, prompts, stops = setup
    sampler = Sampler(cfg)
    opts = SampleOptions(max_new_tokens=40, temperature=0.7, n=2, stop_token_ids=stops, cache_dtype="float32",
                         **SLOTS)
    sampler.sample(params, prompts[:3], jax.random.key(0), opts)
    first = sampler.compiled_programs()
    assert first >= 2  # the decode loop and at least one prefill
    # Other prompts and rows in the same buckets, other temperature and max_new_tokens.
    sampler.sample(params, _prompts(cfg.vocab_size, (2, 11, 13, 4), seed=1), jax.random.key(1),
                   dataclasses.replace(opts, temperature=1.0, max_new_tokens=37))
    sampler.sample(params, prompts[:3], jax.random.key(2), opts)
    assert sampler.compiled_programs() == first


def test_sharded_with_prepared_weights_matches_single_device(setup):
    cfg, params, sampler, prompts, stops = setup
    opts = SampleOptions(max_new_tokens=32, temperature=0.9, n=2, stop_token_ids=stops, cache_dtype="float32",
                         max_in_flight=8, page_size=8, steps_per_call=5)
    single = sampler.sample(params, prompts, jax.random.key(4), opts)
    mesh = parallel.make_mesh({"fsdp": 4, "tensor": 2})
    shardings = parallel.param_shardings(qwen2.logical_axes(cfg), qwen2.abstract_params(cfg), mesh)
    sharded = Sampler(cfg, mesh)
    train_params = jax.device_put(params, shardings)
    prepared = sharded.prepare(train_params)
    assert len(prepared["layers"]) == cfg.num_layers  # unstacked: the programs slice nothing
    up = prepared["layers"][0]["mlp"]["up_proj"]
    assert "fsdp" not in str(up.sharding.spec) and "tensor" in str(up.sharding.spec)  # replicated over fsdp
    assert "fsdp" in str(train_params["layers"]["mlp"]["up_proj"].sharding.spec)
    _same(sharded.sample(prepared, prompts, jax.random.key(4), opts), single)
    _same(sharded.sample(train_params, prompts, jax.random.key(4), opts), single)  # FSDP: gathered per layer
    _same(sharded.sample(train_params, prompts, jax.random.key(4), dataclasses.replace(opts, max_in_flight=None)),
          single)


def test_a_pool_smaller_than_one_row_fails_clearly(setup):
    _, params, sampler, prompts, _ = setup
    with pytest.raises(ValueError, match="at least one whole row"):
        sampler.sample(params, prompts, jax.random.key(0),
                       SampleOptions(max_new_tokens=64, max_in_flight=2, kv_cache_tokens=32, page_size=8))
    with pytest.raises(ValueError, match="max_in_flight"):
        SampleOptions(max_in_flight=0)
