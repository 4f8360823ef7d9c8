"""Qwen2 model configuration: Hugging Face `config.json` in and out, and named presets.

`Qwen2Config` is a frozen dataclass, so it is hashable and can be a static argument of
`jax.jit`. It holds the fields that change the math (sizes, rope, norm eps, tied head)
plus execution options that do not change the result beyond numerics (dtypes, scan over
layers, rematerialisation, attention implementation).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLS = ("auto", "plain", "blockwise")


@dataclasses.dataclass(frozen=True)
class Qwen2Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # default hidden_size // num_heads
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    # Execution options (not part of the HF config's math).
    dtype: str = "float32"  # activations / matmul inputs
    param_dtype: str = "float32"  # stored parameters (fp32 master weights)
    scan_layers: bool = True  # lax.scan over the stacked layers (fast compiles)
    remat: str = "none"  # none | full | dots  (activation rematerialisation per layer)
    attention_impl: str = "auto"  # auto | plain | blockwise
    attention_block_size: int = 512  # query/key block for the blockwise path

    def __post_init__(self):
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError("hidden_size must divide by num_heads when head_dim is not given")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")

    @property
    def dim_per_head(self) -> int:
        return self.head_dim

    def replace(self, **changes: Any) -> "Qwen2Config":
        return dataclasses.replace(self, **changes)

    # ---- Hugging Face config.json ------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any], **options: Any) -> "Qwen2Config":
        """Builds a config from a HF Qwen2 `config.json` dict (transformers 4.x or 5.x)."""
        model_type = hf.get("model_type", "qwen2")
        if model_type != "qwen2":
            raise ValueError(f"not a Qwen2 config: model_type={model_type!r}")
        if hf.get("use_sliding_window"):
            raise ValueError("sliding-window attention is not supported (use_sliding_window=true)")
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
        if rope_type != "default":
            raise ValueError(f"rope type {rope_type!r} is not supported (only 'default')")
        eos = hf.get("eos_token_id")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            head_dim=hf.get("head_dim"),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            **options,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, **options: Any) -> "Qwen2Config":
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                hf = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read model config {path}: {e}") from e
        return cls.from_hf(hf, **options)

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` dict that `transformers.Qwen2Config` reads back."""
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.dim_per_head,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_sliding_window": False,
            "sliding_window": None,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": self.param_dtype,
            "dtype": self.param_dtype,
        }


def _qwen(hidden, inter, layers, heads, kv, vocab, tied, theta, max_pos, bos=151643, eos=151643):
    return dict(
        hidden_size=hidden, intermediate_size=inter, num_layers=layers, num_heads=heads,
        num_kv_heads=kv, vocab_size=vocab, tie_word_embeddings=tied, rope_theta=theta,
        max_position_embeddings=max_pos, rms_norm_eps=1e-6, bos_token_id=bos, eos_token_id=eos,
    )


# Published architectures (from each model's config.json on the Hugging Face hub).
PRESETS: dict[str, dict[str, Any]] = {
    "deepseek-r1-distill-qwen-1.5b": _qwen(1536, 8960, 28, 12, 2, 151936, False, 10000.0, 131072),
    "deepseek-r1-distill-qwen-7b": _qwen(3584, 18944, 28, 28, 4, 152064, False, 10000.0, 131072),
    "deepseek-r1-distill-qwen-32b": _qwen(5120, 27648, 64, 40, 8, 152064, False, 1e6, 131072),
    "qwen2.5-0.5b": _qwen(896, 4864, 24, 14, 2, 151936, True, 1e6, 32768),
    "qwen2.5-1.5b": _qwen(1536, 8960, 28, 12, 2, 151936, True, 1e6, 32768),
    "qwen2.5-7b": _qwen(3584, 18944, 28, 28, 4, 152064, False, 1e6, 131072),
    "qwen2.5-math-1.5b": _qwen(1536, 8960, 28, 12, 2, 151936, True, 10000.0, 4096),
    # Small configs for tests, the CPU demo and benchmarks.
    "tiny": _qwen(64, 128, 2, 4, 2, 512, True, 10000.0, 2048, bos=None, eos=None),
    "tiny-untied": _qwen(64, 128, 2, 4, 2, 512, False, 10000.0, 2048, bos=None, eos=None),
    # ~10M and ~90M parameters (benchmarks); Qwen2 shapes with a smaller vocabulary.
    "small": _qwen(256, 768, 4, 4, 2, 16384, True, 10000.0, 32768, bos=None, eos=None),
    "medium": _qwen(768, 2048, 8, 12, 2, 32768, True, 10000.0, 32768, bos=None, eos=None),
}


def preset(name: str, **options: Any) -> Qwen2Config:
    """A named preset; `options` override any field (e.g. dtype, num_layers, vocab_size)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return Qwen2Config(**{**PRESETS[name], **options})


def param_count(cfg: Qwen2Config) -> int:
    """Number of parameters, computed from the shapes (no arrays are created)."""
    e, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.dim_per_head
    q, kv = cfg.num_heads * d, cfg.num_kv_heads * d
    attn = e * q + q + 2 * (e * kv + kv) + q * e
    layer = attn + 3 * e * f + 2 * e
    embed = cfg.vocab_size * e
    head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * e
    return embed + head + cfg.num_layers * layer + e
