"""One difficulty level alone (paper section 4.2, figure 1): GRPO on L1, L2 or L3 data with
the section 4.1 settings (16k tokens, KL 0.001, entropy 0.001) from DeepSeek-R1-Distill-Qwen-1.5B.

    python -m dsrl_jax.main --config=configs/single_level.py:L1 --workdir=gs://bucket/runs/level1
    python -m dsrl_jax.main --config=configs/single_level.py:L3 --workdir=gs://bucket/runs/level3

The paper reports initial training rewards 0.58 / 0.50 / 0.17 for L1 / L2 / L3 and the best
AIME24 curve with L1. The three runs differ only in the stage's level; the step budget is
the same for all (the paper does not state its length; 2000 here, no plateau end).
"""
from configs import stage1

LEVELS = ("L1", "L2", "L3")


def get_config(level: str = "L1"):
    level = (level or "L1").strip()
    if level not in LEVELS:
        raise ValueError(f"configs/single_level.py: level must be one of {', '.join(LEVELS)} "
                         f"(e.g. --config=configs/single_level.py:L2), got {level!r}")
    c = stage1.get_config()
    s = c.curriculum.stages[0]
    s["name"] = f"single_{level}"
    s["data"]["levels"] = [level]
    s["end"] = {"max_steps": None, "plateau": None}  # the same budget for every level
    c.total_steps = 2000
    return c
