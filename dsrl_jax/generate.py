"""Sample completions for a JSONL file of prompts.

    python -m dsrl_jax.generate --model DIR_OR_HUB_ID --prompts IN.jsonl --out OUT.jsonl \
        [--n 4] [--max_new_tokens 1024] [--temperature 0.6 --top_p 0.95] [--greedy]

The model is loaded sharded over all local devices (`--mesh data=1,fsdp=-1,tensor=1`).
Each input line has `id` and one of `messages` (chat; the model's template is applied with
a generation prompt), `prompt` (text, tokenized without special tokens) or
`prompt_token_ids`. Each output line is one sample: id, sample, response, token_ids,
finish_reason, num_tokens (`response` starts with the `<think>\\n` an R1 template opened
in the prompt, as the graders see it).
"""

from __future__ import annotations

import json
import sys

import jax
from absl import flags
from tqdm import tqdm

from dsrl_jax import cli, parallel
from dsrl_jax.models import hf
from dsrl_jax.policy import load_policy, rollout
from dsrl_jax.sampling import Sampler

flags.DEFINE_string("model", None, "HF checkpoint directory or hub id.", required=True)
flags.DEFINE_string("prompts", None, "Input JSONL.", required=True)
flags.DEFINE_string("out", None, "Output JSONL.", required=True)
flags.DEFINE_string("tokenizer", None, "Tokenizer directory or hub id (default: --model).")
flags.DEFINE_integer("max_new_tokens", 1024, "Maximum completion length.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
flags.DEFINE_integer("top_k", 0, "Top-k truncation (0: off).")
flags.DEFINE_integer("n", 1, "Samples per prompt.")
flags.DEFINE_bool("greedy", False, "Argmax decoding.")
flags.DEFINE_bool("ignore_eos", False, "Do not stop at EOS / generation-config stop tokens.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Activation dtype.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("batch_size", 16, "Prompts per sampler call.")
flags.DEFINE_string("mesh", "data=1,fsdp=-1,tensor=1", "Mesh axes AXIS=SIZE over all local devices (one may be -1).")
FLAGS = flags.FLAGS


def read_prompts(path: str, tokenizer) -> list[tuple[str, list[int]]]:
    """(id, prompt token ids) per line; a bad line raises ValueError naming it."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError(f"{where}: each line must be an object with an 'id'")
            given = [k for k in ("messages", "prompt", "prompt_token_ids") if k in row]
            if len(given) != 1:
                raise ValueError(f"{where}: needs exactly one of messages / prompt / prompt_token_ids, got {given}")
            try:
                if "messages" in row:
                    ids = hf.chat_prompt_ids(tokenizer, row["messages"])
                elif "prompt" in row:
                    if not isinstance(row["prompt"], str):
                        raise TypeError("prompt must be a string")
                    ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
                else:
                    ids = [int(t) for t in row["prompt_token_ids"]]
            except Exception as e:  # noqa: BLE001 - any tokenizer/template failure names the line
                raise ValueError(f"{where}: cannot build the prompt ({type(e).__name__}: {e})") from None
            if not ids:
                raise ValueError(f"{where}: the prompt is empty")
            out.append((str(row["id"]), ids))
    return out


def parse_mesh(spec: str) -> dict[str, int]:
    """"data=1,fsdp=-1,tensor=2" -> {"data": 1, "fsdp": -1, "tensor": 2}."""
    out = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        axis, _, size = item.partition("=")
        if axis not in parallel.MESH_AXES or not size.lstrip("-").isdigit():
            raise ValueError(f"--mesh: {item!r} is not AXIS=SIZE with AXIS one of {parallel.MESH_AXES}")
        out[axis] = int(size)
    return out


def main(argv):
    del argv
    try:
        mesh = parallel.make_mesh(parse_mesh(FLAGS.mesh))
    except ValueError as e:
        raise cli.UsageError(str(e)) from e
    try:
        policy = load_policy(FLAGS.model, mesh, tokenizer=FLAGS.tokenizer, dtype=FLAGS.dtype)
    except (OSError, ValueError) as e:
        raise cli.UsageError(f"--model {FLAGS.model}: {e}") from e
    tokenizer = policy.tokenizer
    try:
        prompts = read_prompts(FLAGS.prompts, tokenizer)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    for pid, ids in prompts:
        if max(ids) >= policy.cfg.vocab_size:
            sys.exit(f"error: prompt {pid} has token id {max(ids)} >= vocab size {policy.cfg.vocab_size}")
    opts = policy.sample_options(
        max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature, top_p=FLAGS.top_p,
        top_k=FLAGS.top_k, greedy=FLAGS.greedy, n=FLAGS.n, cache_dtype=FLAGS.dtype,
        **({"stop_token_ids": ()} if FLAGS.ignore_eos else {}))
    sampler = Sampler(policy.cfg, mesh)
    rng = jax.random.key(FLAGS.seed)
    with open(FLAGS.out, "w", encoding="utf-8") as f, tqdm(total=len(prompts) * opts.n, desc="generate", unit="sample") as bar:
        for start in range(0, len(prompts), FLAGS.batch_size):
            chunk = prompts[start : start + FLAGS.batch_size]
            rng, key = jax.random.split(rng)
            ro = rollout(policy, sampler, [{"id": pid} for pid, _ in chunk], key, opts,
                         prompt_ids=[ids for _, ids in chunk])
            for row in range(len(chunk) * opts.n):
                tokens = ro.completion(row)
                f.write(json.dumps({
                    "id": chunk[row // opts.n][0], "sample": row % opts.n, "response": ro.texts[row],
                    "token_ids": tokens, "finish_reason": ro.finish_name(row), "num_tokens": len(tokens),
                }) + "\n")
            bar.update(len(chunk) * opts.n)


if __name__ == "__main__":
    cli.run(main)
