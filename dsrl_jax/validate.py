"""Config validation before anything compiles: each error names the field to fix.

Checked: the mesh fits the devices and divides the batch; mini/micro batch sizes divide
each other and the data-parallel size; data files exist; reward, loss and curriculum
names are known; loss.max_response_len agrees with each stage's. Runs in well under ten
seconds. (Stage lengths are not yet checked against the model's max_position_embeddings.)

`validate_config` returns the parsed `settings.Settings`: the one conversion of the
ConfigDict (settings.from_config), which the trainer then reads.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from dsrl_jax import parallel, paths, settings
from dsrl_jax.models.config import PRESETS
from dsrl_jax.rewards import validate_reward_config
from dsrl_jax.rl import batch, grpo


class ConfigError(ValueError):
    """A config field is wrong; the message starts with the field's dotted name."""


def _fail(field: str, message: str):
    raise ConfigError(f"config.{field}: {message}")


def _check_loss_names(field: str, loss) -> None:
    """Names looked up in the loss registries: an unknown one fails with the choices."""
    for key, registry in (("loss_agg", grpo.LOSS_AGGREGATIONS), ("kl_estimator", grpo.KL_ESTIMATORS),
                          ("adv_std_mode", grpo.ADVANTAGE_STD_MODES)):
        if key in loss and loss[key] not in registry:
            _fail(f"{field}.{key}", f"unknown {key} {loss[key]!r}; choices: {', '.join(sorted(registry))}")


def validate_config(c: ml_collections.ConfigDict, *, check_files: bool = True,
                    num_devices: int | None = None) -> settings.Settings:
    """Raise ConfigError naming the first bad field; return the config's Settings."""
    try:
        s = settings.from_config(c)  # the one conversion; its errors start with the field
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    n_dev = jax.device_count() if num_devices is None else num_devices
    try:
        shape = parallel.mesh_shape(s.mesh, n_dev)
    except ValueError as e:
        _fail("mesh", str(e))
    rules = s.sharding_rules
    unknown_axes = {a for v in rules.values() for a in ([v] if isinstance(v, str) else (v or [])) if a not in shape}
    if unknown_axes:
        _fail("sharding_rules", f"unknown mesh axes {sorted(unknown_axes)}; mesh axes are {list(shape)}")
    batch_axes = rules.get("batch", ())
    dp = 1
    for a in [batch_axes] if isinstance(batch_axes, str) else (batch_axes or []):
        dp *= shape[a]

    r, t = s.rollout, c.train
    if r.batch_prompts < 1 or r.group_size < 1:
        _fail("rollout.batch_prompts", "batch_prompts and group_size must be >= 1")
    try:
        batch.batch_plan(r.batch_prompts * r.group_size, t, dp)
    except batch.BatchPlanError as e:
        _fail(e.field, f"{e.message} (batch_prompts {r.batch_prompts} x group_size {r.group_size}, mesh {shape})")

    try:
        validate_reward_config(s.rewards)
    except (ValueError, KeyError, TypeError) as e:
        _fail("rewards", str(e))
    _check_loss_names("loss", dataclasses.asdict(s.loss))
    for i, stage in enumerate(s.stages):
        where = f"curriculum.stages[{i}]"
        field = f"{where}.loss" if stage.loss else "loss"  # where a bad value comes from
        try:
            settings.stage_rollout(s, stage)  # unknown sampling options
            loss = settings.stage_loss(s, stage)  # unknown options; max_response_len != the stage's
        except ValueError as e:  # "loss.<key>: ..." / "sampling.<key>: ..."
            key, _, message = str(e).partition(": ")
            if key == "loss.max_response_len" and "max_response_len" not in stage.loss:
                _fail(key, f"{message} (in {where}, {stage.name})")
            _fail(f"{where}.{key}", message)
        _check_loss_names(f"{where}.loss", stage.loss)  # the stage's own; the run's are checked above
        try:
            grpo.validate_loss_config(loss)
        except ValueError as e:
            _fail(field, str(e))

    init = c.model.init
    if not init:
        _fail("model.init", "empty: give an HF directory, a hub id or preset:NAME")
    if init.startswith("preset:"):
        if init[7:] not in PRESETS:
            _fail("model.init", f"unknown preset {init[7:]!r}; known: {sorted(PRESETS)}")
    elif check_files and paths.is_url(init):
        try:
            found = paths.isdir(init)
        except ImportError as e:  # the URL's filesystem package (gcsfs for gs://)
            _fail("model.init", f"{init!r}: {e} (pip install -e '.[gcs]')")
        if not found:
            _fail("model.init", f"{init!r}: no such directory")
    elif check_files and (init.startswith((".", "/")) or os.path.exists(init)) and not os.path.isdir(init):
        _fail("model.init", f"{init!r} is not a directory")
    if check_files:
        if not c.data.sources:
            _fail("data.sources", "no data sources")
        for i, src in enumerate(c.data.sources):
            path = src.get("path")
            if path and not os.path.exists(path):
                _fail(f"data.sources[{i}].path", f"file not found: {path}")
            if not path and not src.get("hub"):
                _fail(f"data.sources[{i}]", "needs a path or a hub dataset id")
    if c.checkpoint.every < 1:
        _fail("checkpoint.every", "must be >= 1")
    return s
