"""The default tables: one copy of every default that both a config and the library read.

Plain literals (no jax, flax or optax imported here), so `configs/*.py` build from them
without loading the library, and the library modules take their defaults from here too:

    SHARDING_RULES   parallel.DEFAULT_RULES (logical axis -> mesh axes)
    LOSS             rl.grpo.default_loss_config()
    EVAL             evaluate.default_eval_config()
    REWARDS          rewards.DEFAULT_CONFIG (per domain); REWARD_SETTINGS: its non-domain keys
    STAGE, PLATEAU   rl.curriculum.default_stage() / default_plateau()
    DECONTAMINATE    the `data.decontaminate` block; PAPER_BENCHMARKS what the paper configs check against

Callers copy before changing (`copy.deepcopy`, or `ml_collections.ConfigDict(...)`, which copies).
"""

# FSDP over the embedding dimension, tensor parallelism over heads / mlp / vocab.
SHARDING_RULES = {
    "batch": ["data", "fsdp"],
    "vocab": "tensor",
    "embed": "fsdp",
    "mlp": "tensor",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "layers": None,
    "norm": None,
    "length": None,
}

# Loss hyperparameters (paper: KL 0.001, entropy 0.001; stage 2 masks truncations).
LOSS = {
    "clip_low": 0.2,
    "clip_high": 0.2,  # > clip_low for DAPO clip-higher, e.g. 0.28
    "dual_clip": 0.0,  # 0 = off; e.g. 3.0: cap on the loss of negative-advantage tokens
    "kl_coef": 0.001,  # 0 drops the term and the reference model
    "kl_estimator": "k3",  # key of rl.grpo.KL_ESTIMATORS
    "entropy_coef": 0.001,  # bonus: loss -= entropy_coef * entropy; stage 2: 0
    "loss_agg": "token-mean",  # key of rl.grpo.LOSS_AGGREGATIONS
    "mask_truncated": False,  # stage 2: responses cut at the length limit get no loss
    "adv_std_mode": "group",  # key of rl.grpo.ADVANTAGE_STD_MODES; "none" = Dr. GRPO
    "adv_eps": 1e-6,
    # The constant of seq-mean-token-sum-norm (Dr. GRPO). 0 (or None) = the stage's
    # max_response_len; another value must equal it (validation rejects a mismatch).
    "max_response_len": 0,
}

# The eval block of the trainer's config (and the generation part of configs/eval.py).
EVAL = {
    "every": 0,  # evaluate every this many training steps; 0 = off
    "benchmarks": "",  # "aime24,math500" or "aime=/path/aime24.jsonl,..."
    "n": 0,  # samples per problem; 0 = per benchmark (16 math, 4 livecodebench / code)
    "n_per_benchmark": "",  # overrides, e.g. "livecodebench=8,aime24=32"
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 0,
    "max_new_tokens": 32768,
    "limit": 0,  # first N problems of each benchmark; 0 = all
    "prompt_mode": "auto",  # data/prompts.py: chat template if the tokenizer has one, else plain
    "batch_size": 0,  # prompts per sampler call (each with n samples); 0 = sized from the mesh:
    "rows_per_device": 8,  # ... rows_per_device x data-parallel devices / n (the memory plan's figure)
    "seed": 0,
    "reward_workers": 2,
    "lcb_version": "release_v5",  # LiveCodeBench release and contest-date window
    "lcb_start_date": "2024-08-01",  # contest dates, inclusive (the window of the paper's
    "lcb_end_date": "2025-01-31",  # baselines); hub livecodebench only, not local files
}

# Rewards per domain: [{name, weight, options}] (see rewards/registry.py).
REWARDS = {
    "math": [{"name": "math", "weight": 1.0}],
    "code": [{"name": "code", "weight": 1.0}],
}
REWARD_SETTINGS = {
    "modules": "",  # comma-separated user modules that @register rewards (imported in every worker)
    "allow_unsandboxed": False,  # True: run code rewards without bubblewrap (unsafe, see README)
}

# A curriculum stage (rl/curriculum.py describes each field).
STAGE = {
    "name": "stage",
    "data": {"levels": None, "domains": None, "mixture": None},
    "max_prompt_len": 1024,
    "max_response_len": 16384,
    "loss": {},  # overrides of LOSS for this stage
    "sampling": {},  # overrides of the rollout block for this stage
    "end": {"max_steps": None, "plateau": None},
}
PLATEAU = {
    "metric": "reward/mean",  # a key of the metrics dict passed to Curriculum.observe()
    "window": 50,  # moving-average window (steps)
    "min_delta": 0.0,  # a rise of more than this above the best average counts as progress
    "patience": 100,  # steps without progress before the stage ends
    "min_steps": 0,  # never end by plateau before this many steps in the stage
    "on_last_stage": False,  # whether a plateau in the last stage ends training
}

# Decontamination of the training records against benchmarks; against "" = off.
# The benchmarks the paper reports: the paper configs drop training rows that overlap them.
PAPER_BENCHMARKS = "aime24,aime25,math500,amc23,livecodebench"

DECONTAMINATE = {
    "against": "",  # benchmarks: "aime24,math500" (hub) or "name=path,..."
    "ngram": 13,  # n-gram length in normalised tokens
    "min_coverage": 0.5,  # share of a benchmark problem's n-grams that marks a row
}
