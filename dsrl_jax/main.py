"""Train a policy with GRPO through the configured curriculum.

    python -m dsrl_jax.main --config=configs/stage2.py --workdir=/path/or/gs://...
    python -m dsrl_jax.main --config=configs/demo.py          # CPU demo, minutes, no downloads
    python -m dsrl_jax.main --config=configs/stage1.py --config.loss.kl_coef=0

Running the same command again resumes from the latest complete checkpoint in --workdir.
"""

from __future__ import annotations

import os
import sys

# configs/*.py import `configs.base`: make the config file's project root importable.
for _arg in sys.argv:
    if _arg.startswith("--config="):
        _root = os.path.dirname(os.path.dirname(os.path.abspath(_arg.split("=", 1)[1].split(":")[0])))
        if _root not in sys.path:
            sys.path.insert(0, _root)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, TensorBoard). Default: runs/<config name>.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize (TPU pods, multi-node GPU).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax and XLA log every checkpoint at INFO
    config = _CONFIG.value
    if config is None:
        sys.exit("error: --config is required (e.g. --config=configs/demo.py)")
    if FLAGS.multihost:
        from dsrl_jax import parallel

        parallel.initialize_distributed()
    workdir = FLAGS.workdir or os.path.join("runs", os.path.splitext(os.path.basename(FLAGS["config"].config_filename))[0])
    from dsrl_jax.validate import ConfigError, validate_config

    if config.get("task") == "demo":
        from dsrl_jax.demo.run import run_demo

        run_demo(config, workdir)
        return
    try:
        validate_config(config)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    from dsrl_jax.rl.trainer import Trainer

    trainer = Trainer(config, workdir)
    try:
        trainer.run()
        if config.checkpoint.export_hf and trainer.policy.model_dir:
            print(f"exported Hugging Face checkpoint to {trainer.export_hf()}")
    finally:
        trainer.close()


if __name__ == "__main__":
    app.run(main)
