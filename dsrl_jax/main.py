"""Train a policy with GRPO through the configured curriculum.

    python -m dsrl_jax.main --config=configs/stage2.py --workdir=/path/or/gs://...
    python -m dsrl_jax.main --config=configs/demo.py          # CPU demo, minutes, no downloads
    python -m dsrl_jax.main --config=configs/stage1.py --config.loss.kl_coef=0
    python -m dsrl_jax.main --config=stage1 ...               # a packaged config, by name

Running the same command again resumes from the latest complete checkpoint in --workdir.
On a TPU pod, run the same command on every worker with --multihost.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from dsrl_jax import cli, paths

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (or a packaged config's name).",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory, local or a URL such as gs://bucket/run (checkpoints, "
                    "metrics, TensorBoard). Default: runs/<config name>.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize (TPU pods, multi-node GPU): pass it on "
                  "every host.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax and XLA log every checkpoint at INFO
    config = _CONFIG.value
    if config is None:
        raise cli.UsageError("--config is required (e.g. --config=configs/demo.py)")
    if FLAGS.multihost:
        from dsrl_jax import parallel

        parallel.initialize_distributed()
    name = os.path.splitext(os.path.basename(FLAGS["config"].config_filename.partition(":")[0]))[0]
    workdir = paths.normalize(FLAGS.workdir or os.path.join("runs", name))
    from dsrl_jax.validate import validate_config

    if config.get("task") == "demo":
        from dsrl_jax.demo.run import run_demo

        run_demo(config, workdir)
        return
    validate_config(config)
    from dsrl_jax.rl.trainer import Trainer

    trainer = Trainer(config, workdir)
    try:
        trainer.run()
        if config.checkpoint.export_hf and trainer.policy.model_dir:
            print(f"exported Hugging Face checkpoint to {trainer.export_hf()}")
    finally:
        trainer.close()


if __name__ == "__main__":
    cli.run(main)
