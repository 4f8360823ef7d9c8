"""Evaluate a policy on reasoning benchmarks: pass@1 / pass@k / maj@k, as in the paper.

    python -m dsrl_jax.evaluate --config=configs/eval.py --workdir=/tmp/eval \
        --config.model=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B \
        --config.benchmarks=aime24,math500          # or aime=path/to/aime24.jsonl,...

Writes `<workdir>/<bench>/responses.jsonl` (one line per sample), `summary.json` and
`results.md`. A killed run resumes: problems with all n samples on disk are not sampled
again. The trainer calls `evaluate_policy` for periodic evals with `default_eval_config()`.

Named benchmarks (see BENCHMARKS) are fetched from the Hugging Face hub; offline, pass
`name=path` to a local file in any format `dsrl_jax.data.adapters.load_problems` reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import zlib

import jax
import ml_collections
from tqdm import tqdm

from dsrl_jax import cli, defaults, eval_metrics, parallel, paths
from dsrl_jax.data.sources import load_source
from dsrl_jax.policy import Policy, load_policy, rollout
from dsrl_jax.rewards import DEFAULT_CONFIG, RewardPool
from dsrl_jax.sampling import Sampler

DEFAULT_N = {"math": 16, "code": 4}  # the paper: 16 samples (AIME24, MATH-500), 4 (LCB)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A hub dataset and which of its files hold the problems."""
    repo: str
    files: tuple[str, ...]
    domain: str = "math"


# Well-known public copies of each benchmark (dataset repos on huggingface.co).
BENCHMARKS = {
    "aime24": Benchmark("HuggingFaceH4/aime_2024", ("data/*.parquet",)),
    "aime25": Benchmark("math-ai/aime25", ("test.jsonl",)),
    "math500": Benchmark("HuggingFaceH4/MATH-500", ("test.jsonl",)),
    "amc23": Benchmark("math-ai/amc23", ("test.jsonl",)),
    # release_vK = test.jsonl + test2.jsonl + ... + testK.jsonl; filtered by contest date.
    "livecodebench": Benchmark("livecodebench/code_generation_lite", (), "code"),
}


def default_eval_config() -> ml_collections.ConfigDict:
    """The eval block of the trainer's config (and the generation part of configs/eval.py):
    the table dsrl_jax.defaults.EVAL."""
    return ml_collections.ConfigDict(defaults.EVAL)


# ---- benchmarks -------------------------------------------------------------------------
def parse_benchmarks(spec: str) -> list[tuple[str, str | None]]:
    """"aime24,mine=/p/x.jsonl" -> [("aime24", None), ("mine", "/p/x.jsonl")]."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, path = item.partition("=")
        name = name.strip()
        if not path and name not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}, "
                             "or pass name=path for a local file")
        if any(name == seen for seen, _ in out):
            raise ValueError(f"benchmark {name!r} given twice")
        out.append((name, path.strip() or None))
    if not out:
        raise ValueError("no benchmarks given (e.g. --config.benchmarks=aime24,math500)")
    return out


def benchmark_source(name: str, path: str | None, opts) -> dict:
    """The data/sources.py spec of a benchmark: a local file, or its hub dataset's files."""
    if path:
        return {"path": path, "name": name}
    bench = BENCHMARKS[name]
    if name != "livecodebench":
        return {"hub": bench.repo, "files": list(bench.files), "name": name}
    version = int(str(opts.lcb_version).removeprefix("release_v"))
    files = [f"test{i if i > 1 else ''}.jsonl" for i in range(1, version + 1)]
    return {"hub": bench.repo, "files": files, "name": name, "domain": "code",
            "filters": {"date_from": opts.lcb_start_date, "date_to": opts.lcb_end_date}}


def load_benchmark(name: str, path: str | None, opts) -> list[dict]:
    """Canonical records of one benchmark (first `opts.limit`); skipped rows are reported."""
    if path and not os.path.exists(path):
        raise FileNotFoundError(f"benchmark {name!r}: no file {path}")
    try:
        records, report = load_source(benchmark_source(name, path, opts))
    except RuntimeError as e:  # hub unreachable: say how to run offline
        raise RuntimeError(f"benchmark {name!r}: {e}\nOffline, pass a local file instead: "
                           f"--config.benchmarks={name}=/path/to/{name}.jsonl") from e
    if report.skipped or report.filtered:
        print(f"[{name}] {report}")
    if not records:
        raise ValueError(f"benchmark {name!r} has no usable problems ({report})")
    return records[: opts.limit] if opts.limit else records


