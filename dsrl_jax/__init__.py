"""dsrl_jax: difficulty-aware staged reinforcement learning for reasoning LLMs in JAX."""

__version__ = "0.1.0"
