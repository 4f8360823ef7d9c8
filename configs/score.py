"""Difficulty scoring (dsrl_jax/score.py): proxy-model pass rates and the paper's levels.

    python -m dsrl_jax.score --config=configs/score.py --config.output=/data/scored.jsonl
    # other data from the command line (replaces `sources`), a smoke run of 8 problems:
    python -m dsrl_jax.score --config=configs/score.py --config.limit=8 \
        --config.paths=../shared/data/math/train_deepscaler_math.jsonl,../shared/data/code/lcb_v5_public.json

Paper (section 3.2): each problem is sampled "multiple times" (count unstated; k=8 here) by
DeepSeek-R1-Distill-Qwen-1.5B / 7B / 32B and DeepSeek-R1; pass rate = mean score (math 0/1
via Math-Verify, code = passed/total tests). DeepSeek-R1 (671B MoE) is not a Qwen2 model,
so this JAX sampler cannot run it: compute its rates elsewhere (e.g. vLLM) and merge them
with `pass_rates_file` (JSONL lines {"id", "proxy": "deepseek-r1", "pass_rate"} or
{"id", "pass_rates": {...}}). A problem without an R1 rate is kept ("R1 unknown" counts as
keep, so L3 keeps the problems the 32B fails). To require R1 rates (drop problems without
one): `--config.level_rules.keep.if_missing=False`, or `paper_level_rules(require_strongest=True)`.
"""
import copy

import ml_collections

from dsrl_jax import defaults
from dsrl_jax.data.levels import paper_level_rules


def proxy(name, model, **overrides):
    p = dict(name=name, model=model, tokenizer=None,  # tokenizer: None = the model's own
             k=8,  # samples per problem
             max_new_tokens=16384, temperature=0.6, top_p=0.95, top_k=0,
             batch_size=0,  # prompts per sampler call (each gets k samples); 0 = sized from the mesh:
             rows_per_device=8,  # rows per data-parallel device per call (see the memory plans)
             max_prompt_len=2048,  # longer prompts are skipped (counted), not scored
             dtype="bfloat16")
    p.update(overrides)
    return p


def get_config():
    c = ml_collections.ConfigDict()
    c.sources = [  # dsrl_jax.data.sources specs; ids must be unique across them
        {"path": "../shared/data/math/train_deepscaler_math.jsonl"},
        {"path": "../shared/data/code/lcb_v5_public.json"},
    ]
    c.paths = ""  # comma-separated local files; when set, replaces `sources` (CLI convenience)
    c.limit = 0  # first N problems of each source (smoke runs); 0 = all
    # Rows overlapping the evaluation benchmarks are dropped before scoring; the report is
    # written beside the output (<output>.decontamination.json). "" = off.
    c.decontaminate = ml_collections.ConfigDict({**defaults.DECONTAMINATE, "against": defaults.PAPER_BENCHMARKS})
    c.proxies = [
        # rows_per_device: what fits a v5e-8 (16 GiB per chip) at 2048 + 16384 tokens, per
        # `python -m dsrl_jax.tools.throughput --config=configs/score.py --topology=v5e-8`
        # (experiments/results/memory/sampling/; a v4-8 fits 16 / 8). The 32B fits no whole
        # call of k=8 rows on either slice (1 row with --config.mesh.fsdp=1 --config.mesh.tensor=8).
        proxy("r1-distill-1.5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", rows_per_device=8),
        proxy("r1-distill-7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", rows_per_device=2),
        proxy("r1-distill-32b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", rows_per_device=1),
    ]
    # Each proxy samples sharded over all local devices (FSDP x tensor parallel); same axes as
    # training, one may be -1.
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.sharding_rules = ml_collections.ConfigDict(copy.deepcopy(defaults.SHARDING_RULES))
    c.only_proxies = ""  # comma-separated proxy names to run now ("" = all)
    c.pass_rates_file = ""  # externally computed rates (DeepSeek-R1), merged before levels
    c.output = "scored/problems.jsonl"  # the merged dataset: records + pass_rates + levels
    c.progress = ""  # the append-only log of (proxy, id) results; "" = <output>.scores.jsonl
    c.prompt_mode = "auto"  # chat template when the tokenizer has one
    c.rewards = copy.deepcopy(defaults.REWARDS)
    c.reward_workers = 4
    c.level_rules = paper_level_rules()  # keep.if_missing=True: "R1 unknown" counts as keep
    c.level_seed = 0  # seeds L3's sampled fraction of 32B-solved problems
    c.seed = 0
    return c
