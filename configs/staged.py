"""The paper's staged run in one job: stage 1 (L2, 16k) until the reward plateaus, then
stage 2 (L3, 24k, truncation masked, no entropy term), from DeepSeek-R1-Distill-Qwen-1.5B.

    python -m dsrl_jax.main --config=configs/staged.py --workdir=gs://bucket/runs/staged
"""
from configs import stage1, stage2


def get_config():
    c = stage1.get_config()
    c.curriculum.stages = [stage1.stage1(), stage2.stage2()]  # switch on the stage-1 plateau
    c.rollout.prompts_per_sample_call = 2  # sized for stage 2's 25.6k-token caches (see configs/stage2.py)
    c.total_steps = 3000
    return c
