"""The GRPO trainer: rollout -> rewards -> advantages -> sharded updates, stage by stage.

    Trainer(config, workdir).run()

One step, as in the paper's method:
  1. take a batch of prompts from the current stage's pipeline (levels, domains, mixture);
  2. sample `group_size` completions per prompt with the jitted sampler, from the device
     arrays the update trains (no host round-trip of parameters; with continuous batching
     converted on device into the sampling layout first), through `dsrl_jax.policy.rollout`,
     the path scoring and evaluation use too;
  3. grade them in reward worker processes (each process grades its share of the rows), each
     row submitted as it finishes, so grading overlaps decoding; then wait for the rewards;
  4. group-relative advantages; optionally drop all-equal groups and refill (dynamic sampling);
     one `rl.batch.TrainBatch`, plus old / reference log-probs when the loss needs them;
  5. mini-batch updates with micro-batch gradient accumulation (rl/batch.py's plan, rl/update.py);
  6. log metrics, let the curriculum decide whether the stage ends, checkpoint.
Killing the process and running the same command resumes from the latest complete
checkpoint and continues bit-for-bit (RNG, data order and curriculum state are saved).
"""

from __future__ import annotations

import json
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from dsrl_jax import parallel, paths
from dsrl_jax import policy as policy_lib
from dsrl_jax.checkpoint import Checkpointer, abstract_like
from dsrl_jax.data import decontaminate
from dsrl_jax.data.pipeline import PromptPipeline
from dsrl_jax.data.sources import load_sources
from dsrl_jax.evaluate import evaluate_policy, metrics_for_logging
from dsrl_jax.metrics import MetricsWriter, Timer
from dsrl_jax.models import hf
from dsrl_jax.policy import load_policy
from dsrl_jax.rewards import RewardPool
from dsrl_jax.rl import batch as batch_lib
from dsrl_jax.rl import rollout, update
from dsrl_jax.rl.curriculum import Curriculum, continue_from
from dsrl_jax.sampling import SampleOptions, Sampler
from dsrl_jax.settings import Stage, stage_loss, stage_rollout
from dsrl_jax.validate import validate_config


