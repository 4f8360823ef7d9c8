"""One policy, one rollout: what training, scoring, evaluation, `generate` and the demo sample.

    policy = load_policy("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", mesh, rules, dtype="bfloat16")
    sampler = Sampler(policy.cfg, mesh, rules)
    out = rollout(policy, sampler, records, key, policy.sample_options(max_new_tokens=..., n=16), grader)
    out.wait()                        # rewards filled in; out.texts is exactly what was graded

A policy spec is resolved once into everything that decides what is sampled and graded:
the model config, parameters placed straight into their shardings on the mesh, the
tokenizer, the stop ids, the prompt function (record -> prompt ids) and the response
prefix (an R1-style template opens `<think>\\n` in the prompt; the grader must see it, so a
truncated response whose reasoning holds a `\\boxed{}` has no final answer). Specs:

    an HF checkpoint directory or hub id       (safetensors, config.json, tokenizer)
    a training workdir [@STEP]                 (model_config.json, tokenizer/, checkpoints/)
    a step directory <workdir>/checkpoints/N   (that step's orbax checkpoint)
    preset:NAME                                (random weights of a named shape; tests)

`rollout` is the only "sample -> decode -> grade" in the project. Rows are prompt i's
sample j at i * n + j. With several processes (`jax.distributed`), every process passes
the same records, the sampler runs as one SPMD program over the global mesh and its rows
come back to every host; each process then decodes and grades only its own share of the
rows (a contiguous block), and the rewards are all-gathered, so every process ends with the
whole, identical batch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from dsrl_jax import parallel, paths
from dsrl_jax.checkpoint import Checkpointer
from dsrl_jax.data.prompts import format_prompt
from dsrl_jax.models import hf, qwen2
from dsrl_jax.models.config import Qwen2Config, preset
from dsrl_jax.sampling import FINISH_LENGTH, FINISH_REASONS, SampleOptions, Sampler

THINK_PREFIX = "<think>\n"


# ---- the policy -----------------------------------------------------------------------------
def decode(tokenizer, ids: Sequence[int]) -> str:
    """Text of token ids without special tokens (a minimal tokenizer: decode(ids) only)."""
    try:
        return tokenizer.decode(list(ids), skip_special_tokens=True)
    except TypeError:
        return tokenizer.decode(list(ids))


def response_prefix_for(tokenizer, prompt_ids: Sequence[int]) -> str:
    """`<think>\\n` when the prompt ends by opening a think block (R1-Distill templates)."""
    try:
        tail = tokenizer.decode(list(prompt_ids[-3:]), skip_special_tokens=False)
    except TypeError:
        tail = tokenizer.decode(list(prompt_ids[-3:]))
    return THINK_PREFIX if tail.rstrip().endswith("<think>") else ""


@dataclasses.dataclass(frozen=True)
class Policy:
    """A resolved policy spec. `params` are the loaded weights, sharded on `mesh`; the
    trainer samples with its live parameters instead (`rollout(..., params=...)`)."""

    cfg: Qwen2Config
    params: Any
    tokenizer: Any
    stop_ids: tuple[int, ...]
    prompt_fn: Callable[[dict], list[int]]
    mesh: jax.sharding.Mesh
    rules: dict | None = None
    model_dir: str | None = None  # the HF directory it came from (export copies its files)
    spec: str = ""

    def response_prefix(self, prompt_ids: Sequence[int]) -> str:
        return response_prefix_for(self.tokenizer, prompt_ids)

    def decode(self, ids: Sequence[int]) -> str:
        return decode(self.tokenizer, ids)

    def sample_options(self, **options) -> SampleOptions:
        """SampleOptions with this policy's stop ids and pad id (any field overridable);
        temperature 0 means greedy decoding."""
        pad = getattr(self.tokenizer, "pad_token_id", None)
        options = {"stop_token_ids": self.stop_ids, "pad_token_id": int(pad or 0), **options}
        if options.get("temperature", 1.0) == 0:
            options.update(greedy=True, temperature=1.0)
        return SampleOptions(**options)

    def with_params(self, params) -> "Policy":
        return dataclasses.replace(self, params=params)


def default_stop_ids(cfg: Qwen2Config, tokenizer, model_dir: str | None = None) -> tuple[int, ...]:
    """generation_config.json's EOS ids, the tokenizer's EOS, then the model config's EOS."""
    ids = hf.stop_token_ids(tokenizer, model_dir) if hasattr(tokenizer, "eos_token_id") else []
    eos = cfg.eos_token_id
    for i in (eos if isinstance(eos, (tuple, list)) else (eos,)):
        if i is not None and i not in ids:
            ids.append(int(i))
    return tuple(int(i) for i in ids)


