"""Rewards: math answers (Math-Verify), sandboxed code tests, a format check.

    from dsrl_jax.rewards import RewardPool, parse_reward_config
    with RewardPool(settings.rewards, num_workers=8) as pool:   # a plain-dict rewards block
        results = pool.score(responses, records)   # list[RewardResult]

Registry and combiner: registry.py. Built-in rewards: math.py ("math"), code.py ("code"),
format.py ("format"). Untrusted code runs in sandbox.py; batches run in pool.py.
"""
from dsrl_jax.rewards.registry import (  # noqa: F401
    DEFAULT_CONFIG,
    REWARDS,
    RewardResult,
    RewardSpec,
    import_modules,
    parse_reward_config,
    register,
    reward_settings,
    score_record,
    validate_reward_config,
)
from dsrl_jax.rewards import code, format, math  # noqa: F401,E402  (register built-ins)
from dsrl_jax.rewards.pool import RewardPool  # noqa: F401,E402
