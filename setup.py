"""dsrl_jax: difficulty-aware staged RL for reasoning LLMs, in JAX."""
from setuptools import find_packages, setup

setup(
    name="dsrl_jax",
    version="0.1.0",
    description="Difficulty-aware staged reinforcement learning (arXiv 2504.00829) in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["dsrl_jax", "dsrl_jax.*"]),
    install_requires=[
        # JAX and Flax move fast; this is the pair the project is tested with.
        "jax==0.10.2",
        "flax==0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18",
        "transformers>=5.0,<6",
        "safetensors>=0.5",
        "ml_dtypes",  # bf16 safetensors without torch
        "huggingface_hub",
        "sympy",
        "math-verify[antlr4_13_2]>=0.9.0",
        "ml-collections>=1.1",
        "absl-py",
        "tqdm",
        "numpy",
        "tensorboardX",
    ],
    extras_require={
        "tpu": ["jax[tpu]==0.10.2"],
        "cuda": ["jax[cuda12]==0.10.2"],
        "test": [
            "pytest>=8",
            "pytest-xdist",
            "torch==2.13.0",  # CPU build; only the tests need it (transformers parity)
            "nbclient",
            "nbformat",
            "ipykernel",
            "matplotlib",
        ],
        "colab": ["matplotlib", "pandas"],
    },
)