def train_workdir(path: str) -> tuple[str, int | None] | None:
    """(workdir, step or None) when `path` (local or a URL) is a training workdir, its
    checkpoints/ dir or a step directory in it; None otherwise."""
    path = paths.normalize(path) if paths.is_url(path) else os.path.abspath(path.rstrip("/"))
    cand = path
    for up in range(3):
        if all(paths.exists(paths.join(cand, f)) for f in ("checkpoints", "model_config.json")):
            rel = path[len(paths.join(cand, "checkpoints")) + 1:].split("/")[0] if up else ""
            return cand, int(rel) if rel.isdigit() else None
        cand = cand.rsplit("/", 1)[0]
    return None


def _split_step(spec: str) -> tuple[str, int | None]:
    """"run@120" -> ("run", 120); anything else unchanged."""
    base, sep, step = spec.rpartition("@")
    if sep and step.isdigit() and (paths.is_url(base) or os.path.isdir(base)):
        return base, int(step)
    return spec, None


def restore_params(workdir: str, cfg: Qwen2Config, shardings, step: int | None = None) -> tuple[dict, int]:
    """The params of a training checkpoint (latest, or `step`), loaded straight into
    `shardings`; the optimizer state is not read, and a running job's saves are left alone."""
    ckpt = Checkpointer(paths.join(workdir, "checkpoints"), read_only=True)
    try:
        steps = ckpt.all_steps()
        step = ckpt.latest_step() if step is None else int(step)
        if step is None or step not in steps:
            raise ValueError(f"{workdir}/checkpoints: no complete checkpoint"
                             + (f" of step {step} (have {steps})" if step is not None else ""))
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              qwen2.abstract_params(cfg), shardings)
        params = ckpt.restore_subtree(step, "params", target)
    finally:
        ckpt.close()
    return params, step


def load_policy(spec: str, mesh: jax.sharding.Mesh | None = None, rules: dict | None = None, *,
                tokenizer: Any = None, prompt_mode: str = "auto", plain_template: str = "{prompt}",
                prompt_fn: Callable[[dict], list[int]] | None = None, seed: int = 0,
                **cfg_options) -> Policy:
    """Resolves `spec` (see the module docstring) into a Policy on `mesh` (default: all
    local devices on fsdp). `tokenizer`: an object or a directory / hub id (default: the
    checkpoint's own). `cfg_options` override model-config fields (dtype, scan_layers, ...)."""
    mesh = mesh or parallel.make_mesh({"fsdp": -1})
    spec = str(spec)
    model_dir, params, cfg = None, None, None
    shardings_of = lambda c: parallel.param_shardings(qwen2.logical_axes(c), qwen2.abstract_params(c), mesh, rules)
    base, step = _split_step(spec)
    found = train_workdir(base) if paths.is_url(base) or os.path.isdir(base) else None
    if spec.startswith("preset:"):
        cfg = preset(spec.split(":", 1)[1], **cfg_options)
        params = jax.jit(lambda: qwen2.init_params(cfg, seed), out_shardings=shardings_of(cfg))()
    elif found is not None:  # our orbax training workdir
        workdir, dir_step = found
        cfg = Qwen2Config.from_hf(json.loads(paths.read_text(paths.join(workdir, "model_config.json"))), **cfg_options)
        params, _ = restore_params(workdir, cfg, shardings_of(cfg), step if step is not None else dir_step)
        if tokenizer is None and paths.exists(paths.join(workdir, "tokenizer")):
            tokenizer = paths.join(workdir, "tokenizer")
        if not paths.is_url(workdir) and os.path.exists(os.path.join(workdir, "generation_config.json")):
            model_dir = workdir  # its stop ids (a remote workdir's come from the tokenizer)
    else:  # a Hugging Face checkpoint: directory or hub id
        model_dir = hf.resolve(spec)
        cfg = Qwen2Config.from_file(model_dir, **cfg_options)
        _, params = hf.load_params(model_dir, cfg, shardings_of(cfg))
        tokenizer = model_dir if tokenizer is None else tokenizer
    if tokenizer is None:
        raise ValueError(f"policy {spec!r}: no tokenizer (pass one, e.g. model.tokenizer=DIR)")
    if isinstance(tokenizer, str):
        tokenizer = hf.load_tokenizer(tokenizer)
    if prompt_fn is None:
        prompt_fn = lambda record: format_prompt(record, tokenizer, prompt_mode, plain_template=plain_template)  # noqa: E731
    policy = Policy(cfg, params, tokenizer, default_stop_ids(cfg, tokenizer, model_dir), prompt_fn, mesh, rules,
                    model_dir, spec)
    if jax.process_index() == 0:
        print(f"policy {spec}: {describe_placement(params, mesh)}", flush=True)
    return policy


