"""One GRPO step, ours and TRL's `GRPOTrainer`, on the same tiny Qwen2 and the same work.

    python experiments/bench_grpo_step.py [--trl_python=/work/venv-trl/bin/python] [--steps=8] [--warmup=2]

Both sides load one random Qwen2 (~3.0M parameters, the Qwen2.5 vocabulary, written once
as a Hugging Face directory by `dsrl_jax.models.hf.save_params`) and the tokenizer at
../shared/tokenizers/qwen2.5-instruct, and run the same step: 8 prompts (chat template)
x 8 samples x exactly 128 new tokens at temperature 1, beta 0 (no KL, no reference
model), no entropy term, one AdamW update on the whole batch of 64, and one reward
(the fraction of ASCII characters in the response). Ours runs through the project's
public path: a config built from configs/base.py, prompts from a JSONL data source, the
reward registered with `dsrl_jax.rewards.register` and graded in the reward pool's
worker processes, `Trainer.run`. No stop token ends a response early: our tokenizer is
loaded with `eos_token=None` and the model directory declares no EOS, so the sampler
has no stop ids; TRL gets `min_new_tokens=128` (its stop tokens are masked until then).

TRL runs in its own environment (CPU torch, `pip install trl torch==2.13.0`), started as
a subprocess of this script with `--trl_python`, after ours has finished. A step's time is
the wall time between consecutive step ends (`Trainer.run`'s `on_step`, TRL's
`on_step_end` callback); the first `--warmup` steps (compilation, CUDA-less torch
warm-up) are dropped and the median of the rest is reported. Ours also reports where
its step goes (the trainer's phase timers). Prints a table; the last stdout line is a
JSON object, also written to experiments/results/bench_grpo_step.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results", "bench_grpo_step.json")
TOKENIZER = os.path.join(os.path.dirname(ROOT), "shared", "tokenizers", "qwen2.5-instruct")
REWARD = "bench_ascii_fraction"
PROMPTS, SAMPLES, NEW_TOKENS = 8, 8, 128
PROBLEMS = [
    "What is 17 + 25?", "Compute 9 * 8 - 4.", "How many prime numbers are less than 20?",
    "What is the remainder when 100 is divided by 7?", "Simplify 3/4 + 1/8.",
    "What is the square root of 144?", "If x + 5 = 12, what is x?", "What is 2 to the power of 10?",
]
# Qwen2 shapes at ~3.0M parameters, nearly all of them the tied 151936 x 20 embedding.
MODEL = dict(vocab_size=151936, hidden_size=20, intermediate_size=80, num_layers=2, num_heads=2, num_kv_heads=1,
             tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=2048, bos_token_id=151643,
             eos_token_id=None)


def ascii_fraction(text: str) -> float:
    """The benchmark's reward, the same function on both sides."""
    return sum(c.isascii() for c in text) / len(text) if text else 0.0


_TRL_SIDE = "--side=trl" in sys.argv  # TRL's environment has no dsrl_jax dependencies
if not _TRL_SIDE:
    # Module level, so that the reward pool's spawned workers (which import this file as
    # their __main__) register it too.
    sys.path.insert(0, ROOT)
    from dsrl_jax.rewards import RewardResult, register  # noqa: E402

    @register(REWARD)
    def _ascii_reward(response: str, record: dict, **_) -> RewardResult:
        return RewardResult(ascii_fraction(response))


# ---- ours ----------------------------------------------------------------------------


def write_model(model_dir: str) -> int:
    """A random tiny Qwen2 as a HF directory (no EOS in generation_config.json)."""
    from dsrl_jax.models import hf, qwen2
    from dsrl_jax.models.config import Qwen2Config, param_count

    cfg = Qwen2Config(**MODEL)
    hf.save_params(model_dir, cfg, qwen2.init_params(cfg, 0), tokenizer_dir=TOKENIZER,
                   generation_config={"bos_token_id": MODEL["bos_token_id"], "eos_token_id": None})
    return param_count(cfg)


