"""Parity of the Flax Qwen2 with transformers' PyTorch Qwen2ForCausalLM (fp32, random weights)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsrl_jax import parallel
from dsrl_jax.models import hf, qwen2
from dsrl_jax.models.config import PRESETS, Qwen2Config, param_count, preset
from tests.hf_utils import hf_logits, make_hf_model


def _batch(vocab, lengths, total, seed=0):
    """Left-padded random tokens [B, total] and mask."""
    rs = np.random.RandomState(seed)
    tokens = rs.randint(0, vocab, (len(lengths), total)).astype(np.int32)
    mask = np.zeros((len(lengths), total), bool)
    for i, n in enumerate(lengths):
        mask[i, total - n:] = True
    return tokens, mask


def _ours(cfg, params, tokens, mask):
    pos = qwen2.positions_from_mask(jnp.asarray(mask))
    logits, _ = jax.jit(qwen2.forward, static_argnums=0)(cfg, params, jnp.asarray(tokens), pos, jnp.asarray(mask))
    return np.asarray(logits)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tiny"))
    model = make_hf_model(d)
    cfg, params = hf.load_params(d)
    return model, cfg, params, d


def test_tiny_tied_left_padded_parity(tiny):
    model, cfg, params, _ = tiny
    assert cfg.tie_word_embeddings and "lm_head" not in params
    tokens, mask = _batch(cfg.vocab_size, [12, 7, 1], 12)
    ref = hf_logits(model, tokens, mask)
    ours = _ours(cfg, params, tokens, mask)
    err = max(np.abs(ours[b][mask[b]] - ref[b][mask[b]]).max() for b in range(3))
    assert err <= 1e-4, err


@pytest.mark.parametrize("option", [
    dict(scan_layers=False), dict(remat="full"), dict(remat="dots"),
    dict(attention_impl="blockwise", attention_block_size=4),
])
def test_execution_options_do_not_change_the_math(tiny, option):
    _, cfg, params, _ = tiny
    tokens, mask = _batch(cfg.vocab_size, [11, 5], 11, seed=1)
    base = _ours(cfg, params, tokens, mask)
    other = _ours(cfg.replace(**option), params, tokens, mask)
    assert np.abs(base[mask] - other[mask]).max() <= 1e-5


def test_kv_cache_decoding_equals_full_forward(tiny):
    _, cfg, params, _ = tiny
    total, prompt = 14, 5
    tokens, mask = _batch(cfg.vocab_size, [14, 10], total, seed=2)
    full = _ours(cfg, params, tokens, mask)
    # Prefill the first `prompt` slots, then feed one token at a time.
    cache = qwen2.init_cache(cfg, 2, total, dtype="float32")
    pos = np.asarray(qwen2.positions_from_mask(jnp.asarray(mask)))
    step = jax.jit(qwen2.forward, static_argnums=0)
    logits, cache = step(cfg, params, tokens[:, :prompt], pos[:, :prompt], mask, cache, 0)
    outs = [np.asarray(logits)]
    for t in range(prompt, total):
        logits, cache = step(cfg, params, tokens[:, t:t + 1], pos[:, t:t + 1], mask, cache, t)
        outs.append(np.asarray(logits))
    inc = np.concatenate(outs, axis=1)
    assert np.abs(inc[mask] - full[mask]).max() <= 1e-5


def test_chunked_cache_equals_full_forward(tiny):
    """A cache grown chunk by chunk (as the sampler's decode loop does): a prompt chunk,
    a 4-token chunk written in one call after it, then single tokens into 3-slot chunks."""
    _, cfg, params, _ = tiny
    total, prompt = 16, 5
    tokens, mask = _batch(cfg.vocab_size, [16, 11], total, seed=4)
    full = _ours(cfg, params, tokens, mask)
    pos = np.asarray(qwen2.positions_from_mask(jnp.asarray(mask)))
    step = jax.jit(qwen2.forward, static_argnums=0)
    cache = qwen2.init_cache(cfg, 2, prompt, dtype="float32")
    logits, cache = step(cfg, params, tokens[:, :prompt], pos[:, :prompt], mask[:, :prompt], cache, 0)
    outs = [np.asarray(logits)]
    cache = qwen2.add_cache_chunk(cache, 4)
    logits, cache = step(cfg, params, tokens[:, 5:9], pos[:, 5:9], mask[:, :9], cache, 5)
    outs.append(np.asarray(logits))
    for t in range(9, total):
        if t == qwen2.cache_length(cache):
            cache = qwen2.add_cache_chunk(cache, 3)
        kv_mask = np.pad(mask, ((0, 0), (0, 2)))[:, :qwen2.cache_length(cache)]  # the last chunk overhangs
        logits, cache = step(cfg, params, tokens[:, t:t + 1], pos[:, t:t + 1], kv_mask, cache, t)
        outs.append(np.asarray(logits))
    assert [c.shape[-1] for c in cache["k"][0]] == [5, 4, 3, 3, 3]
    inc = np.concatenate(outs, axis=1)
    assert np.abs(inc[mask] - full[mask]).max() <= 1e-5


def test_bf16_path_within_tolerance(tiny):
    """bf16 activations with fp32 master weights: logits within 0.05 of fp32 (absolute,
    on logits of std ~0.5) and the same argmax on >= 95% of positions."""
    model, cfg, params, _ = tiny
    tokens, mask = _batch(cfg.vocab_size, [16, 16], 16, seed=3)
    ref = hf_logits(model, tokens, mask)
    ours = _ours(cfg.replace(dtype="bfloat16"), params, tokens, mask).astype(np.float32)
    assert np.abs(ours - ref).max() <= 0.05
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


@pytest.mark.slow
def test_r1_distill_widths_from_sharded_checkpoint(tmp_path):
    """Real R1-Distill-1.5B widths (untied, vocab 151936) with 2 layers, saved as several
    safetensors shards with an index."""
    r1 = PRESETS["deepseek-r1-distill-qwen-1.5b"]
    model = make_hf_model(
        str(tmp_path), vocab_size=r1["vocab_size"], hidden_size=r1["hidden_size"],
        intermediate_size=r1["intermediate_size"], num_hidden_layers=2, num_attention_heads=r1["num_heads"],
        num_key_value_heads=r1["num_kv_heads"], tie_word_embeddings=False, max_shard_size="500MB",
    )
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 1
    cfg, params = hf.load_params(str(tmp_path))
    assert (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size) == (1536, 12, 2, 8960)
    assert not cfg.tie_word_embeddings and params["lm_head"].shape == (1536, 151936)
    tokens, mask = _batch(cfg.vocab_size, [9, 6], 9, seed=4)
    ref = hf_logits(model, tokens, mask)
    ours = _ours(cfg, params, tokens, mask)
    assert np.abs(ours[mask] - ref[mask]).max() <= 1e-4


def test_export_round_trip_loads_in_transformers(tiny, tmp_path, r1_tokenizer_dir):
    import transformers

    model, cfg, params, _ = tiny
    out = str(tmp_path / "export")
    hf.save_params(out, cfg, params, tokenizer_dir=str(r1_tokenizer_dir), max_shard_bytes=200_000)
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))  # sharded by size
    assert os.path.exists(os.path.join(out, "generation_config.json"))
    assert transformers.AutoTokenizer.from_pretrained(out).eos_token_id == 151643
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32").eval()
    tokens, mask = _batch(cfg.vocab_size, [8, 4], 8, seed=5)
    np.testing.assert_allclose(hf_logits(reloaded, tokens, mask)[mask], hf_logits(model, tokens, mask)[mask], atol=1e-5)
    # and back into ours
    cfg2, params2 = hf.load_params(out)
    assert cfg2 == cfg
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_untied_export_round_trip_bf16(tmp_path):
    import transformers

    src = str(tmp_path / "src")
    model = make_hf_model(src, tie_word_embeddings=False, seed=7)
    cfg, params = hf.load_params(src)
    out = str(tmp_path / "out")
    hf.save_params(out, cfg, params, dtype="bfloat16")
    assert json.load(open(os.path.join(out, "config.json")))["torch_dtype"] == "bfloat16"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32").eval()
    tokens, mask = _batch(cfg.vocab_size, [6], 6, seed=6)
    assert np.abs(hf_logits(reloaded, tokens, mask) - hf_logits(model, tokens, mask)).max() < 0.05


def test_sharded_forward_on_8_devices_equals_single_device(tiny):
    _, cfg, params, d = tiny
    assert jax.device_count() == 8
    mesh = parallel.make_mesh({"fsdp": 4, "tensor": 2})
    shardings = parallel.param_shardings(qwen2.logical_axes(cfg), qwen2.abstract_params(cfg), mesh)
    _, sharded = hf.load_params(d, shardings=shardings)
    # Parameters are really split across devices.
    q = sharded["layers"]["attn"]["q_proj"]  # [layers, embed, q_heads, head_dim]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (2, 16, 2, 16)
    assert sharded["embed"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    tokens, mask = _batch(cfg.vocab_size, [10, 3, 10, 7], 10, seed=8)
    single = _ours(cfg, params, tokens, mask)
    batch = parallel.batch_sharding(mesh)
    tokens_s, mask_s = jax.device_put(tokens, batch), jax.device_put(mask, batch)
    fn = jax.jit(lambda p, t, m: qwen2.forward(cfg, p, t, qwen2.positions_from_mask(m), m)[0])
    multi = np.asarray(fn(sharded, tokens_s, mask_s))
    assert np.abs(multi[mask] - single[mask]).max() <= 1e-5


PUBLISHED_SIZES = {  # parameter counts of the released checkpoints
    "deepseek-r1-distill-qwen-1.5b": 1_777_088_000,
    "deepseek-r1-distill-qwen-7b": 7_615_616_512,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-math-1.5b": 1_543_714_304,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_preset_parameter_counts(name):
    cfg = preset(name)
    assert param_count(cfg) == PUBLISHED_SIZES[name]
    # The formula agrees with the shapes the model really creates.
    sizes = jax.tree.leaves(jax.tree.map(lambda a: int(np.prod(a.shape)), qwen2.abstract_params(cfg)))
    assert sum(sizes) == PUBLISHED_SIZES[name]


def test_hf_config_round_trip(r1_tokenizer_dir):
    cfg = Qwen2Config.from_file(r1_tokenizer_dir)
    base = preset("deepseek-r1-distill-qwen-1.5b")
    assert cfg.replace(max_position_embeddings=base.max_position_embeddings) == base
    assert Qwen2Config.from_hf(cfg.to_hf()) == cfg


def test_bad_configs_and_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        Qwen2Config.from_hf({"model_type": "llama"})
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("gpt-5")
    with pytest.raises(ValueError, match="no model.safetensors"):
        hf.load_params(str(tmp_path), preset("tiny"))
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read safetensors"):
        hf.load_params(str(tmp_path), preset("tiny"))


def test_bf16_export_reads_back_as_the_rounded_params(tiny, tmp_path):
    """bf16 safetensors written and read by the safetensors library (numpy + ml_dtypes)."""
    _, cfg, params, _ = tiny
    out = str(tmp_path / "bf16")
    hf.save_params(out, cfg, params, dtype="bfloat16")
    cfg2, params2 = hf.load_params(out)
    rounded = jax.tree.map(lambda a: np.asarray(a).astype(jnp.bfloat16).astype(np.float32), params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b, np.float32)), rounded, params2)
    assert cfg2.param_dtype == cfg.param_dtype and jax.tree.leaves(params2)[0].dtype == np.dtype(cfg.param_dtype)


def test_model_sets_no_flax_global_and_needs_no_mesh_to_build():
    import flax

    assert flax.config.flax_always_shard_variable  # the library default, left as it is
    params = qwen2.init_params(preset("tiny"), 0)  # annotated with logical axes, not sharded
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(params))