def samples_for(name: str, records: list[dict], opts) -> int:
    """opts.n_per_benchmark's entry, else opts.n if set, else the paper's count by domain."""
    for item in filter(None, (s.strip() for s in str(opts.get("n_per_benchmark", "")).split(","))):
        key, _, value = item.partition("=")
        if key.strip() == name:
            return int(value)
    return int(opts.n) or DEFAULT_N[records[0]["domain"]]


def prompts_per_call(opts, n: int, data_parallel: int) -> int:
    """opts.batch_size, or (0) as many prompts as fill rows_per_device rows on every
    data-parallel device."""
    if int(opts.batch_size) > 0:
        return int(opts.batch_size)
    return max(1, int(opts.get("rows_per_device", 8)) * data_parallel // n)


# ---- responses on disk (resumable) ------------------------------------------------------
def _dumps(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False)


def read_complete(path: str, n: int) -> dict[str, list[dict]]:
    """{id: its n sample rows in order} for problems whose samples 0..n-1 are all in `path`.

    Corrupt lines (a run killed mid-write) and partial problems are dropped, and the file is
    rewritten to hold just the complete problems, so appending can continue safely.
    """
    if not os.path.exists(path):
        return {}
    rows: dict[str, dict[int, dict]] = {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        try:
            row = json.loads(line)
            rows.setdefault(str(row["id"]), {})[int(row["sample"])] = row
        except (ValueError, KeyError, TypeError):
            continue
    done = {pid: [got[j] for j in range(n)] for pid, got in rows.items() if all(j in got for j in range(n))}
    kept = [_dumps(r) for samples in done.values() for r in samples]
    if kept != text.splitlines() or not text.endswith("\n"):  # something to drop: rewrite atomically
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept))
        os.replace(path + ".tmp", path)
    return done


