"""What the two decode paths share: the static path (dsrl_jax.sampling) and continuous
batching (dsrl_jax.continuous). The call's options and output, the bucket sizes of lengths
and batches, and how a decode loop takes the parameters.

Users import these names from dsrl_jax.sampling, the sampler's public face; this module is
the layer below both paths, so continuous.py needs nothing from sampling.py and
sampling.py imports continuous.py at the top.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from dsrl_jax import parallel
from dsrl_jax.models import qwen2
from dsrl_jax.models.config import Qwen2Config

FINISH_STOP, FINISH_LENGTH = 0, 1
FINISH_REASONS = ("stop", "length")


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k truncation
    greedy: bool = False
    n: int = 1  # samples per prompt, sharing one prefill
    stop_token_ids: tuple[int, ...] = ()
    cache_dtype: str = "bfloat16"
    pad_token_id: int = 0
    # Continuous batching (None: every row at once, the static path).
    max_in_flight: int | None = None  # decoding slots
    kv_cache_tokens: int | None = None  # KV pool size in tokens (None: every slot's whole row)
    page_size: int = 64  # tokens per KV page
    steps_per_call: int = 32  # decode steps between host rounds (refills, finished rows)
    prefill_rows: int = 8  # rows per data-parallel shard per prefill call (a round admits until the slots are full)

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be >= 1")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1 (or None), got {self.max_in_flight}")
        if self.page_size < 1 or self.steps_per_call < 1 or self.prefill_rows < 1:
            raise ValueError("page_size, steps_per_call and prefill_rows must be >= 1")

    def static(self) -> tuple:
        """The options that shape the compiled program (temperature/top_p/max_new are traced)."""
        return (self.n, self.greedy, int(self.top_k), (not self.greedy) and self.top_p < 1.0,
                tuple(sorted(set(self.stop_token_ids))), self.cache_dtype, self.pad_token_id)


@dataclasses.dataclass
class SampleOutput:
    """Per sample (row = prompt_index * n + sample_index), as numpy arrays."""

    tokens: np.ndarray  # int32 [N, max_new_tokens], pad after the end
    logprobs: np.ndarray  # float32 [N, max_new_tokens], 0 after the end
    lengths: np.ndarray  # int32 [N], completion tokens including the stop token
    finish_reason: np.ndarray  # int32 [N], FINISH_STOP or FINISH_LENGTH

    def completion(self, i: int) -> list[int]:
        return self.tokens[i, : self.lengths[i]].tolist()


LINEAR_ABOVE = 4096  # past this, buckets grow by LINEAR_STEP instead of doubling
LINEAR_STEP = 1024


def bucket(n: int, minimum: int = 16, cap: int | None = None) -> int:
    """The bucket of a length or batch size n: the smallest power of two >= n (and >=
    minimum) up to 4096, above that the smallest multiple of 1024 (24,576 stays 24,576,
    not 32,768). `cap` (a stage's limit, >= n): never more than cap."""
    size = minimum
    while size < n and size < LINEAR_ABOVE:
        size *= 2
    if size < n:
        size = -(-n // LINEAR_STEP) * LINEAR_STEP
    if cap is not None and n <= cap < size:
        size = cap
    return size


def gathers_weights(params, mesh, rules=None) -> bool:
    """Whether decoding `params` (arrays or ShapeDtypeStructs) all-gathers layer weights:
    some layer weight is sharded over a data axis (FSDP; not Sampler.prepare's layout).
    Decode programs then gather one layer at a time (qwen2.forward's gather_per_layer)."""
    batch = dict(parallel.DEFAULT_RULES if rules is None else rules).get("batch")
    data_axes = {a for a in ((batch,) if isinstance(batch, str) else tuple(batch or ())) if mesh.shape.get(a, 1) > 1}
    for x in jax.tree.leaves(params["layers"]):
        spec = getattr(getattr(x, "sharding", None), "spec", None) or ()
        if any(a in data_axes for e in spec for a in ((e,) if isinstance(e, str) else tuple(e or ()))):
            return True
    return False


def loop_params(cfg: Qwen2Config, params, mesh):
    """Parameters as a decode loop takes them: layers sliced out of the stack once (slicing
    inside the loop copies every layer's weights each step), and the LM head gathered once
    (left sharded, XLA gathers it outside each loop and holds one full copy per loop)."""
    params = qwen2.unstack_layers(params)
    head_name = "embed" if cfg.tie_word_embeddings else "lm_head"
    params[head_name] = jax.lax.with_sharding_constraint(params[head_name], parallel.replicated(mesh))
    return params
