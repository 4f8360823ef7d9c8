"""The staged run's baseline (paper section 4.3, figure 2): stage 1 continued past its
plateau instead of switching to stage 2, for the same total budget as configs/staged.py.

    python -m dsrl_jax.main --config=configs/continued_stage1.py --workdir=gs://bucket/runs/continued

L2 data, 16k-token responses, entropy 0.001, truncated responses in the loss (stage 1's
settings) for every step; compare with configs/staged.py at equal steps.
"""
from configs import stage1, staged


def get_config():
    c = stage1.get_config()
    s = c.curriculum.stages[0]
    s["name"] = "stage1_continued"
    s["end"] = {"max_steps": None, "plateau": None}  # no switch, no plateau end
    c.total_steps = staged.get_config().total_steps  # the staged run's budget
    return c
