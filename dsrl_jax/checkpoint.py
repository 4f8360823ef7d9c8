"""Checkpoints: a thin wrapper over orbax's CheckpointManager.

A checkpoint holds two items under `<directory>/<step>/`:
  state  a pytree of (possibly sharded) jax arrays: params, optimizer state, step, RNG key
         (raw uint32 or typed `jax.random.key`, both round-trip)
  extra  a JSON-able dict: data-iterator state, curriculum state, anything small.

Why orbax does the hard parts: each step is written to `<step>.orbax-checkpoint-tmp`
and renamed to `<step>` only once every array and the JSON are on disk (on object stores,
where renames are not atomic, a `commit_success.txt` marks completion). A run killed
mid-save therefore leaves a tmp directory that `latest_step`/`restore` never see, and
`cleanup_tmp_directories=True` deletes it in the background when the next run opens the
directory (orbax 0.12.8 awaits that deletion before its first save). Arrays
are restored straight into the shardings of the `target` (an abstract pytree of
`jax.ShapeDtypeStruct(shape, dtype, sharding=...)`), so a 1.5B-parameter state never
passes through one host's memory.

Saving is asynchronous by default: `save` returns once the arrays are copied off device
and writes in a background thread; call `wait()` before reading the files or exiting.
"""
from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

_STATE, _EXTRA = "state", "extra"


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs carrying each array's sharding: a restore target from live state."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
        tree)


class Checkpointer:
    """Keeps the last `keep` checkpoints of a run in `directory` (local path or gs://...)."""

    def __init__(self, directory: str, keep: int | None = 3, async_save: bool = True,
                 save_interval_steps: int = 1, read_only: bool = False):
        """`read_only=True` for readers beside a running job (evaluation, export): nothing
        is created or cleaned up, so the writer's in-flight save is left alone."""
        path = epath.Path(directory)
        if "://" not in str(directory):
            path = path.expanduser().resolve()  # orbax wants absolute paths
        self.directory = path
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,  # remove what a killed save left behind
            create=not read_only,
            read_only=read_only,
        )
        self._manager = ocp.CheckpointManager(path, options=options,
                                              item_names=(_STATE, _EXTRA))

    def save(self, step: int, state: Any, extra: dict | None = None, *,
             force: bool = False) -> bool:
        """Start saving `state` and `extra` as `step`; False if skipped by the interval.

        `force=True` saves regardless of `save_interval_steps` (e.g. at the end of a
        stage or on preemption). Returns before the write completes when async.
        """
        args = ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(state),
            _EXTRA: ocp.args.JsonSave(dict(extra or {})),
        })
        return self._manager.save(int(step), args=args, force=force)

    def latest_step(self) -> int | None:
        """The newest COMPLETE checkpoint's step (tmp dirs of unfinished saves excluded)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, step: int | None = None, target: Any = None):
        """(state, extra) of `step` (default: latest complete), or None if there is none.

        `target`: abstract pytree (see `abstract_like`) whose shardings the arrays are
        loaded into; None restores with the shardings recorded at save time, which needs
        the same device topology.
        """
        self.wait()
        self._manager.reload()  # see steps written by another process/manager since init
        step = self.latest_step() if step is None else int(step)
        if step is None:
            return None
        args = ocp.args.Composite(**{
            _STATE: ocp.args.StandardRestore(target),
            _EXTRA: ocp.args.JsonRestore(),
        })
        restored = self._manager.restore(step, args=args)
        return restored[_STATE], dict(restored[_EXTRA] or {})

    def restore_subtree(self, step: int, key: str, target: Any) -> Any:
        """Only `state[key]` of checkpoint `step` (e.g. the params without the optimizer
        state), into the shardings of `target` (an abstract pytree, see `abstract_like`)."""
        self.wait()
        args = ocp.args.PyTreeRestore(item={key: target}, partial_restore=True,
                                      restore_args=ocp.checkpoint_utils.construct_restore_args({key: target}))
        with ocp.PyTreeCheckpointer() as reader:
            return reader.restore(self.directory / str(int(step)) / _STATE, args=args)[key]

    def wait(self) -> None:
        """Block until any in-flight async save has committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release orbax's threads."""
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
