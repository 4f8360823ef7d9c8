"""Benchmark evaluation (dsrl_jax/evaluate.py), with the paper's settings.

    python -m dsrl_jax.evaluate --config=configs/eval.py --workdir=/tmp/eval \
        --config.model=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --config.benchmarks=aime24,math500

Paper: pass@1 over 16 samples (AIME24, MATH-500) and 4 (LiveCodeBench), temperature 0.6,
top_p 0.95, up to 32k new tokens. `n=0` picks 16 / 4 by each benchmark's domain.
Offline: --config.benchmarks=aime24=../shared/data/math/aime24.jsonl,lcb=../shared/data/code/lcb_2408_2501_public.json
"""
import copy

import ml_collections

from dsrl_jax import defaults


def get_config():
    config = ml_collections.ConfigDict(defaults.EVAL)  # the trainer's eval block (evaluate.default_eval_config)
    config.model = ""  # HF checkpoint dir, hub id, or a training workdir (latest checkpoint)
    config.dtype = "bfloat16"  # activations; params keep the checkpoint's stored dtype
    config.benchmarks = "aime24,math500,livecodebench"
    config.n = 0  # 0: 16 for math benchmarks, 4 for code (LiveCodeBench)
    config.temperature = 0.6
    config.top_p = 0.95
    config.max_new_tokens = 32768
    config.tokenizer = ""  # "" = the model's own
    # Sampling runs sharded over all local devices: weights FSDP x tensor-parallel, rows over
    # the data-parallel devices (data x fsdp). Same axes as training; one may be -1.
    config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    config.sharding_rules = ml_collections.ConfigDict(copy.deepcopy(defaults.SHARDING_RULES))
    config.batch_size = 0  # prompts per sampler call; 0 = rows_per_device x devices / n
    # 1.5B at 2048 + 32768 tokens on a v5e-8 (16 on a v4-8), per `python -m dsrl_jax.tools.throughput
    # --config=configs/eval.py --topology=v5e-8` (experiments/results/memory/sampling/)
    config.rows_per_device = 8
    config.limit = 0  # first N problems per benchmark (smoke runs); 0 = all
    config.reward_workers = 4
    config.seed = 0
    return config