def our_config(model_dir: str, data_path: str, total_steps: int):
    sys.path.insert(0, ROOT)
    from configs import base
    from dsrl_jax.rl.curriculum import default_stage

    c = base.get_config()
    c.total_steps = total_steps
    c.model.init, c.model.tokenizer = model_dir, TOKENIZER
    c.model.dtype = "float32"  # CPU: fp32 matmuls, as TRL's CPU torch
    c.model.remat = "none"
    c.mesh.fsdp = 1
    c.data.sources = [{"path": data_path}]
    c.rollout.batch_prompts, c.rollout.group_size = PROMPTS, SAMPLES
    c.rollout.cache_dtype = "float32"
    c.loss.kl_coef = 0.0  # beta 0
    c.loss.entropy_coef = 0.0
    c.train.micro_batch_size = PROMPTS * SAMPLES  # one forward/backward, one update per step
    c.train.logprob_chunk = 32  # [64, 32, 151936] fp32 logit blocks (1.2 GB), not [64, 128, ...] (5 GB)
    c.optim.weight_decay = 0.0  # TRL's default
    c.rewards = {"math": [{"name": REWARD, "weight": 1.0}]}
    c.reward_workers = 2
    c.curriculum.stages = [default_stage(name="bench", max_prompt_len=128, max_response_len=NEW_TOKENS).to_dict()]
    c.checkpoint.every = 10**6  # only the final save, after the last timed step
    c.checkpoint.export_hf = False
    c.log.tensorboard, c.log.progress = False, False
    return c


def run_ours(model_dir: str, data_path: str, workdir: str, steps: int, warmup: int) -> dict:
    from dsrl_jax.models import hf
    from dsrl_jax.rl.trainer import Trainer

    tokenizer = hf.load_tokenizer(TOKENIZER)
    no_eos = type(tokenizer).from_pretrained(TOKENIZER, eos_token=None)  # no stop ids: always 128 tokens
    no_eos_dir = workdir.rstrip("/") + "_tokenizer"
    no_eos.save_pretrained(no_eos_dir)
    config = our_config(model_dir, data_path, warmup + steps)
    config.model.tokenizer = no_eos_dir
    trainer = Trainer(config, workdir)
    ends, metrics = [time.perf_counter()], []

    def on_step(_trainer, _step, m):
        ends.append(time.perf_counter())
        metrics.append(m)

    try:
        trainer.run(on_step=on_step)
    finally:
        trainer.close()
    durations = [b - a for a, b in zip(ends, ends[1:])][warmup:]
    timed = metrics[warmup:]
    tokens = statistics.median(m["response_length/mean"] * PROMPTS * SAMPLES for m in timed)
    phases = {}
    for key in ("time/generate", "time/rollout", "time/rewards_wait", "time/logprobs", "time/update"):
        if key in timed[0]:
            phases[key.split("/", 1)[1]] = statistics.median(m[key] for m in timed)
    median = statistics.median(durations)
    phases["other"] = median - sum(v for k, v in phases.items() if k != "generate")  # generate is inside rollout
    return {"median_step_s": median, "step_s": durations, "completion_tokens": tokens, "phases": phases,
            "response_length_max": max(m["response_length/max"] for m in timed)}


# ---- TRL (runs in its own environment) -----------------------------------------------