def _check_settings(bench_dir: str, settings: dict) -> None:
    """Refuse to mix samples drawn with different settings in one responses.jsonl."""
    path = os.path.join(bench_dir, "settings.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != settings:
            raise ValueError(f"{bench_dir} holds samples drawn with {old}, not {settings}; "
                             "use a new workdir or delete that benchmark's directory")
    os.makedirs(bench_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1)


def _rows(ro) -> list[dict]:
    rows = []
    for i, (text, reward, info) in enumerate(zip(ro.texts, ro.rewards, ro.infos)):
        rows.append({
            "id": ro.record_of(i)["id"], "sample": i % ro.n, "response": text,
            "extracted": info.get("extracted"), "reward": float(reward),
            "correct": eval_metrics.is_correct(reward), "length": int(ro.lengths[i]),
            "finish_reason": ro.finish_name(i), "error": info.get("error"),
        })  # fmt: skip
    return rows


def evaluate_benchmark(name, records, policy: Policy, opts, sampler, pool, bench_dir=None, params=None) -> dict:
    """Metrics of one benchmark; with `bench_dir`, resumes from and appends to its responses."""
    n = samples_for(name, records, opts)
    sample_opts = policy.sample_options(
        max_new_tokens=int(opts.max_new_tokens), temperature=float(opts.temperature),
        top_p=float(opts.top_p), top_k=int(opts.top_k), n=n)
    path = os.path.join(bench_dir, "responses.jsonl") if bench_dir else None
    if bench_dir:
        _check_settings(bench_dir, {"n": n, "temperature": sample_opts.temperature, "top_p": sample_opts.top_p,
                                    "top_k": sample_opts.top_k, "max_new_tokens": sample_opts.max_new_tokens,
                                    "seed": int(opts.seed)})
    done = read_complete(path, n) if path else {}
    index = {r["id"]: i for i, r in enumerate(records)}
    todo = [r for r in records if r["id"] not in done]
    key = jax.random.fold_in(jax.random.PRNGKey(int(opts.seed)), zlib.crc32(name.encode()) & 0x7FFFFFFF)
    bs = prompts_per_call(opts, n, parallel.data_parallel_size(policy.mesh, policy.rules))
    with tqdm(total=len(records), initial=len(records) - len(todo), desc=name, unit="problem",
              disable=jax.process_index() != 0) as bar:
        for start in range(0, len(todo), bs):
            batch = todo[start:start + bs]
            rng = jax.random.fold_in(key, index[batch[0]["id"]])
            rows = _rows(rollout(policy, sampler, batch, rng, sample_opts, pool, params=params).wait())
            if path and jax.process_index() == 0:  # one write per batch of complete problems
                with open(path, "a", encoding="utf-8") as f:
                    f.write("".join(_dumps(r) + "\n" for r in rows))
            for r in rows:
                done.setdefault(r["id"], []).append(r)
            bar.update(len(batch))
    by_problem = {r["id"]: sorted(done[r["id"]], key=lambda s: s["sample"]) for r in records}
    return eval_metrics.summarize(by_problem, records[0]["domain"], n)


def evaluate_policy(policy: Policy, benchmarks, opts, *, params=None, sampler=None, workdir=None,
                    pool=None) -> dict:
    """{benchmark: metrics} of `policy` (with `params` instead of its own when given) on
    `benchmarks` ({name: records} or a spec string).

    With `workdir`, writes <workdir>/<bench>/responses.jsonl, summary.json and results.md,
    and resumes from what is already there. `pool` (a RewardPool) and `sampler` are reused
    when given (the trainer has both); otherwise they are made and closed here.
    """
    if isinstance(benchmarks, str):
        benchmarks = {name: load_benchmark(name, path, opts) for name, path in parse_benchmarks(benchmarks)}
    sampler = sampler or Sampler(policy.cfg, policy.mesh, policy.rules)
    own_pool = pool is None
    pool = pool or RewardPool(DEFAULT_CONFIG, num_workers=int(opts.reward_workers))
    summary = {}
    with contextlib.ExitStack() as stack:
        if workdir:  # a local copy of a remote (gs://) workdir, uploaded at the end
            workdir = stack.enter_context(paths.staged(workdir))
        try:
            for name, records in benchmarks.items():
                bench_dir = os.path.join(workdir, name) if workdir else None
                summary[name] = evaluate_benchmark(name, records, policy, opts, sampler, pool, bench_dir, params)
        finally:
            if own_pool:
                pool.close()
        if workdir and jax.process_index() == 0:
            with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
            with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
                f.write(eval_metrics.results_markdown(summary))
    return summary


def metrics_for_logging(summary: dict, prefix: str = "eval") -> dict[str, float]:
    """{"eval/aime24/pass@1": 0.42, ...}: the summary flattened for the metrics writer."""
    return {f"{prefix}/{b}/{k}": float(v) for b, stats in summary.items() for k, v in stats.items()}


# ---- command line -----------------------------------------------------------------------
def run(config, workdir: str) -> dict:
    """The CLI's work: load benchmarks (first, so a bad path fails before the model loads),
    the policy and its tokenizer, then evaluate into `workdir`."""
    if not config.model:
        raise ValueError("--config.model is required (HF directory, hub id or training workdir)")
    benchmarks = {name: load_benchmark(name, path, config) for name, path in parse_benchmarks(config.benchmarks)}
    mesh = parallel.make_mesh(config.mesh.to_dict())
    rules = config.sharding_rules.to_dict()
    policy = load_policy(config.model, mesh, rules, tokenizer=config.get("tokenizer") or None,
                         prompt_mode=config.prompt_mode, dtype=config.get("dtype", "float32"))
    paths.makedirs(workdir)
    summary = evaluate_policy(policy, benchmarks, config, workdir=workdir)
    print(eval_metrics.results_markdown(summary))
    return summary


def main(argv) -> None:
    del argv
    from absl import flags

    if flags.FLAGS.config is None:
        raise cli.UsageError("--config is required (e.g. --config=configs/eval.py --config.model=DIR)")
    if not flags.FLAGS.workdir:
        raise cli.UsageError("--workdir is required (where responses, summary.json and results.md go)")
    run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Eval config file (configs/eval.py).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where responses, summary.json and results.md go (local or gs://...).")
    cli.run(main)