class Trainer:
    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        """The run `config` describes in `workdir`: its policy is the spec `config.model.init`
        names and its problems are `config.data.sources`. The config is validated and parsed
        once (`self.settings`, a settings.Settings); the trainer reads the parsed values."""
        self.settings = s = validate_config(config)
        self.config, self.workdir = config, paths.normalize(workdir)  # local or a URL (gs://...)
        paths.makedirs(self.workdir)
        self.rules = s.sharding_rules
        self.mesh = parallel.make_mesh(s.mesh)
        m = config.model
        policy = load_policy(m.init, self.mesh, self.rules, tokenizer=m.tokenizer or None,
                             prompt_mode=s.data.prompt_mode, plain_template=s.data.plain_template,
                             dtype=m.dtype, param_dtype=m.param_dtype, scan_layers=m.scan_layers, remat=m.remat,
                             attention_impl=m.attention_impl)
        self.policy, self.cfg, self.tokenizer = policy, policy.cfg, policy.tokenizer
        params = policy.params
        self.records = self._load_records()
        self.curriculum = Curriculum(s.stages)
        self.tx, self.schedule = update.make_optimizer(config.optim)
        state = update.init_state(params, self.tx, jax.random.key(s.seed))
        self.state_shardings = update.state_shardings(state, self.mesh)
        self.state = jax.device_put(state, self.state_shardings)
        self.ref_params = None
        if any(stage_loss(s, stage).kl_coef for stage in s.stages):
            self.ref_params = jax.tree.map(jnp.copy, params)  # the frozen reference policy
        self.sampler = Sampler(self.cfg, self.mesh, self.rules)
        self.checkpointer = Checkpointer(paths.join(self.workdir, "checkpoints"), keep=config.checkpoint.keep,
                                         async_save=config.checkpoint.async_save)
        self.pipeline = None
        self._programs: dict = {}  # the jitted update and log-prob programs, by what shapes them
        resumed = self._maybe_resume()
        self._saved_step = resumed
        self._write_run_files()
        # The checkpoint of step s is taken after step s's metrics were written: keep them,
        # drop the lines of steps after s that the killed run wrote (they are redone).
        self.metrics = MetricsWriter(self.workdir, config.log.tensorboard,
                                     resume_step=None if resumed is None else resumed + 1,
                                     is_primary=jax.process_index() == 0,
                                     wandb=config.log.wandb.to_dict() if "wandb" in config.log else None,
                                     run_config=config.to_dict())
        self.pool = RewardPool(s.rewards, num_workers=s.reward_workers, timeout_s=s.reward_timeout_s or None)

    # -- setup -----------------------------------------------------------------------------
    def _load_records(self):
        records, reports = load_sources(self.settings.data.sources)
        for r in reports:
            if r.skipped:
                print(str(r))
        return decontaminate.apply(records, self.settings.data.decontaminate,
                                   paths.join(self.workdir, "decontamination.json"), eval_opts=self.config.eval)

    def _build_pipeline(self):
        stage = self.curriculum.stage
        data = stage.data
        self.pipeline = PromptPipeline(
            self.records, select={"levels": data.levels, "domains": data.domains}, mixture=data.mixture,
            batch_prompts=self.settings.rollout.batch_prompts, max_prompt_len=stage.max_prompt_len,
            tokenize_fn=self.policy.prompt_fn,
            seed=self.settings.data.seed + 1000 * self.curriculum.stage_index)

    def _maybe_resume(self) -> int | None:
        step = self.checkpointer.latest_step()
        if step is None:
            if self.settings.init_from:  # continue another run (stage 2 after stage 1)
                self.state = continue_from(self.settings.init_from, self.state)
            self._build_pipeline()
            return None
        state, extra = self.checkpointer.restore(step, abstract_like(self.state))
        self.state = state
        self.curriculum.load_state_dict(extra["curriculum"])
        self._build_pipeline()
        self.pipeline.set_state(extra["pipeline"])
        print(f"resumed from step {step} (stage {self.curriculum.stage.name})")
        return step

    def _write_run_files(self):
        if jax.process_index() != 0:
            return
        paths.write_text(paths.join(self.workdir, "config.json"), self.config.to_json_best_effort(indent=2))
        paths.write_text(paths.join(self.workdir, "model_config.json"), json.dumps(self.cfg.to_hf(), indent=2))
        if hasattr(self.tokenizer, "save_pretrained"):
            with paths.staged(paths.join(self.workdir, "tokenizer"), download=False) as local:
                self.tokenizer.save_pretrained(local)
        gen_cfg = paths.join(self.policy.model_dir or "", "generation_config.json")
        if self.policy.model_dir and paths.exists(gen_cfg):  # its stop ids, for load_policy(workdir)
            paths.copy_file(gen_cfg, paths.join(self.workdir, "generation_config.json"))

    # -- one step --------------------------------------------------------------------------
    def _sample_options(self, stage: Stage) -> SampleOptions:
        r = stage_rollout(self.settings, stage)
        return self.policy.sample_options(max_new_tokens=stage.max_response_len, temperature=r.temperature,
                                          top_p=r.top_p, top_k=r.top_k, n=r.group_size, cache_dtype=r.cache_dtype,
                                          max_in_flight=r.max_in_flight or None,
                                          kv_cache_tokens=r.kv_cache_tokens or None)

    def _rollout(self, stage: Stage, key, timer: Timer):
        """Groups for one update (dynamic sampling refills from further prompt batches); the
        batch sizes and refill rules are the run's rollout block, not the stage's overrides."""
        opts, r = self._sample_options(stage), self.settings.rollout
        # Continuous batching decodes from the sampling layout (Sampler.prepare: compute dtype,
        # replicated over the data axes), converted once per step on device, as the rollout
        # plan of tools/throughput.py assumes; the static path decodes the training arrays.
        params = self.sampler.prepare(self.state["params"]) if opts.max_in_flight else self.state["params"]
        kept, all_groups, gen = [], [], {}
        for attempt in range(1 + (r.max_refill_batches if r.dynamic_sampling else 0)):
            batch = next(self.pipeline)
            with timer.phase("rollout"):
                ro = policy_lib.rollout(self.policy, self.sampler, batch.records, jax.random.fold_in(key, attempt),
                                        opts, self.pool, params=params,
                                        prompt_ids=batch.prompt_ids, rows_per_call=r.prompts_per_sample_call)
            with timer.phase("rewards_wait"):
                groups = rollout.groups_of(ro.wait())
            gen = rollout.generation_metrics(ro)
            all_groups += groups
            kept += [g for g in groups if g.has_variance] if r.dynamic_sampling else groups
            if len(kept) >= r.batch_prompts:
                break
        metrics = {**gen, **rollout.rollout_metrics(all_groups)}
        metrics["dynamic_sampling/kept_groups"] = len(kept[: r.batch_prompts])
        return kept[: r.batch_prompts] or all_groups[:1], metrics

    def _step_fn(self, stage_index, loss_cfg, prompt_len, example: batch_lib.TrainBatch, temperature):
        key = ("update", stage_index, prompt_len, example.tokens.shape, temperature)
        if key not in self._programs:
            batch_axes = parallel.batch_sharding(self.mesh, 1, self.rules).spec[0]
            shard_tree = update.batch_shardings(self.mesh, batch_axes, example)
            fn = update.make_train_step(self.cfg, loss_cfg, self.tx, self.state_shardings, shard_tree, prompt_len,
                                        self.config.train.logprob_chunk, temperature)
            self._programs[key] = (fn, shard_tree)
        return self._programs[key]

    def _logprobs(self, params, batch: batch_lib.TrainBatch, prompt_len: int, temperature: float,
                  rows: int) -> np.ndarray:
        """[N, M] log-probs (no gradients), `rows` sequences (one micro-batch) per call."""
        sharding = parallel.batch_sharding(self.mesh, 2, self.rules)
        key = ("logprobs", prompt_len, temperature)
        if key not in self._programs:
            self._programs[key] = update.make_logprob_fn(self.cfg, prompt_len, self.config.train.logprob_chunk,
                                                         temperature, sharding)
        fn, n = self._programs[key], batch.tokens.shape[0]
        out = [fn(params, *(parallel.to_global(x[i:i + rows], sharding) for x in (batch.tokens, batch.kv_mask)))
               for i in range(0, n, rows)]
        return np.concatenate([parallel.to_host(x) for x in out])

    def train_step(self) -> dict:
        stage = self.curriculum.stage
        step = int(self.state["step"])
        key = jax.random.fold_in(self.state["rng"], step)
        loss_cfg, timer, c = stage_loss(self.settings, stage), Timer(), self.config
        groups, metrics = self._rollout(stage, key, timer)  # graded: the rewards are in
        # The update scores tokens under the distribution they were drawn from: logits / T.
        temperature = float(self._sample_options(stage).temperature)
        batch, prompt_len = batch_lib.train_batch(groups, self.settings.rollout.batch_prompts, loss_cfg.adv_std_mode,
                                                  loss_cfg.adv_eps, max_prompt_len=stage.max_prompt_len,
                                                  max_response_len=stage.max_response_len)
        plan = batch_lib.batch_plan(batch.tokens.shape[0], c.train, parallel.data_parallel_size(self.mesh, self.rules))
        with timer.phase("logprobs"):  # old / reference policy, no gradients
            if plan.multi_update:
                batch = batch.replace(old_logprobs=self._logprobs(self.state["params"], batch, prompt_len,
                                                                  temperature, plan.micro))
            if loss_cfg.kl_coef and self.ref_params is not None:
                batch = batch.replace(ref_logprobs=self._logprobs(self.ref_params, batch, prompt_len, temperature,
                                                                  plan.micro))
        rng = np.random.default_rng([self.settings.seed, step]) if c.train.shuffle_minibatches else None
        update_metrics, t0 = [], time.perf_counter()
        with timer.phase("update"):
            for _ in range(plan.epochs):
                for mb in batch_lib.minibatches(batch, plan, loss_cfg, rng):
                    fn, shard_tree = self._step_fn(self.curriculum.stage_index, loss_cfg, prompt_len, mb, temperature)
                    self.state, m = fn(self.state, batch_lib.to_device(mb, shard_tree))
                    update_metrics.append(m)
            update_metrics = jax.device_get(update_metrics)
        update_time = time.perf_counter() - t0
        self.state["step"] = jax.device_put(self.state["step"] + 1, self.state_shardings["step"])
        for k in update_metrics[0]:
            metrics[k] = float(np.mean([m[k] for m in update_metrics]))
        metrics["skipped_updates"] = float(sum(m["skipped"] for m in update_metrics))
        metrics["lr"] = float(self.schedule(len(update_metrics) * step))
        metrics["perf/update_tokens_per_s"] = float(batch.kv_mask.sum()) * plan.epochs / update_time
        metrics.update(timer.summary())
        return metrics

    # -- the loop --------------------------------------------------------------------------
    def _checkpoint(self, force=False):
        step = int(self.state["step"])
        if step == self._saved_step:  # e.g. the final save when the last step was saved already
            return
        self._saved_step = step
        self.metrics.flush()  # the metrics of the steps this checkpoint covers reach the file first
        extra = {"curriculum": self.curriculum.state_dict(), "pipeline": self.pipeline.get_state()}
        self.checkpointer.save(step, self.state, extra, force=force)

    def run(self, on_step: Callable | None = None) -> dict:
        c = self.config
        start = int(self.state["step"])
        bar = tqdm(total=self.settings.total_steps, initial=start, desc="grpo", disable=not c.log.progress)
        last = {}
        try:
            while int(self.state["step"]) < self.settings.total_steps and not self.curriculum.finished:
                metrics = self.train_step()
                step = int(self.state["step"])
                stage_name = self.curriculum.stage.name
                if c.eval.every and step % c.eval.every == 0 and c.eval.benchmarks:
                    metrics.update(self.evaluate())
                self.metrics.write(step, metrics, stage=stage_name)
                switched = self.curriculum.observe(step, metrics)
                if switched:
                    tqdm.write(f"step {step}: stage {stage_name} ended; starting {self.curriculum.stage.name}")
                    self._build_pipeline()
                if step % c.checkpoint.every == 0 or switched:
                    self._checkpoint(force=True)
                bar.update(1)
                bar.set_postfix(stage=stage_name, reward=f"{metrics['reward/mean']:.3f}",
                                len=f"{metrics['response_length/mean']:.0f}")
                last = metrics
                if on_step:
                    on_step(self, step, metrics)
            self._checkpoint(force=True)
        finally:
            bar.close()
            self.checkpointer.wait()
        return last

    def evaluate(self) -> dict:
        """The configured benchmarks on the current policy; files under evals/step_<N>."""
        step = int(self.state["step"])
        summary = evaluate_policy(self.policy, self.config.eval.benchmarks, self.config.eval,
                                  params=self.state["params"], sampler=self.sampler, pool=self.pool,
                                  workdir=paths.join(self.workdir, "evals", f"step_{step}"))
        return metrics_for_logging(summary)

    def export_hf(self, out_dir: str | None = None):
        out_dir = out_dir or paths.join(self.workdir, "hf")
        hf.save_params(out_dir, self.cfg, self.state["params"], tokenizer_dir=self.policy.model_dir)
        return out_dir

    def close(self):
        self.checkpointer.close()
        self.metrics.close()
        self.pool.close()
