"""Config validation before anything compiles: each error names the field to fix.

Checked: the mesh fits the devices and divides the batch; mini/micro batch sizes divide
each other and the data-parallel size; data files exist; reward, loss and curriculum
names are known. Runs in well under ten seconds. (Stage lengths are not yet checked
against the model's max_position_embeddings.)
"""

from __future__ import annotations

import os

import jax
import ml_collections

from dsrl_jax import parallel, paths
from dsrl_jax.rl import batch


class ConfigError(ValueError):
    """A config field is wrong; the message starts with the field's dotted name."""


def _fail(field: str, message: str):
    raise ConfigError(f"config.{field}: {message}")


def _check_loss_names(field: str, loss) -> None:
    """Names looked up in the loss registries: an unknown one fails with the choices."""
    from dsrl_jax.rl import grpo

    for key, registry in (("loss_agg", grpo.LOSS_AGGREGATIONS), ("kl_estimator", grpo.KL_ESTIMATORS),
                          ("adv_std_mode", grpo.ADVANTAGE_STD_MODES)):
        if key in loss and loss[key] not in registry:
            _fail(f"{field}.{key}", f"unknown {key} {loss[key]!r}; choices: {', '.join(sorted(registry))}")


def validate_config(c: ml_collections.ConfigDict, *, check_files: bool = True, num_devices: int | None = None) -> None:
    from dsrl_jax.rewards import validate_reward_config
    from dsrl_jax.rl import grpo
    from dsrl_jax.rl.curriculum import Curriculum

    n_dev = jax.device_count() if num_devices is None else num_devices
    try:
        shape = parallel.mesh_shape(c.mesh.to_dict(), n_dev)
    except ValueError as e:
        _fail("mesh", str(e))
    rules = c.sharding_rules.to_dict()
    unknown_axes = {a for v in rules.values() for a in ([v] if isinstance(v, str) else (v or [])) if a not in shape}
    if unknown_axes:
        _fail("sharding_rules", f"unknown mesh axes {sorted(unknown_axes)}; mesh axes are {list(shape)}")
    batch_axes = rules.get("batch", ())
    dp = 1
    for a in [batch_axes] if isinstance(batch_axes, str) else (batch_axes or []):
        dp *= shape[a]

    r, t = c.rollout, c.train
    if r.batch_prompts < 1 or r.group_size < 1:
        _fail("rollout.batch_prompts", "batch_prompts and group_size must be >= 1")
    try:
        batch.batch_plan(r.batch_prompts * r.group_size, t, dp)
    except batch.BatchPlanError as e:
        _fail(e.field, f"{e.message} (batch_prompts {r.batch_prompts} x group_size {r.group_size}, mesh {shape})")

    try:
        validate_reward_config(c.rewards.to_dict())
    except (ValueError, KeyError, TypeError) as e:
        _fail("rewards", str(e))
    _check_loss_names("loss", c.loss)
    try:
        grpo.validate_loss_config(c.loss)
    except (ValueError, AttributeError) as e:
        _fail("loss", str(e))
    try:
        curriculum = Curriculum(c.curriculum.stages)
    except (ValueError, TypeError, KeyError) as e:
        _fail("curriculum.stages", str(e))
    for i, stage in enumerate(c.curriculum.stages):
        loss = ml_collections.ConfigDict(c.loss.to_dict())
        for k, v in dict(stage.get("loss") or {}).items():
            if k not in loss:
                _fail(f"curriculum.stages[{i}].loss.{k}", f"unknown loss option; known: {sorted(loss)}")
            loss[k] = v
        _check_loss_names(f"curriculum.stages[{i}].loss", loss)
        try:
            grpo.validate_loss_config(loss)
        except ValueError as e:
            _fail(f"curriculum.stages[{i}].loss", str(e))
        for k in dict(stage.get("sampling") or {}):
            if k not in r:
                _fail(f"curriculum.stages[{i}].sampling.{k}", f"unknown sampling option; known: {sorted(r)}")
    del curriculum

    init = c.model.init
    if not init:
        _fail("model.init", "empty: give an HF directory, a hub id or preset:NAME")
    if init.startswith("preset:"):
        from dsrl_jax.models.config import PRESETS

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
