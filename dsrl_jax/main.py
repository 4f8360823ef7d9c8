"""Train a policy with GRPO through the configured curriculum.

    python -m dsrl_jax.main --config=configs/stage2.py --workdir=/path/or/gs://...
    python -m dsrl_jax.main --config=configs/demo.py          # CPU demo, minutes, no downloads
    python -m dsrl_jax.main --config=configs/stage1.py --config.loss.kl_coef=0
    python -m dsrl_jax.main --config=stage1 ...               # a packaged config, by name

Running the same command again resumes from the latest complete checkpoint in --workdir.
On a TPU pod, run the same command on every worker with --multihost.

A config runs `train` below (one `Trainer`), unless it names another entry function in
`recipe` ("module:function", called as function(config, workdir)): a multi-phase recipe
such as the CPU demo's (configs/demo.py), whose phases are public entry points themselves.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

from absl import flags, logging
from ml_collections import config_flags

from dsrl_jax import cli, parallel, paths
from dsrl_jax.rl.trainer import Trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (or a packaged config's name).",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory, local or a URL such as gs://bucket/run (checkpoints, "
                    "metrics, TensorBoard). Default: runs/<config name>.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize (TPU pods, multi-node GPU): pass it on "
                  "every host.")
FLAGS = flags.FLAGS


def train(config, workdir: str) -> None:
    """GRPO through the config's curriculum in `workdir`; exports an HF checkpoint at the end
    when `checkpoint.export_hf` is set."""
    trainer = Trainer(config, workdir)  # validates (and parses) the config before loading anything
    try:
        trainer.run()
        if config.checkpoint.export_hf and trainer.policy.model_dir:
            print(f"exported Hugging Face checkpoint to {trainer.export_hf()}")
    finally:
        trainer.close()


def recipe(name: str) -> Callable:
    """The entry function a config's `recipe` names ("package.module:function")."""
    module, sep, function = name.partition(":")
    if not (sep and module and function):
        raise cli.UsageError(f"config.recipe: {name!r} is not 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), function, None)
    except ImportError as e:
        raise cli.UsageError(f"config.recipe: cannot import {module!r} ({e})") from None
    if not callable(fn):
        raise cli.UsageError(f"config.recipe: {module!r} has no function {function!r}")
    return fn


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax and XLA log every checkpoint at INFO
    config = _CONFIG.value
    if config is None:
        raise cli.UsageError("--config is required (e.g. --config=configs/demo.py)")
    if FLAGS.multihost:
        parallel.initialize_distributed()
    name = os.path.splitext(os.path.basename(FLAGS["config"].config_filename.partition(":")[0]))[0]
    workdir = paths.normalize(FLAGS.workdir or os.path.join("runs", name))
    run = recipe(config.recipe) if config.get("recipe") else train
    run(config, workdir)


if __name__ == "__main__":
    cli.run(main)