def run_trl(job: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    def reward(completions, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [ascii_fraction(t) for t in texts]

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends, self.lengths = [time.perf_counter()], []

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    torch.manual_seed(0)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": t}]} for t in job["prompts"]])
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    steps = job["warmup"] + job["steps"]
    args = GRPOConfig(
        output_dir=job["workdir"], use_cpu=True, seed=0, max_steps=steps, learning_rate=1e-6,
        per_device_train_batch_size=PROMPTS * SAMPLES, num_generations=SAMPLES, gradient_accumulation_steps=1,
        steps_per_generation=1, num_iterations=1, max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0,
        generation_kwargs={"min_new_tokens": NEW_TOKENS}, beta=0.0, logging_steps=1, report_to="none",
        save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
    clock = StepClock()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    durations = [b - a for a, b in zip(clock.ends, clock.ends[1:])][job["warmup"]:]
    lengths = clock.lengths[job["warmup"]:] or [float("nan")]
    return {"median_step_s": statistics.median(durations), "step_s": durations,
            "completion_tokens": statistics.median(lengths) * PROMPTS * SAMPLES,
            "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def trl_subprocess(python: str, job: dict) -> dict:
    proc = subprocess.run([python, os.path.abspath(__file__), "--side=trl", "--job", json.dumps(job)],
                          stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1",
                                                         "HF_HUB_DISABLE_TELEMETRY": "1"})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        sys.exit(f"error: the TRL side failed (exit {proc.returncode}); its output:\n{proc.stdout[-3000:]}")
    return json.loads(lines[-1])


# ---- main ----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trl_python", default="/work/venv-trl/bin/python", help="python of the environment with trl")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per side (median)")
    ap.add_argument("--warmup", type=int, default=2, help="steps dropped first (compilation)")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--side", default="both", choices=["both", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--job", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "trl":
        print(json.dumps(run_trl(json.loads(args.job))), flush=True)
        return
    if not os.path.isdir(TOKENIZER):
        sys.exit(f"error: no tokenizer at {TOKENIZER} (the shared tokenizers sit beside the checkout)")
    if not os.path.exists(args.trl_python):  # checked before our side runs
        sys.exit(f"error: --trl_python {args.trl_python} does not exist (python -m venv /work/venv-trl && "
                 "/work/venv-trl/bin/pip install trl torch==2.13.0)")
    if args.steps < 1 or args.warmup < 0:
        sys.exit("error: need --steps >= 1 and --warmup >= 0")
    import jax

    from dsrl_jax.data.prompts import prompt_text

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        params = write_model(model_dir)
        records = [{"id": f"p{i}", "domain": "math", "problem": p, "answer": "0"} for i, p in enumerate(PROBLEMS)]
        data_path = os.path.join(tmp, "prompts.jsonl")
        with open(data_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        print(f"model: {params / 1e6:.2f}M parameters; work: {PROMPTS} prompts x {SAMPLES} samples x "
              f"{NEW_TOKENS} tokens, beta 0, one update per step; load {os.getloadavg()[0]:.2f}", flush=True)
        ours = run_ours(model_dir, data_path, os.path.join(tmp, "ours"), args.steps, args.warmup)
        print(f"ours: median {ours['median_step_s']:.3f} s/step over {args.steps} steps", flush=True)
        job = {"model_dir": model_dir, "prompts": [prompt_text(r) for r in records], "workdir": os.path.join(tmp, "trl"),
               "steps": args.steps, "warmup": args.warmup}
        trl = trl_subprocess(args.trl_python, job)
        print(f"TRL: median {trl['median_step_s']:.3f} s/step over {args.steps} steps", flush=True)
    if trl["params"] != params:
        sys.exit(f"error: TRL loaded {trl['params']} parameters, ours {params}")
    rows = [("ours (dsrl_jax)", ours), ("TRL GRPOTrainer", trl)]
    print("\n| side | median s/step | completion tokens/step | completion tokens/s |\n|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['median_step_s']:.3f} | {r['completion_tokens']:.0f} | "
              f"{r['completion_tokens'] / r['median_step_s']:.0f} |")
    print(f"\nours / TRL: {ours['median_step_s'] / trl['median_step_s']:.3f}")
    print("ours, median seconds per phase: " + ", ".join(f"{k} {v:.3f}" for k, v in ours["phases"].items()))
    summary = {
        "ours_median_step_s": round(ours["median_step_s"], 4),
        "trl_median_step_s": round(trl["median_step_s"], 4),
        "ours_completion_tokens_per_s": round(ours["completion_tokens"] / ours["median_step_s"], 1),
        "trl_completion_tokens_per_s": round(trl["completion_tokens"] / trl["median_step_s"], 1),
    }
    detail = {**summary, "params": params, "steps": args.steps, "warmup": args.warmup, "ours": ours, "trl": trl,
              "machine": f"{os.cpu_count()} cores, jax {jax.__version__}, torch {trl['torch']}"}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(detail, f, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
