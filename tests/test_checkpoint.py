"""Checkpointer: sharded round trip, retention, async, and resume after a killed save."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dsrl_jax.checkpoint import Checkpointer, abstract_like

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # how orbax 0.12 names a step being written


@pytest.fixture
def mesh():
    assert jax.device_count() == 8
    return jax.make_mesh((4, 2), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def make_state(mesh, seed=0):
    k = jax.random.PRNGKey(seed)
    w = jax.random.normal(k, (8, 16))
    return {
        "params": {"w": jax.device_put(w, NamedSharding(mesh, P("data", "model"))),
                   "b": jax.device_put(jnp.arange(16.0) + seed, NamedSharding(mesh, P("model")))},
        "opt": {"mu": jax.device_put(jnp.ones((8, 16), jnp.bfloat16) * seed,
                                     NamedSharding(mesh, P(None, "data")))},
        "step": jnp.array(seed, jnp.int32),
        "rng": jax.random.PRNGKey(seed + 100),
    }


def assert_tree_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def save_steps(ckpt, mesh, steps):
    for s in steps:
        ckpt.save(s, make_state(mesh, s), {"data": {"epoch": 0, "index": s}, "stage": 1})
    ckpt.wait()


def test_sharded_round_trip_into_target_shardings(mesh, tmp_path):
    state = make_state(mesh, seed=3)
    extra = {"data_iter": {"pos": 17, "files": ["a", "b"]}, "curriculum": {"stage": 2},
             "ratio": 0.5}
    with Checkpointer(tmp_path / "ck") as ckpt:
        assert ckpt.save(3, state, extra)
        ckpt.wait()
        # Restore into different shardings than saved: arrays must land in the target's.
        target = abstract_like(state)
        new_w = NamedSharding(mesh, P("model", "data"))
        target["params"]["w"] = jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=new_w)
        restored, restored_extra = ckpt.restore(target=target)
    assert_tree_equal(restored, state)
    assert restored["params"]["w"].sharding == new_w
    assert restored["opt"]["mu"].sharding == state["opt"]["mu"].sharding
    assert restored["opt"]["mu"].dtype == jnp.bfloat16
    assert restored_extra == extra


def test_keep_last_n(mesh, tmp_path):
    with Checkpointer(tmp_path, keep=2) as ckpt:
        save_steps(ckpt, mesh, [10, 20, 30])
        assert ckpt.all_steps() == [20, 30]
        assert ckpt.latest_step() == 30
        state, extra = ckpt.restore(20, target=abstract_like(make_state(mesh)))
    assert int(state["step"]) == 20 and extra["data"]["index"] == 20
    assert sorted(os.listdir(tmp_path)) == ["20", "30"]


def test_async_save_then_wait(mesh, tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=True)
    state = make_state(mesh, 5)
    ckpt.save(5, state, {"x": 1})
    ckpt.wait()
    assert (tmp_path / "5" / "state").is_dir() and not list(tmp_path.glob(f"*{TMP_SUFFIX}*"))
    ckpt.close()
    # A fresh Checkpointer (a resumed run) sees it.
    restored, extra = Checkpointer(tmp_path).restore(target=abstract_like(state))
    assert_tree_equal(restored, state) and extra == {"x": 1}


def test_restore_without_checkpoint_returns_none(tmp_path):
    ckpt = Checkpointer(tmp_path / "empty")
    assert ckpt.latest_step() is None
    assert ckpt.restore() is None
    ckpt.close()


def test_interval_and_force(mesh, tmp_path):
    with Checkpointer(tmp_path, save_interval_steps=10) as ckpt:
        assert ckpt.save(10, make_state(mesh, 1))
        assert not ckpt.save(15, make_state(mesh, 1))
        assert ckpt.save(17, make_state(mesh, 1), force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [10, 17]


def test_incomplete_tmp_dir_of_higher_step_is_ignored(mesh, tmp_path):
    with Checkpointer(tmp_path, keep=5) as ckpt:
        save_steps(ckpt, mesh, [1, 2])
    # What a kill mid-save of step 3 leaves: the step written under its tmp name,
    # never renamed (and so without the commit marker).
    partial = tmp_path / f"3{TMP_SUFFIX}"
    shutil.copytree(tmp_path / "2", partial)
    (partial / "commit_success.txt").unlink(missing_ok=True)
    ckpt = Checkpointer(tmp_path, keep=5)
    assert ckpt.latest_step() == 2
    state, extra = ckpt.restore(target=abstract_like(make_state(mesh)))
    assert int(state["step"]) == 2 and extra["data"]["index"] == 2
    # Resuming saves step 3 cleanly; the leftover is gone by then (orbax deletes tmp
    # dirs in the background on open and awaits that before the first save).
    ckpt.save(3, make_state(mesh, 3), {"data": {"index": 3}})
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2, 3] and not partial.exists()
    ckpt.close()


KILLED_SAVE = textwrap.dedent("""
    import os, sys
    import jax.numpy as jnp
    from dsrl_jax.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, {"w": jnp.full((4,), 1.0)}, {"step": 1})
    ckpt.wait()
    ckpt.save(2, {"w": jnp.full((32, 1024, 1024), 2.0)}, {"step": 2})  # 128 MiB, async
    os._exit(0)  # killed while the background write is in flight
""")


def test_process_killed_mid_save_resumes_from_last_complete(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
    leftovers = [p.name for p in tmp_path.iterdir() if TMP_SUFFIX in p.name]
    ckpt = Checkpointer(tmp_path)
    if leftovers:  # the usual case: the kill beat the 128 MiB write
        assert leftovers == [f"2{TMP_SUFFIX}"]
        assert ckpt.latest_step() == 1
        state, extra = ckpt.restore()
        assert extra == {"step": 1} and float(state["w"][0]) == 1.0
    else:  # the write won the race: then step 2 must be whole
        state, extra = ckpt.restore()
        assert extra == {"step": 2} and float(state["w"].min()) == 2.0
    ckpt.close()
