"""Test setup: 8 fake CPU devices (set before JAX is imported) and paths to ../shared."""
import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("DSRL_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> pathlib.Path:
    """A path under ../shared, or skip the calling test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data beside the checkout), which is absent")
    return path


@pytest.fixture
def r1_tokenizer_dir():
    return shared_path("tokenizers", "deepseek-r1-distill-qwen-1.5b")


@pytest.fixture
def qwen_tokenizer_dir():
    return shared_path("tokenizers", "qwen2.5-instruct")
