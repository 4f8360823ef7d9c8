"""Device mesh, logical-axis sharding rules, and multi-host initialisation.

Parameters carry logical axis names ("embed", "mlp", "q_heads", ...). A rule table maps
each logical name to a mesh axis (or a tuple of them, or None for replicated). The same
model code then runs on 1 CPU, 8 fake CPU devices, a TPU slice or a pod: only the mesh
shape and the rules change, and both live in the config.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dsrl_jax import defaults

MESH_AXES = ("data", "fsdp", "tensor")

# FSDP over the embedding dimension, tensor parallelism over heads / mlp / vocab
# (the table is dsrl_jax.defaults.SHARDING_RULES; lists become tuples here).
DEFAULT_RULES: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in defaults.SHARDING_RULES.items()}


def mesh_shape(shape: Mapping[str, int], num_devices: int | None = None) -> dict[str, int]:
    """Resolves one -1 entry so that the product equals the number of devices."""
    n = jax.device_count() if num_devices is None else num_devices
    shape = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    unknown = [a for a, s in shape.items() if s == -1]
    if len(unknown) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {dict(shape)}")
    known = math.prod(s for s in shape.values() if s != -1)
    if unknown:
        if n % known:
            raise ValueError(f"mesh: {n} devices do not divide by the fixed axes {dict(shape)}")
        shape[unknown[0]] = n // known
    if math.prod(shape.values()) != n:
        raise ValueError(f"mesh: shape {dict(shape)} needs {math.prod(shape.values())} devices, have {n}")
    return shape


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor); default: all devices on fsdp."""
    devices = list(jax.devices() if devices is None else devices)
    resolved = mesh_shape(shape or {"fsdp": -1}, len(devices))
    dims = tuple(resolved[a] for a in MESH_AXES)
    # Compiler-propagated sharding: jit in/out shardings decide, no sharding-in-types.
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == jax.device_count():
        return jax.make_mesh(dims, MESH_AXES, axis_types=axis_types, devices=devices)
    return Mesh(np.asarray(devices).reshape(dims), MESH_AXES, axis_types=axis_types)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Mapping[str, Any] | None = None) -> P:
    """PartitionSpec for one array. A dimension whose size the mapped mesh axes do not
    divide is replicated (e.g. 2 KV heads on a tensor axis of 4), and a mesh axis is used
    at most once per array."""
    rules = DEFAULT_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        target = rules.get(name) if name is not None else None
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        targets = tuple(a for a in targets if a not in used and mesh.shape.get(a, 1) > 1)
        if targets and size % math.prod(mesh.shape[a] for a in targets) == 0:
            used.update(targets)
            spec.append(targets[0] if len(targets) == 1 else targets)
        else:
            spec.append(None)
    return P(*spec)


def param_shardings(logical: Any, abstract: Any, mesh: Mesh, rules: Mapping[str, Any] | None = None) -> Any:
    """NamedSharding tree for a parameter tree, from its logical axes and shapes."""
    is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
    return jax.tree.map(
        lambda axes, a: NamedSharding(mesh, logical_to_spec(axes, a.shape, mesh, rules)),
        logical, abstract, is_leaf=is_axes,
    )


def batch_sharding(mesh: Mesh, ndim: int = 2, rules: Mapping[str, Any] | None = None) -> NamedSharding:
    """Sharding for [batch, ...] arrays: the batch over the data-parallel axes."""
    rules = DEFAULT_RULES if rules is None else rules
    target = rules["batch"]
    targets = (target,) if isinstance(target, str) else tuple(target)
    targets = tuple(a for a in targets if mesh.shape.get(a, 1) > 1) or None
    return NamedSharding(mesh, P(targets, *([None] * (ndim - 1))))


# (mesh, batch axes) while a `pinned` function traces; read by constrain_batch / per_batch_shard.
_PINNED: contextvars.ContextVar = contextvars.ContextVar("pinned_batch", default=None)


def pinned(fn, mesh: Mesh, batch_axes):
    """`fn`, tracing with activations' batch dimension pinned to `batch_axes` of `mesh`: the
    model's `constrain_batch` and `per_batch_shard` calls inside it use them. Wrap the
    function given to `jax.jit`, so every trace of that program is pinned (the step
    factories and the Sampler do), whoever calls it first."""
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        token = _PINNED.set((mesh, batch_axes))
        try:
            return fn(*args, **kwargs)
        finally:
            _PINNED.reset(token)

    return traced


def per_batch_shard(fn, args, specs, out_specs, *, heads: int | None = None):
    """Runs fn on each data-parallel shard's block of `args` (jax.shard_map over the batch
    axes of a `pinned` function's mesh; outside one, fn(*args)). `specs` /
    `out_specs`: per array, a tuple naming each dimension "batch", "heads" or None. "heads"
    splits over `tensor` when `heads` (the smallest head count) divides by it. For ops that
    XLA cannot partition by itself (gathers and scatters indexed per shard)."""
    ctx = _PINNED.get()
    if ctx is None:
        return fn(*args)
    mesh, batch = ctx
    tensor = mesh.shape.get("tensor", 1)
    head_axis = "tensor" if tensor > 1 and heads and heads % tensor == 0 else None
    to_spec = lambda names: P(*[batch if n == "batch" else head_axis if n == "heads" else None for n in names])
    tree = lambda t: jax.tree.map(to_spec, t, is_leaf=lambda x: isinstance(x, tuple) and all(
        n is None or isinstance(n, str) for n in x))
    return jax.shard_map(fn, mesh=mesh, in_specs=tree(specs), out_specs=tree(out_specs), check_vma=False)(*args)


def constrain_batch(x):
    """Pins x's leading (batch) dimension to the batch axes of the `pinned` function being
    traced. Without it, FSDP-sharded parameters can pull activations onto the embedding
    dimension with the batch replicated (every device computes every sequence). A no-op
    outside a pinned function or when the batch does not divide."""
    ctx = _PINNED.get()
    if ctx is None:
        return x
    mesh, batch = ctx
    n = math.prod(mesh.shape[a] for a in ((batch,) if isinstance(batch, str) else (batch or ())))
    if n <= 1 or x.shape[0] % n:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(batch, *([None] * (x.ndim - 1)))))


def data_parallel_size(mesh: Mesh, rules: Mapping[str, Any] | None = None) -> int:
    rules = DEFAULT_RULES if rules is None else rules
    target = rules["batch"]
    targets = (target,) if isinstance(target, str) else tuple(target)
    return math.prod(mesh.shape.get(a, 1) for a in targets)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def to_global(x, sharding: jax.sharding.Sharding) -> jax.Array:
    """A host array that every process holds in full -> a global array in `sharding`.
    (`jax.device_put` refuses a process-local value for devices of other processes; each
    process here hands over just the shards its own devices hold.)"""
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x) -> np.ndarray:
    """A (possibly multi-process) array in full on every host, as numpy."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize` for multi-host runs (TPU pods, multi-node GPU, or
    several CPU processes on one machine). Arguments fall back to the environment
    (DSRL_COORDINATOR, DSRL_NUM_PROCESSES, DSRL_PROCESS_ID); on TPU pods they may all be
    omitted. CPU processes use gloo collectives."""
    coordinator = coordinator or os.environ.get("DSRL_COORDINATOR")
    num_processes = num_processes or int(os.environ.get("DSRL_NUM_PROCESSES", "0") or 0) or None
    if process_id is None and os.environ.get("DSRL_PROCESS_ID"):
        process_id = int(os.environ["DSRL_PROCESS_ID"])
    if jax.config.jax_platforms and "cpu" in jax.config.jax_platforms:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
