"""Stage 2 of the paper: level-3 data, 24k-token responses, continuing a stage-1 run.

    python -m dsrl_jax.main --config=configs/stage1.py --workdir=gs://bucket/runs/stage1
    python -m dsrl_jax.main --config=configs/stage2.py --workdir=gs://bucket/runs/stage2 \
        --config.init_from=gs://bucket/runs/stage1

Changes from stage 1 (paper section 4.3): harder data (L3: everything the 32B fails plus
half of what it solves), the rollout limit raised to 24,576 tokens, responses cut at the
limit excluded from the loss, and no entropy term. Everything else continues the stage-1
run, exactly as configs/staged.py switches inside one run (dsrl_jax/rl/curriculum.py): the
stage-1 checkpoint's parameters, AdamW state, step and RNG (`init_from`), the KL reference
stays the initial model (`model.init`, DeepSeek-R1-Distill-Qwen-1.5B), and the constant
learning rate 1e-6 goes on. `total_steps` counts the global step, stage 1 included.
"""
from configs import stage1
from dsrl_jax.settings import stage_dict


def stage2():
    return stage_dict(
        name="stage2",
        data={"levels": ["L3"], "domains": ["math"]},
        max_prompt_len=1024,
        max_response_len=24576,
        loss={"entropy_coef": 0.0, "mask_truncated": True},
        end={"max_steps": None, "plateau": None},
    )


def get_config():
    c = stage1.get_config()
    c.init_from = "runs/stage1"  # the stage-1 workdir (its latest checkpoint); model.init = the reference
    # 2 prompts x 16 samples = 32 sequences of 25.6k tokens per sampler call: KV cache ~3 GiB
    # per chip on a v5e-8, sampler peak ~8 GiB + 2.5 GiB resident of 16 (4 prompts: ~15.6,
    # too close). python -m dsrl_jax.tools.memory --config=configs/stage2.py --topology=v5e-8
    c.rollout.prompts_per_sample_call = 2
    c.curriculum.stages = [stage2()]
    c.total_steps = 3000  # global steps, as configs/staged.py (stage 1 ran ~1600 in the paper)
    return c
