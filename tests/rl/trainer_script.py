"""A small, real GRPO run for the kill-and-resume tests (tests/rl/test_trainer.py).

    python tests/rl/trainer_script.py WORKDIR [--steps 6] [--step_sleep 0.5] [--mesh data=2,fsdp=2,tensor=2]
                                      [--max_in_flight 3]

With DSRL_COORDINATOR / DSRL_NUM_PROCESSES / DSRL_PROCESS_ID set it joins a multi-process
run (`parallel.initialize_distributed`); XLA_FLAGS from the environment sets the number of
fake CPU devices of each process.

Builds a Trainer from configs/base.py with a tiny random Qwen2 over the demo's character
tokenizer, synthetic arithmetic records, two curriculum stages (the second masks truncated
responses and drops the entropy term) and async checkpoints every 2 steps, on 2 fake CPU
devices (mesh fsdp=2). Running the same command again resumes from the latest complete
checkpoint. At the end it writes WORKDIR/final_params.npz (every parameter, keyed by its
tree path) and prints `PARAMS_SHA256 <hash of all parameter bytes>`.

The reward is registered here ("digit_fraction": the fraction of digits in the response)
so that a random policy gets rewards that differ within a group, hence non-zero
advantages: the policy-gradient path is exercised, not only the KL/entropy terms. The
reward workers are spawned processes, which import this file as `__mp_main__` and so see
the registration too.
"""
import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dsrl_jax.rewards import RewardResult, register  # noqa: E402


@register("digit_fraction")
def digit_fraction(response: str, record: dict, **_) -> RewardResult:
    return RewardResult(sum(c.isdigit() for c in response) / max(len(response), 1), {})


def make_config(steps: int, mesh: dict | None = None, micro_batch: int = 2):
    from configs import base

    c = base.get_config()
    c.seed = 3
    c.total_steps = steps
    c.model.init = "preset:tiny"  # main() names the model it saves instead
    c.model.dtype = "float32"
    c.mesh.update(mesh or {"fsdp": 2})
    c.rollout.batch_prompts = 2
    c.rollout.group_size = 4
    c.rollout.cache_dtype = "float32"
    c.train.mini_batch_size = 4  # two updates per step (old log-probs, shuffled mini-batches)
    c.train.micro_batch_size = micro_batch  # two micro-batches per update (by default)
    c.optim.lr = 1e-3  # large enough that every step visibly moves the parameters
    c.rewards = {"math": [{"name": "digit_fraction", "weight": 1.0}]}
    c.reward_workers = 1
    c.checkpoint.every = 2
    c.checkpoint.keep = 10
    c.checkpoint.export_hf = False
    c.log.progress = False
    half = max(1, steps // 2)
    c.curriculum.stages = [
        dict(name="s1", max_response_len=8, max_prompt_len=256, end=dict(max_steps=half, plateau=None)),
        dict(name="s2", max_response_len=16, max_prompt_len=256, loss=dict(mask_truncated=True, entropy_coef=0.0)),
    ]
    return c


def main():
    import argparse
    import hashlib
    import time

    import jax
    import numpy as np

    from jax.experimental import multihost_utils

    from dsrl_jax.demo import save_model
    from dsrl_jax.demo.task import make_split
    from dsrl_jax.demo.tokenizer import CharTokenizer
    from dsrl_jax.models import qwen2
    from dsrl_jax.models.config import preset
    from dsrl_jax.rl.trainer import Trainer

    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--step_sleep", type=float, default=0.0, help="seconds to idle after each step")
    parser.add_argument("--mesh", default="fsdp=2", help="mesh axes, e.g. data=2,fsdp=2,tensor=2")
    parser.add_argument("--micro_batch", type=int, default=2, help="sequences per micro-batch")
    parser.add_argument("--max_in_flight", type=int, default=0, help="> 0: continuous batching with this many slots")
    args = parser.parse_args()
    from dsrl_jax import parallel

    if os.environ.get("DSRL_NUM_PROCESSES"):
        parallel.initialize_distributed()
    mesh = {k: int(v) for k, v in (item.split("=") for item in args.mesh.split(","))}

    tokenizer = CharTokenizer()
    cfg = preset("tiny", vocab_size=tokenizer.vocab_size, dtype="float32")
    inputs = args.workdir.rstrip("/") + "_inputs"  # the model and the problems, named in the config
    model_dir = save_model(os.path.join(inputs, "model"), cfg, qwen2.init_params(cfg, 0), tokenizer)
    if jax.process_index() == 0:
        with open(os.path.join(inputs, "problems.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in make_split(16, seed=0, difficulties=(1, 2)))
    multihost_utils.sync_global_devices("trainer inputs written")  # process 0 wrote them
    config = make_config(args.steps, mesh, args.micro_batch)
    config.model.update(init=model_dir, remat="none")
    config.data.sources = [{"path": os.path.join(inputs, "problems.jsonl")}]
    config.rollout.max_in_flight = args.max_in_flight
    trainer = Trainer(config, args.workdir)
    on_step = (lambda t, step, m: (print(f"STEP {step}", flush=True), time.sleep(args.step_sleep)))
    try:
        trainer.run(on_step=on_step)
    finally:
        trainer.close()
    flat = jax.tree_util.tree_flatten_with_path(jax.tree.map(parallel.to_host, trainer.state["params"]))[0]
    arrays = {jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}
    if jax.process_index() == 0:
        np.savez(os.path.join(args.workdir, "final_params.npz"), **arrays)
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(arrays[name].tobytes())
    print(f"FINAL_STEP {int(trainer.state['step'])}")
    print(f"PARAMS_SHA256 {digest.hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
