"""Sample completions for a JSONL file of prompts.

    python -m dsrl_jax.generate --model DIR_OR_HUB_ID --prompts IN.jsonl --out OUT.jsonl \
        [--n 4] [--max_new_tokens 1024] [--temperature 0.6 --top_p 0.95] [--greedy]

Each input line has `id` and one of `messages` (chat; the model's template is applied with
a generation prompt), `prompt` (text, tokenized without special tokens) or
`prompt_token_ids`. Each output line is one sample: id, sample, response, token_ids,
finish_reason, num_tokens.
"""

from __future__ import annotations

import json
import sys

import jax
from absl import flags
from tqdm import tqdm

from dsrl_jax import cli
from dsrl_jax.models import hf
from dsrl_jax.sampling import FINISH_REASONS, SampleOptions, Sampler

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


def main(argv):
    del argv
    try:
        tokenizer = hf.load_tokenizer(FLAGS.tokenizer or FLAGS.model)
        model_dir = hf.resolve(FLAGS.model)
        cfg, params = hf.load_params(model_dir)
    except (OSError, ValueError) as e:
        raise cli.UsageError(f"--model {FLAGS.model}: {e}") from e
    cfg = cfg.replace(dtype=FLAGS.dtype)
    try:
        prompts = read_prompts(FLAGS.prompts, tokenizer)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    for pid, ids in prompts:
        if max(ids) >= cfg.vocab_size:
            sys.exit(f"error: prompt {pid} has token id {max(ids)} >= vocab size {cfg.vocab_size}")
    stops = () if FLAGS.ignore_eos else tuple(hf.stop_token_ids(tokenizer, model_dir))
    opts = SampleOptions(
        max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature, top_p=FLAGS.top_p,
        top_k=FLAGS.top_k, greedy=FLAGS.greedy, n=FLAGS.n, stop_token_ids=stops,
        cache_dtype=FLAGS.dtype, pad_token_id=tokenizer.pad_token_id or 0,
    )
    sampler = Sampler(cfg)
    rng = jax.random.key(FLAGS.seed)
    with open(FLAGS.out, "w", encoding="utf-8") as f, tqdm(total=len(prompts) * opts.n, desc="generate", unit="sample") as bar:
        for start in range(0, len(prompts), FLAGS.batch_size):
            chunk = prompts[start : start + FLAGS.batch_size]
            rng, key = jax.random.split(rng)
            out = sampler.sample(params, [ids for _, ids in chunk], key, opts)
            for row in range(len(chunk) * opts.n):
                tokens = out.completion(row)
                f.write(json.dumps({
                    "id": chunk[row // opts.n][0], "sample": row % opts.n,
                    "response": tokenizer.decode(tokens, skip_special_tokens=True),
                    "token_ids": tokens, "finish_reason": FINISH_REASONS[out.finish_reason[row]],
                    "num_tokens": len(tokens),
                }) + "\n")
            bar.update(len(chunk) * opts.n)


if __name__ == "__main__":
    cli.run(main)
