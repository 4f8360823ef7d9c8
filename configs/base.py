"""The defaults every training config starts from: the paper's GRPO settings.

Each field reads as a hyperparameter table; configs/stage1.py etc. change what differs.
The blocks the library has defaults for too (sharding rules, loss, rewards, eval, a
curriculum stage, decontamination) come from the literal tables of dsrl_jax/defaults.py,
the one copy both read. Importing a config imports neither jax nor flax.
Any field can be overridden on the command line: `--config.loss.kl_coef=0`.
"""
import copy

import ml_collections

from dsrl_jax import defaults
from dsrl_jax.settings import stage_dict

R1_DISTILL_1P5B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 2000  # upper bound on the global step; the curriculum may finish earlier
    # A training workdir whose latest checkpoint this run starts from (params, optimizer
    # state, step, RNG), e.g. stage 2 continuing stage 1; model.init stays the KL reference.
    c.init_from = ""

    c.model = ml_collections.ConfigDict(dict(
        init=R1_DISTILL_1P5B,  # HF directory or hub id; "preset:NAME" = random init (tests)
        tokenizer="",  # "" = the init checkpoint's tokenizer
        dtype="bfloat16",  # activations; parameters stay in param_dtype (fp32 master weights)
        param_dtype="float32",
        scan_layers=True,
        remat="full",  # none | full | dots
        attention_impl="auto",  # auto | plain | blockwise
    ))

    # Mesh axes (data, fsdp, tensor); one may be -1 (inferred from the device count).
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.sharding_rules = ml_collections.ConfigDict(copy.deepcopy(defaults.SHARDING_RULES))

    c.data = ml_collections.ConfigDict(dict(
        sources=[],  # dsrl_jax.data.sources specs: {"path": ...} or {"hub": ..., "split": ...}
        prompt_mode="auto",  # chat template when the tokenizer has one
        plain_template="{prompt}",
        seed=0,
    ))
    # Rows overlapping these benchmarks are dropped when the records load; the report goes
    # to <workdir>/decontamination.json. "" = off; the paper configs set PAPER_BENCHMARKS.
    c.data.decontaminate = ml_collections.ConfigDict(defaults.DECONTAMINATE)  # ngram 13, min_coverage 0.5

    c.rollout = ml_collections.ConfigDict(dict(
        batch_prompts=128,  # prompts per step (paper: 128)
        group_size=16,  # samples per prompt (paper: 16)
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        cache_dtype="bfloat16",
        prompts_per_sample_call=0,  # prompts per sampler call (x group_size rows); 0 = all at once
        max_in_flight=0,  # > 0: continuous batching with this many decoding slots (rows are one queue,
        kv_cache_tokens=0,  # graded as they finish) over a paged KV pool of this many tokens (0: slots x cap)
        dynamic_sampling=False,  # drop all-equal groups and refill from more prompts
        max_refill_batches=3,  # bounded tries for dynamic sampling
    ))

    # clip 0.2/0.2, KL 0.001 (k3), entropy 0.001, token-mean; max_response_len 0 = the stage's
    c.loss = ml_collections.ConfigDict(defaults.LOSS)

    c.train = ml_collections.ConfigDict(dict(
        mini_batch_size=0,  # sequences per optimizer update; 0 = the whole rollout (on-policy)
        micro_batch_size=16,  # sequences per forward/backward (gradient accumulation)
        epochs_per_batch=1,  # passes over each rollout batch
        logprob_chunk=1024,  # sequence chunk of the log-softmax (no [B, T, V] logits)
        shuffle_minibatches=True,
    ))

    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-6, schedule="constant", warmup_steps=0, decay_steps=0, final_lr_frac=0.1,
        b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, grad_clip=1.0,
    ))

    # math / code: one reward each, weight 1; modules "", allow_unsandboxed False (see defaults.py)
    c.rewards = ml_collections.ConfigDict(copy.deepcopy({**defaults.REWARDS, **defaults.REWARD_SETTINGS}))
    c.reward_workers = 8
    c.reward_timeout_s = 0.0  # 0 = the pool's per-domain defaults

    c.curriculum = ml_collections.ConfigDict()
    c.curriculum.stages = [stage_dict(name="main")]  # defaults.STAGE: 1024 / 16384 tokens, no end rule

    c.checkpoint = ml_collections.ConfigDict(dict(every=50, keep=3, async_save=True, export_hf=True))
    c.eval = ml_collections.ConfigDict(defaults.EVAL)  # off (every 0)
    c.log = ml_collections.ConfigDict(dict(tensorboard=True, progress=True))
    # Weights & Biases beside TensorBoard and metrics.jsonl: off while project is "" (then
    # wandb is never imported); mode "offline" writes the run locally for `wandb sync`.
    c.log.wandb = ml_collections.ConfigDict(dict(project="", entity="", name="", mode="", tags=[]))
    return c
