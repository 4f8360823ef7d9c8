"""Export step N of a training run (running or finished) as a Hugging Face checkpoint.

    python -m dsrl_jax.export --workdir=RUN [--step=N] --out=DIR [--push_to_hub=OWNER/NAME]

RUN is a trainer workdir (local or a URL such as gs://bucket/run): its `model_config.json`
and the orbax checkpoint `checkpoints/<N>` (default: the latest complete one). Only the
parameters are read (not the optimizer state), and the checkpoint directory is opened
read-only, so exporting beside a running job does not disturb its saves. DIR (local or a
URL) gets config.json, safetensors, generation_config.json and the run's tokenizer (when
the run saved one under `tokenizer/`): what `transformers.AutoModelForCausalLM` and vLLM
load. `--push_to_hub` then uploads DIR to that hub model repository (created if needed;
needs a token, e.g. `huggingface-cli login`).
"""
from __future__ import annotations

import json

import jax
from absl import flags

from dsrl_jax import cli, paths
from dsrl_jax.checkpoint import Checkpointer
from dsrl_jax.models import hf, qwen2
from dsrl_jax.models.config import Qwen2Config


def export(workdir: str, out_dir: str, step: int | None = None, *, dtype: str | None = None,
           push_to_hub: str | None = None) -> int:
    """Write the HF directory of `step` (default: latest) of `workdir` to `out_dir`; returns
    the step. Raises cli.UsageError for a workdir without model config or checkpoint."""
    workdir = paths.normalize(workdir)
    model_config = paths.join(workdir, "model_config.json")
    if not paths.exists(model_config):
        raise cli.UsageError(f"{workdir} is not a training workdir (no model_config.json)")
    cfg = Qwen2Config.from_hf(json.loads(paths.read_text(model_config)))
    ckpt = Checkpointer(paths.join(workdir, "checkpoints"), read_only=True)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise cli.UsageError(f"{workdir}/checkpoints holds no complete checkpoint")
        step = steps[-1] if step is None else int(step)
        if step not in steps:
            raise cli.UsageError(f"no checkpoint of step {step} in {workdir}/checkpoints; steps: "
                                 f"{', '.join(map(str, steps))}")
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                              qwen2.abstract_params(cfg))
        params = ckpt.restore_subtree(step, "params", target)
    finally:
        ckpt.close()
    tokenizer_dir = paths.join(workdir, "tokenizer")
    hf.save_params(out_dir, cfg, params, dtype=dtype,
                   tokenizer_dir=tokenizer_dir if paths.exists(tokenizer_dir) else None)
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=push_to_hub, folder_path=paths.local_copy(out_dir),
                          commit_message=f"dsrl_jax export of step {step}")
    return step


def main(argv) -> None:
    del argv
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # orbax logs every step of a restore at INFO
    f = flags.FLAGS
    if not f.workdir or not f.out:
        raise cli.UsageError("--workdir and --out are required")
    step = export(f.workdir, f.out, f.step, dtype=f.dtype, push_to_hub=f.push_to_hub)
    where = f" and pushed to {f.push_to_hub}" if f.push_to_hub else ""
    print(f"exported step {step} of {f.workdir} to {f.out}{where}")


if __name__ == "__main__":  # flags defined here only: importing export() defines none
    flags.DEFINE_string("workdir", None, "Training workdir (local or gs://...).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest complete one).")
    flags.DEFINE_string("out", None, "Output directory for the HF checkpoint (local or gs://...).")
    flags.DEFINE_string("push_to_hub", None, "Also upload to this hub model repository (owner/name).")
    flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Weights' dtype (default: the run's parameter dtype).")
    cli.run(main)
