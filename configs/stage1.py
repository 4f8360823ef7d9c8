"""Stage 1 of the paper: GRPO on level-2 math with 16k-token responses, until the reward plateaus.

DeepSeek-R1-Distill-Qwen-1.5B on a TPU v4-8 / v5e-8 (FSDP over all chips):

    python -m dsrl_jax.main --config=configs/stage1.py --workdir=gs://bucket/runs/stage1

The data is a scored dataset (python -m dsrl_jax.score --config=configs/score.py) whose
records carry `levels`; stage 1 trains on L2 (1.5B fails, 7B sometimes solves, or both
partial). Paper: the reward plateaued and the run switched to stage 2 at step ~1600.
"""
from configs import base
from dsrl_jax.defaults import PAPER_BENCHMARKS, PLATEAU
from dsrl_jax.settings import stage_dict


def stage1(**end):
    plateau = {**PLATEAU, "metric": "reward/mean", "window": 50, "patience": 100, "min_steps": 200}
    return stage_dict(
        name="stage1",
        data={"levels": ["L2"], "domains": ["math"]},
        max_prompt_len=1024,
        max_response_len=16384,
        loss={"entropy_coef": 0.001, "mask_truncated": False},
        end={"max_steps": None, "plateau": {**plateau, **end}},
    )


def get_config():
    c = base.get_config()
    c.data.sources = [{"path": "scored/problems.jsonl"}]  # output of dsrl_jax.score
    # Checked against the evaluation benchmarks (hub copies; offline give name=path pairs:
    # --config.data.decontaminate.against=aime24=../shared/data/math/aime24.jsonl,...).
    c.data.decontaminate.against = PAPER_BENCHMARKS
    c.rollout.batch_prompts = 128  # paper
    c.rollout.group_size = 16  # paper
    # 4 prompts x 16 samples = 64 sequences of 17k tokens per sampler call: KV cache ~4 GiB
    # per chip on a v5e-8 (sampler peak ~9 GiB + 2.5 GiB resident of 16; python -m
    # dsrl_jax.tools.memory --config=configs/stage1.py --topology=v5e-8). 8 does not fit.
    c.rollout.prompts_per_sample_call = 4
    c.loss.kl_coef = 0.001  # paper
    c.loss.entropy_coef = 0.001  # paper (stage 1)
    c.optim.lr = 1e-6  # paper
    c.train.micro_batch_size = -1  # one sequence per data-parallel device: 8 on a v5e-8, 4 on a v4-8
    c.train.logprob_chunk = 1024
    c.curriculum.stages = [stage1(on_last_stage=True)]  # alone, the run ends on the plateau
    c.total_steps = 2000
    c.checkpoint.every = 50
    return c
