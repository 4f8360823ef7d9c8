"""One process of the multi-host test: a sharded GRPO train step of the tiny model.

    python tests/multihost_worker.py --process_id=0 --num_processes=2 --port=PORT --out=res0.json

Each process holds `8 / num_processes` fake CPU devices, joins the others with
`jax.distributed.initialize` (gloo collectives), builds the global batch from *its own rows
only* (`jax.make_array_from_process_local_data`, as a per-process data loader would) and
runs one update. It writes the loss and a fingerprint of the updated parameters. The test
imports `run_step` to compute the same step in one process with 8 devices.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

TOTAL_DEVICES = 8
# jax (and the project, which imports it) is imported inside the functions: as a script,
# main() must first set this process's XLA_FLAGS and JAX_PLATFORMS, which jax reads when
# it is imported and initialised.


def global_batch(num_micro=2, micro=8, plen=8, mlen=16, vocab=512, seed=0):
    """The whole batch as numpy (deterministic); each process keeps only its rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n, t = num_micro * micro, plen + mlen
    tokens = rng.integers(1, vocab, (n, t), dtype=np.int32)
    kv_mask = np.ones((n, t), bool)
    prompt_lens = rng.integers(2, plen + 1, n)
    resp_lens = rng.integers(1, mlen + 1, n)
    loss_mask = np.zeros((n, mlen), np.float32)
    for i in range(n):
        kv_mask[i, : plen - prompt_lens[i]] = False
        kv_mask[i, plen + resp_lens[i]:] = False
        loss_mask[i, : resp_lens[i]] = 1.0
    batch = {"tokens": tokens, "kv_mask": kv_mask, "loss_mask": loss_mask,
             "truncated": resp_lens == mlen, "advantages": rng.normal(size=n).astype(np.float32)}
    batch = {k: v.reshape(num_micro, micro, *v.shape[1:]) for k, v in batch.items()}
    return batch, plen


def local_rows(sharding, global_shape, dim=1):
    """The [start, stop) range of `dim` held by this process's devices."""
    idx = sharding.addressable_devices_indices_map(global_shape).values()
    starts = [i[dim].start or 0 for i in idx]
    stops = [global_shape[dim] if i[dim].stop is None else i[dim].stop for i in idx]
    return min(starts), max(stops)


def to_global(batch, shardings):
    """Global arrays from each process's own slice of the batch dimension."""
    import jax

    def one(x, s):
        if x.ndim < 2:  # scalars (normalizer): every process has the same value
            return jax.make_array_from_process_local_data(s, x, x.shape)
        lo, hi = local_rows(s, x.shape)
        return jax.make_array_from_process_local_data(s, x[:, lo:hi], x.shape)

    return jax.tree.map(one, batch, shardings)


def run_step() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    from dsrl_jax import parallel
    from dsrl_jax.models import qwen2
    from dsrl_jax.models.config import preset
    from dsrl_jax.rl import grpo, update
    from dsrl_jax.rl.batch import TrainBatch
    from configs import base

    cfg = preset("tiny", dtype="float32", remat="full", attention_impl="blockwise", attention_block_size=8)
    mesh = parallel.make_mesh({"data": 2, "fsdp": -1})
    shardings = parallel.param_shardings(qwen2.logical_axes(cfg), qwen2.abstract_params(cfg), mesh)
    params = jax.jit(lambda: qwen2.init_params(cfg, 0), out_shardings=shardings)()
    c = base.get_config()
    c.optim.lr = 1e-3
    tx, _ = update.make_optimizer(c.optim)
    # Built under jit so every leaf is a global array: device_put of a process-local value
    # onto a sharding spanning other processes' devices is refused in multi-process JAX.
    rep = parallel.replicated(mesh)
    state = {"params": params, "opt_state": jax.jit(tx.init)(params),
             "step": jax.jit(lambda: jnp.zeros((), jnp.int32), out_shardings=rep)(),
             "rng": jax.jit(lambda: jax.random.key(0), out_shardings=rep)()}
    state_sh = update.state_shardings(state, mesh)
    state = jax.device_put(state, state_sh)
    loss_cfg = grpo.default_loss_config()
    loss_cfg.kl_coef = 0.0

    batch, plen = global_batch()
    flat = batch["loss_mask"].reshape(-1, batch["loss_mask"].shape[-1])
    normalizer = np.asarray(grpo.loss_normalizer(flat, batch["truncated"].reshape(-1), loss_cfg), np.float32)
    batch = TrainBatch(**batch, normalizer=normalizer)
    batch_axes = parallel.batch_sharding(mesh, 1).spec[0]
    batch_sh = update.batch_shardings(mesh, batch_axes, batch)
    step = update.make_train_step(cfg, loss_cfg, tx, state_sh, batch_sh, plen, 8)
    new_state, metrics = step(state, to_global(batch, batch_sh))
    full = multihost_utils.process_allgather(new_state["params"], tiled=True)
    leaves = [np.asarray(x, np.float32) for x in jax.tree.leaves(full)]
    digest = hashlib.sha256(b"".join(x.tobytes() for x in leaves)).hexdigest()
    return {"loss": float(np.asarray(metrics["loss"])), "grad_norm": float(np.asarray(metrics["grad_norm"])),
            "param_sums": [float(np.abs(x).sum()) for x in leaves], "params_sha256": digest,
            "processes": jax.process_count(), "devices": jax.device_count()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--process_id", type=int, required=True)
    ap.add_argument("--num_processes", type=int, default=2)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={TOTAL_DEVICES // a.num_processes}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax

    from dsrl_jax import parallel

    parallel.initialize_distributed(f"127.0.0.1:{a.port}", a.num_processes, a.process_id)
    assert jax.process_count() == a.num_processes and jax.device_count() == TOTAL_DEVICES
    result = run_step()
    if a.process_id == 0:
        with open(a.out, "w") as f:
            json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