def describe_placement(params, mesh) -> str:
    """"N params on mesh {...}, X MiB per device (largest device)"."""
    leaves = jax.tree.leaves(params)
    per_device: dict = {}
    for x in leaves:
        for shard in x.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    total = sum(int(np.prod(x.shape)) for x in leaves)
    shape = {k: int(v) for k, v in mesh.shape.items()}
    return f"{total:,} params on mesh {shape}, {max(per_device.values()) / 2**20:.2f} MiB per device"


# ---- the rollout ----------------------------------------------------------------------------
@dataclasses.dataclass
class Rollout:
    """Sampled, decoded and graded rows (host numpy). Row i * n + j is sample j of prompt i.

    `texts` are the strings the grader saw: the response prefix plus the decoded completion.
    `logprobs` are the sampler's (see `sampling`), 0 after each row's end. `rewards` and
    `infos` are filled by `wait()`."""

    records: list[dict]  # one per prompt
    prompt_ids: list[list[int]]  # one per prompt
    n: int
    tokens: np.ndarray  # int32 [N, M], pad after the end
    logprobs: np.ndarray  # float32 [N, M]
    lengths: np.ndarray  # int32 [N], completion tokens including the stop token
    finish_reason: np.ndarray  # int32 [N], sampling.FINISH_STOP / FINISH_LENGTH
    texts: list[str]  # [N], as graded
    rewards: np.ndarray | None = None  # float32 [N]
    infos: list[dict] | None = None  # [N], the reward's details (extracted answer, error, ...)
    seconds: float = 0.0  # wall time of sampling
    _pending: Any = dataclasses.field(default=None, repr=False)

    @property
    def truncated(self) -> np.ndarray:
        return self.finish_reason == FINISH_LENGTH

    def record_of(self, row: int) -> dict:
        return self.records[row // self.n]

    def completion(self, row: int) -> list[int]:
        return self.tokens[row, : self.lengths[row]].tolist()

    def finish_name(self, row: int) -> str:
        return FINISH_REASONS[int(self.finish_reason[row])]

    def wait(self) -> "Rollout":
        """Blocks until every row is graded; fills `rewards` and `infos`."""
        if self._pending is not None:
            self.rewards, self.infos = self._pending()
            self._pending = None
        return self


def _process_share(rows: int) -> range:
    """This process's contiguous block of `rows`."""
    k, i = jax.process_count(), jax.process_index()
    per = -(-rows // k)
    return range(min(i * per, rows), min((i + 1) * per, rows))


def _gather_grades(results, rows: int) -> tuple[np.ndarray, list[dict]]:
    """Every process's (reward, info) of its share, in row order -> all rows on every process."""
    scores = np.asarray([r.score for r in results], np.float32)
    infos = [dict(r.info) for r in results]
    if jax.process_count() == 1:
        return scores, infos
    per = -(-rows // jax.process_count())
    payload = json.dumps(infos, default=str).encode()
    padded = np.zeros(per, np.float32)
    padded[: len(scores)] = scores
    all_scores = np.asarray(multihost_utils.process_allgather(padded)).reshape(-1)
    size = np.asarray(multihost_utils.process_allgather(np.int64(len(payload)))).reshape(-1)
    buf = np.zeros(int(size.max()), np.uint8)
    buf[: len(payload)] = np.frombuffer(payload, np.uint8)
    blobs = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(size), -1)
    all_infos = [x for b, s in zip(blobs, size) for x in json.loads(bytes(b[:s]).decode())]
    return all_scores[:rows], all_infos[:rows]


def rollout(policy: Policy, sampler: Sampler, records: Sequence[dict], key: jax.Array, opts: SampleOptions,
            grader=None, *, params=None, prompt_ids: Sequence[Sequence[int]] | None = None,
            rows_per_call: int = 0) -> Rollout:
    """Samples `opts.n` completions for each record, decodes them with the response prefix and
    submits them to `grader` (a `RewardPool`; `RewardPool(cfg, num_workers=0)` grades inline;
    None: sampling only) as they finish, so grading overlaps decoding. Returns once sampling
    is done; `Rollout.wait()` collects the rewards, so the caller can run device work
    meanwhile.

    All rows form one queue: with `opts.max_in_flight` the sampler's continuous batching
    decodes them in that many slots and hands rows over as they finish; without it,
    `rows_per_call` bounds the prompts per static sampler call (their KV caches must fit;
    0 = all at once). Row r draws from fold_in(key, r) either way, so the samples depend
    only on (key, records), not on how the queue was split. `prompt_ids` (one per record)
    skip `policy.prompt_fn`."""
    records = list(records)
    prompts = [list(p) for p in prompt_ids] if prompt_ids is not None else [policy.prompt_fn(r) for r in records]
    params = policy.params if params is None else params
    n, rows = opts.n, len(prompts) * opts.n
    prefixes = [policy.response_prefix(p) for p in prompts]
    texts: list[str] = [""] * rows
    mine = set(_process_share(rows))
    handles = []

    def finished(base):
        def on_finished(call_rows, out):  # decode and submit as rows finish
            global_rows = [base + r for r in call_rows]
            for i, row in enumerate(global_rows):
                texts[row] = prefixes[row // n] + decode(policy.tokenizer, out.tokens[i, : out.lengths[i]])
            graded = [row for row in global_rows if row in mine]
            if grader is not None and graded:
                handles.append((graded, grader.submit([texts[r] for r in graded], [records[r // n] for r in graded])))
        return on_finished

    chunk = len(prompts) if opts.max_in_flight is not None or not rows_per_call else rows_per_call
    t0 = time.perf_counter()
    outs = [sampler.sample(params, prompts[i:i + chunk], key, opts, on_finished=finished(i * n), first_row=i * n)
            for i in range(0, len(prompts), chunk)]
    seconds = time.perf_counter() - t0
    width = max(o.tokens.shape[1] for o in outs)
    cat = lambda name: np.concatenate([np.pad(getattr(o, name), ((0, 0), (0, width - getattr(o, name).shape[1])))
                                       if getattr(o, name).ndim == 2 else getattr(o, name) for o in outs])
    tokens, logprobs, lengths, finish = cat("tokens"), cat("logprobs"), cat("lengths"), cat("finish_reason")
    out = Rollout(records, prompts, n, tokens, logprobs, lengths, finish, texts, seconds=seconds)
    if grader is not None:
        def collect():
            by_row = {row: res for graded, h in handles for row, res in zip(graded, h.result())}
            return _gather_grades([by_row[row] for row in sorted(mine)], rows)
        out._pending = collect
    return out
