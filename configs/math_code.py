"""Math + code (paper section 4.3): level-1 math mixed with level-3 code about 2.1:1
inside every batch, 16k-token responses, from DeepSeek-R1-Distill-Qwen-1.5B.

    python -m dsrl_jax.main --config=configs/math_code.py --workdir=gs://bucket/runs/math_code

Code is graded by running the response's last Python block against the problem's tests in
the sandbox; its reward is the fraction of tests passed.
"""
from configs import stage1
from dsrl_jax.settings import stage_dict


def get_config():
    c = stage1.get_config()
    c.data.sources = [{"path": "scored/problems.jsonl"}]  # scored math and code problems
    c.curriculum.stages = [stage_dict(
        name="math_code",
        data={"levels": {"math": ["L1"], "code": ["L3"]}, "domains": ["math", "code"],
              "mixture": {"math": 2.1, "code": 1.0}},  # 87 math + 41 code prompts per batch
        max_prompt_len=2048,  # code statements are longer
        max_response_len=16384,
        loss={"entropy_coef": 0.001},
    )]
    c.rewards.code = [{"name": "code", "weight": 1.0, "options": {"all_pass": False}}]
    c.total_steps = 2000
    return c
