"""Hugging Face checkpoints in and out: config.json, safetensors, tokenizers.

Model paths may be local directories, hub ids or URLs (gs://...): a URL is downloaded once
into a local cache (`paths.local_copy`), since safetensors are read memory-mapped. Saving
to a URL writes a local copy and uploads it.

Loading places every tensor straight into its sharding: `jax.make_array_from_callback`
asks for each device's shard, and the callback reads just the layers that shard covers
through `safetensors.safe_open(framework="numpy")` (memory-mapped, one tensor at a time;
bf16 comes back as ml_dtypes.bfloat16). No device ever holds a full copy it does not own.
Writing uses `safetensors.numpy.save_file`, one file per size-bounded shard.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import Any, Callable

import jax
import numpy as np
import safetensors
import safetensors.numpy
from flax import traverse_util
from jax.experimental import multihost_utils

from dsrl_jax import paths
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import Qwen2Config

_WEIGHTS_INDEX = "model.safetensors.index.json"
_WEIGHTS = "model.safetensors"
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "chat_template.jinja",
)


def resolve(path_or_id: str) -> str:
    """A local directory for a local path, a URL (gs://...) or a Hugging Face hub id
    (both downloaded once)."""
    if paths.is_url(path_or_id):
        if not paths.exists(paths.join(path_or_id, "config.json")) and not paths.isdir(path_or_id):
            raise ValueError(f"model path {path_or_id!r}: no such directory")
        return paths.local_copy(path_or_id)
    if os.path.isdir(path_or_id):
        return path_or_id
    if os.path.exists(path_or_id) or path_or_id.startswith((".", "/")) or path_or_id.count("/") != 1:
        raise ValueError(f"model path {path_or_id!r} is not a directory nor a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    return snapshot_download(path_or_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"])


# ---- name mapping --------------------------------------------------------------------
# Each of our leaves: (HF tensor name, HF -> ours, ours -> HF). "{i}" marks stacked layers.


def _t(x):
    return x.T


def _mapping(cfg: Qwen2Config) -> dict[tuple[str, ...], tuple[str, Callable, Callable]]:
    h, kv, d, e = cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head, cfg.hidden_size
    ident = lambda x: x
    layer = "model.layers.{i}."
    m = {
        ("embed",): ("model.embed_tokens.weight", ident, ident),
        ("final_norm", "scale"): ("model.norm.weight", ident, ident),
        ("layers", "input_norm", "scale"): (layer + "input_layernorm.weight", ident, ident),
        ("layers", "post_attn_norm", "scale"): (layer + "post_attention_layernorm.weight", ident, ident),
        ("layers", "mlp", "gate_proj"): (layer + "mlp.gate_proj.weight", _t, _t),
        ("layers", "mlp", "up_proj"): (layer + "mlp.up_proj.weight", _t, _t),
        ("layers", "mlp", "down_proj"): (layer + "mlp.down_proj.weight", _t, _t),
        ("layers", "attn", "o_proj"): (
            layer + "self_attn.o_proj.weight", lambda x: x.T.reshape(h, d, e), lambda x: x.reshape(h * d, e).T),
    }
    for name, heads in (("q", h), ("k", kv), ("v", kv)):
        m[("layers", "attn", f"{name}_proj")] = (
            layer + f"self_attn.{name}_proj.weight",
            lambda x, n=heads: x.T.reshape(e, n, d), lambda x, n=heads: x.reshape(e, n * d).T)
        m[("layers", "attn", f"{name}_bias")] = (
            layer + f"self_attn.{name}_proj.bias",
            lambda x, n=heads: x.reshape(n, d), lambda x, n=heads: x.reshape(n * d))
    if not cfg.tie_word_embeddings:
        m[("lm_head",)] = ("lm_head.weight", _t, _t)
    return m


# ---- loading ---------------------------------------------------------------------------


def _open(path: str):
    try:
        return safetensors.safe_open(path, framework="numpy")
    except (OSError, safetensors.SafetensorError) as e:
        raise ValueError(f"cannot read safetensors file {path}: {e}") from e


class _Tensors:
    """Name -> tensor over one or several safetensors files of a checkpoint directory."""

    def __init__(self, directory: str):
        index_path = os.path.join(directory, _WEIGHTS_INDEX)
        if os.path.exists(index_path):
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            files = {fn: _open(os.path.join(directory, fn)) for fn in set(weight_map.values())}
            self._where = {name: files[fn] for name, fn in weight_map.items()}
        elif os.path.exists(os.path.join(directory, _WEIGHTS)):
            f = _open(os.path.join(directory, _WEIGHTS))
            self._where = {name: f for name in f.keys()}
        else:
            raise ValueError(f"no {_WEIGHTS} or {_WEIGHTS_INDEX} in {directory}")

    def get(self, name: str) -> np.ndarray:
        if name not in self._where:
            raise ValueError(f"checkpoint has no tensor {name!r}")
        return self._where[name].get_tensor(name)


def load_params(path_or_id: str, cfg: Qwen2Config | None = None, shardings: Any = None) -> tuple[Qwen2Config, dict]:
    """(config, params) from a HF checkpoint. `shardings`, a tree like the params of
    `jax.sharding.Sharding`, places each array; default: the first device."""
    directory = resolve(path_or_id)
    cfg = cfg or Qwen2Config.from_file(directory)
    tensors = _Tensors(directory)
    abstract = traverse_util.flatten_dict(qwen2.abstract_params(cfg))
    shard_map = traverse_util.flatten_dict(shardings) if shardings is not None else {}
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    out = {}
    for path, (name, to_ours, _) in _mapping(cfg).items():
        spec = abstract[path]
        dtype = spec.dtype

        @functools.lru_cache(maxsize=None)
        def layer(i: int | None, name=name, to_ours=to_ours, dtype=dtype) -> np.ndarray:
            arr = to_ours(tensors.get(name if i is None else name.format(i=i)))
            return np.asarray(arr, dtype=dtype)

        def fetch(index, path=path, layer=layer, shape=spec.shape):
            if path[0] != "layers":
                return layer(None)[index]
            rows = range(shape[0])[index[0]]
            return np.stack([layer(i)[index[1:]] for i in rows])

        expected = spec.shape[1:] if path[0] == "layers" else spec.shape
        got = layer(0 if path[0] == "layers" else None).shape
        if tuple(got) != tuple(expected):
            raise ValueError(f"tensor {name}: shape {got} after conversion, model expects {expected}")
        out[path] = jax.make_array_from_callback(spec.shape, shard_map.get(path, default), fetch)
        layer.cache_clear()
    return cfg, traverse_util.unflatten_dict(out)


# ---- export ----------------------------------------------------------------------------


def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_params(out_dir: str, cfg: Qwen2Config, params: dict, *, tokenizer_dir: str | None = None,
                generation_config: dict | None = None, dtype: str | None = None,
                max_shard_bytes: int = 2 * 2**30) -> None:
    """Writes a HF checkpoint directory that `AutoModelForCausalLM.from_pretrained` loads:
    config.json, safetensors (sharded by size, with an index when more than one file),
    generation_config.json and, when `tokenizer_dir` is given, its tokenizer files.
    `out_dir` may be a URL. In multi-host runs every process must call this; process 0 writes."""
    dtype = np.dtype(dtype or cfg.param_dtype) if dtype != "bfloat16" else np.dtype(jax.numpy.bfloat16)
    flat = traverse_util.flatten_dict(params)
    tensors: dict[str, np.ndarray] = {}
    for path, (name, _, to_hf) in _mapping(cfg).items():
        host = _to_host(flat[path]).astype(dtype)
        if path[0] == "layers":
            for i in range(cfg.num_layers):
                tensors[name.format(i=i)] = np.ascontiguousarray(to_hf(host[i]))
        else:
            tensors[name] = np.ascontiguousarray(to_hf(host))  # save_file writes raw buffers
    if jax.process_index() != 0:
        return
    with paths.staged(out_dir, download=False) as local:
        _write_hf_dir(local, cfg, tensors, dtype, tokenizer_dir, generation_config, max_shard_bytes)


def _save(tensors: dict[str, np.ndarray], path: str) -> None:
    """One safetensors file, written whole or not at all (a temporary file, then rename)."""
    safetensors.numpy.save_file(tensors, path + ".tmp", metadata={"format": "pt"})
    os.replace(path + ".tmp", path)


def _write_hf_dir(out_dir, cfg, tensors, dtype, tokenizer_dir, generation_config, max_shard_bytes) -> None:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        if shards[-1] and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    if len(shards) == 1:
        _save(shards[0], os.path.join(out_dir, _WEIGHTS))
    else:
        weight_map = {}
        for k, shard in enumerate(shards):
            fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            _save(shard, os.path.join(out_dir, fn))
            weight_map.update({name: fn for name in shard})
        total = sum(a.nbytes for a in tensors.values())
        with open(os.path.join(out_dir, _WEIGHTS_INDEX), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    hf_cfg = cfg.to_hf()
    hf_cfg["torch_dtype"] = hf_cfg["dtype"] = str(dtype) if dtype != np.dtype(jax.numpy.bfloat16) else "bfloat16"
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_cfg, f, indent=2)
    gen = generation_config
    tokenizer_dir = paths.local_copy(tokenizer_dir) if tokenizer_dir else None
    if gen is None and tokenizer_dir and os.path.exists(os.path.join(tokenizer_dir, "generation_config.json")):
        with open(os.path.join(tokenizer_dir, "generation_config.json"), encoding="utf-8") as f:
            gen = json.load(f)
    gen = gen or {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump(gen, f, indent=2)
    if tokenizer_dir:
        for fn in _TOKENIZER_FILES:
            src = os.path.join(tokenizer_dir, fn)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(out_dir, fn))


# ---- tokenizers ------------------------------------------------------------------------


def load_tokenizer(path_or_id: str):
    """`transformers.AutoTokenizer` from a local directory or hub id, with its chat template."""
    from transformers import AutoTokenizer

    directory = resolve(path_or_id)
    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a tokenizer from {path_or_id}: {e}") from e


def stop_token_ids(tokenizer, model_dir: str | None = None) -> list[int]:
    """Stop tokens: generation_config.json's eos_token_id(s) when present, else the
    tokenizer's EOS."""
    ids: list[int] = []
    path = os.path.join(model_dir, "generation_config.json") if model_dir else None
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            eos = json.load(f).get("eos_token_id")
        ids = list(eos) if isinstance(eos, list) else ([eos] if eos is not None else [])
    if tokenizer is not None and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of `messages` under the model's chat template, ending with the generation
    prompt (for R1-Distill models: `<｜Assistant｜><think>\\n`)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
