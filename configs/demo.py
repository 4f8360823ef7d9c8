"""The CPU demo: the whole method in miniature, in minutes, with no downloads.

    python -m dsrl_jax.main --config=configs/demo.py [--workdir=runs/demo]
    python -m dsrl_jax.main --config=configs/demo.py:smoke     # = --config.smoke=True

A tiny Qwen2 (character tokenizer) learns chains of single-digit additions/subtractions
whose answer goes in \\boxed{} (dsrl_jax/demo/task.py), graded by the real math reward:
  1. supervised warm start to a partial pass rate (two checkpoints: early and final);
  2. difficulty scoring of the RL problems with both checkpoints as proxies, levels by rule;
  3. GRPO stage 1 on L2 problems with short responses until the reward plateaus (or a
     step cap), then stage 2 on L3 with a longer response limit, truncation masked;
  4. held-out Pass@1 before and after, printed and written to demo_results.json.
`recipe` names the function that runs these phases (dsrl_jax/demo/run.py), each through the
project's public entry points. The "smoke" variant (`get_config("smoke")`, also selected by
`--config.smoke=True`) shrinks everything to a seconds-long run (tests and notebooks).
"""
import ml_collections

from configs import base
from dsrl_jax.defaults import PLATEAU
from dsrl_jax.settings import stage_dict


def demo_level_rules():
    """The paper's L2/L3 idea with two proxies: "sft-early" (weaker), "warm-start" (stronger)."""
    partial = lambda p: {"proxy": p, "op": "in_open", "value": [0, 1]}  # noqa: E731
    return {
        "keep": {"proxy": "warm-start", "op": "gt", "value": 0},  # never solved: dropped
        "levels": [
            {"name": "L1", "when": partial("sft-early")},
            {"name": "L2", "when": {"any": [  # the weak proxy fails, the strong one sometimes solves
                {"all": [{"proxy": "sft-early", "op": "eq", "value": 0}, {"proxy": "warm-start", "op": "gt", "value": 0}]},
                {"all": [partial("sft-early"), partial("warm-start")]},
            ]}},
            {"name": "L3", "when": {"any": [  # hard for the strong proxy, plus a seeded half of the rest
                {"proxy": "warm-start", "op": "le", "value": 0.5},
                {"sample": {"math": 0.5}},
            ]}},
        ],
    }


def get_config(variant: str = ""):
    if variant not in ("", "smoke"):
        raise ValueError(f"configs/demo.py: unknown variant {variant!r}; known: smoke")
    c = base.get_config()
    c.recipe = "dsrl_jax.demo.run:run"  # what dsrl_jax.main runs: warm start, scoring, GRPO, eval
    c.smoke = variant == "smoke"  # set by the variant (`--config.smoke=True` selects it)
    c.seed = 0
    c.total_steps = 200  # an upper bound: the curriculum ends the run

    c.demo = ml_collections.ConfigDict(dict(
        sft_size=4000,  # supervised problems (worked solutions)
        rl_size=512,  # problems scored and used for GRPO
        eval_size=200,  # held-out problems (disjoint from the others), 40 per difficulty
        sft_steps=700,  # warm start: AdamW steps of sft_batch_size sequences
        sft_early_steps=300,  # the weaker proxy is the warm start at this step
        sft_batch_size=32,
        sft_lr=5e-3,
        # Leaves mass on wrong tokens: the greedy answer is often right but temperature-1
        # samples slip, the headroom that GRPO's sharpening recovers (as with distilled
        # reasoning models, whose sampled accuracy trails their mode's).
        sft_label_smoothing=0.03,
        score_k=4,  # samples per problem per proxy
        eval_n=4,  # samples per held-out problem (Pass@1 = mean reward)
        eval_temperature=1.0,
        eval_max_new_tokens=64,
    ))
    c.level_rules = demo_level_rules()

    # GRPO starts from the warm start the recipe writes (a relative spec is under the workdir).
    c.model.init = "models/warm-start"
    c.model.dtype = "float32"
    c.model.remat = "none"
    c.model.attention_impl = "plain"
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1))

    c.rollout.batch_prompts = 32
    c.rollout.group_size = 8
    c.rollout.cache_dtype = "float32"
    c.loss.kl_coef = 0.001
    c.loss.entropy_coef = 0.001
    c.optim.lr = 5e-4  # a 0.13M-parameter model moves at a larger rate than the paper's 1.5B
    c.optim.grad_clip = 1.0
    c.train.micro_batch_size = 256
    c.reward_workers = 2

    plateau = {**PLATEAU, "window": 10, "patience": 10, "min_steps": 20}
    c.curriculum.stages = [
        stage_dict(name="stage1", data={"levels": ["L2"]}, max_prompt_len=32, max_response_len=40,
                   loss={"entropy_coef": 0.001},
                   end={"max_steps": 60, "plateau": plateau}),
        stage_dict(name="stage2", data={"levels": ["L3"]}, max_prompt_len=32, max_response_len=64,
                   loss={"entropy_coef": 0.0, "mask_truncated": True},
                   end={"max_steps": 40, "plateau": None}),
    ]
    # Periodic held-out evaluation (the demo points eval.benchmarks at its held-out split).
    c.eval.every = 25
    c.eval.n = 2
    c.eval.temperature = 1.0
    c.eval.top_p = 1.0
    c.eval.max_new_tokens = 64
    c.eval.limit = 100
    c.eval.batch_size = 256
    c.checkpoint.every = 20
    c.checkpoint.export_hf = False
    if c.smoke:
        _smoke(c)
    return c


def _smoke(c):
    """Seconds instead of minutes: for tests and notebook fixtures, not for results."""
    c.demo.update(sft_size=400, rl_size=48, eval_size=24, sft_steps=20, sft_early_steps=10, score_k=2, eval_n=2)
    c.rollout.batch_prompts, c.rollout.group_size = 4, 4
    c.train.micro_batch_size = 16
    c.reward_workers = 1
    c.checkpoint.every = 2
    c.eval.every, c.eval.limit = 2, 8
    # A few supervised steps solve nothing, so levels come from seeded draws here.
    c.level_rules = {"keep": {"sample": 1.0},
                     "levels": [{"name": n, "when": {"sample": 0.6}} for n in ("L1", "L2", "L3")]}
    stages = c.curriculum.stages
    for stage, steps in zip(stages, (3, 2)):
        stage["end"]["max_steps"] = steps
        if stage["end"]["plateau"]:
            stage["end"]["plateau"].update(window=1, patience=1, min_steps=1)
    c.curriculum.stages = stages
