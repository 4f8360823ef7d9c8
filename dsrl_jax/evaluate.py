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

from dsrl_jax import eval_metrics, paths
from dsrl_jax.data.prompts import format_prompt
from dsrl_jax.data.sources import load_source
from dsrl_jax.models import hf, qwen2
from dsrl_jax.models.config import Qwen2Config
from dsrl_jax.sampling import FINISH_REASONS, SampleOptions, Sampler

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
    """The eval block of the trainer's config (and the generation part of configs/eval.py)."""
    c = ml_collections.ConfigDict()
    c.every = 0  # evaluate every this many training steps; 0 = off
    c.benchmarks = ""  # "aime24,math500" or "aime=/path/aime24.jsonl,..."
    c.n = 0  # samples per problem; 0 = per benchmark (16 math, 4 livecodebench / code)
    c.n_per_benchmark = ""  # overrides, e.g. "livecodebench=8,aime24=32"
    c.temperature = 0.6
    c.top_p = 0.95
    c.top_k = 0
    c.max_new_tokens = 32768
    c.limit = 0  # first N problems of each benchmark; 0 = all
    c.prompt_mode = "auto"  # data/prompts.py: chat template if the tokenizer has one, else plain
    c.batch_size = 8  # prompts per sampler call (each with n samples)
    c.seed = 0
    c.reward_workers = 2
    c.lcb_version = "release_v5"  # LiveCodeBench release and contest-date window
    c.lcb_start_date = "2024-08-01"  # contest dates, inclusive (the window of the paper's
    c.lcb_end_date = "2025-01-31"  # baselines); hub livecodebench only, not local files
    return c


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


# ---- models -----------------------------------------------------------------------------
def _train_workdir(path: str) -> str | None:
    """The trainer's workdir if `path` is one, its checkpoints/ dir, or a step dir in it."""
    for cand in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        if all(paths.exists(paths.join(cand, f)) for f in ("checkpoints", "model_config.json", "tokenizer")):
            return cand
    return None


def load_policy(model_spec: str, **cfg_options) -> tuple[Qwen2Config, dict, str]:
    """(cfg, params, tokenizer_dir) for a HF checkpoint dir, hub id, or training workdir
    (local or a URL)."""
    path = paths.normalize(model_spec) if paths.is_url(model_spec) or os.path.isdir(model_spec) else None
    workdir = _train_workdir(path) if path else None
    if workdir is None:  # Hugging Face checkpoint: directory or hub id
        directory = hf.resolve(model_spec)
        cfg = Qwen2Config.from_file(directory, **cfg_options)
        return (*hf.load_params(directory, cfg), directory)
    # ---- our orbax training workdir: <workdir>/{model_config.json, tokenizer/, checkpoints/<step>/}
    from dsrl_jax.checkpoint import Checkpointer

    cfg = Qwen2Config.from_hf(json.loads(paths.read_text(paths.join(workdir, "model_config.json"))), **cfg_options)
    ckpt = Checkpointer(paths.join(workdir, "checkpoints"), read_only=True)
    step = ckpt.latest_step()
    if path.startswith(paths.join(workdir, "checkpoints") + "/"):  # a step dir was named
        step = int(path[len(paths.join(workdir, "checkpoints")) + 1:].split("/")[0])
    if step is None:
        raise ValueError(f"{workdir}/checkpoints holds no complete checkpoint")
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          qwen2.abstract_params(cfg))
    params = ckpt.restore_subtree(step, "params", target)
    ckpt.close()
    return cfg, params, paths.join(workdir, "tokenizer")


# ---- prompts and decoding ---------------------------------------------------------------
def prompt_ids(record: dict, tokenizer, mode: str = "auto") -> list[int]:
    """The chat-templated prompt with the domain's instruction (shared with training)."""
    return format_prompt(record, tokenizer, mode)


def _decode(tokenizer, ids: list[int]) -> str:
    try:
        return tokenizer.decode(ids, skip_special_tokens=True)
    except TypeError:  # a minimal tokenizer (the CPU demo's): decode(ids) only
        return tokenizer.decode(ids)


def default_stop_ids(cfg: Qwen2Config, tokenizer, model_dir: str | None = None) -> list[int]:
    """generation_config.json's EOS ids, the tokenizer's EOS and the model config's EOS."""
    ids = hf.stop_token_ids(tokenizer, model_dir) if hasattr(tokenizer, "eos_token_id") else []
    eos = cfg.eos_token_id
    for i in (eos if isinstance(eos, tuple) else (eos,)):
        if i is not None and i not in ids:
            ids.append(i)
    return ids


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


def _rows(batch, out, texts, results, n) -> list[dict]:
    rows = []
    for i, (text, res) in enumerate(zip(texts, results)):
        rows.append({
            "id": batch[i // n]["id"], "sample": i % n, "response": text,
            "extracted": res.info.get("extracted"), "reward": float(res.score),
            "correct": eval_metrics.is_correct(res.score), "length": int(out.lengths[i]),
            "finish_reason": FINISH_REASONS[int(out.finish_reason[i])], "error": res.info.get("error"),
        })  # fmt: skip
    return rows


def evaluate_benchmark(name, records, cfg, params, tokenizer, opts, sampler, pool,
                       stop_token_ids, bench_dir=None, prompt_fn=None) -> dict:
    """Metrics of one benchmark; with `bench_dir`, resumes from and appends to its responses.
    `prompt_fn(record) -> ids` replaces the chat-template prompt (e.g. the demo's format)."""
    n = samples_for(name, records, opts)
    sample_opts = SampleOptions(
        max_new_tokens=int(opts.max_new_tokens), temperature=float(opts.temperature),
        top_p=float(opts.top_p), top_k=int(opts.top_k), n=n, stop_token_ids=tuple(stop_token_ids))
    path = os.path.join(bench_dir, "responses.jsonl") if bench_dir else None
    if bench_dir:
        _check_settings(bench_dir, {"n": n, "temperature": sample_opts.temperature, "top_p": sample_opts.top_p,
                                    "top_k": sample_opts.top_k, "max_new_tokens": sample_opts.max_new_tokens,
                                    "seed": int(opts.seed)})
    done = read_complete(path, n) if path else {}
    index = {r["id"]: i for i, r in enumerate(records)}
    todo = [r for r in records if r["id"] not in done]
    key = jax.random.fold_in(jax.random.PRNGKey(int(opts.seed)), zlib.crc32(name.encode()) & 0x7FFFFFFF)
    # R1-style templates open <think> in the prompt; grading must see it (an unclosed
    # think block, i.e. truncated reasoning, has no final answer).
    mode = opts.get("prompt_mode", "auto")
    prompt_fn = prompt_fn or (lambda r: prompt_ids(r, tokenizer, mode))
    prefix = "<think>\n" if tokenizer.decode(prompt_fn(records[0])[-3:]).rstrip().endswith("<think>") else ""
    bs = max(1, int(opts.batch_size))
    with tqdm(total=len(records), initial=len(records) - len(todo), desc=name, unit="problem") as bar:
        for start in range(0, len(todo), bs):
            batch = todo[start:start + bs]
            rng = jax.random.fold_in(key, index[batch[0]["id"]])
            out = sampler.sample(params, [prompt_fn(r) for r in batch], rng, sample_opts)
            texts = [_decode(tokenizer, out.completion(i)) for i in range(len(batch) * n)]
            results = pool.score([prefix + t for t in texts], [batch[i // n] for i in range(len(texts))])
            rows = _rows(batch, out, texts, results, n)
            if path and jax.process_index() == 0:  # one write per batch of complete problems
                with open(path, "a", encoding="utf-8") as f:
                    f.write("".join(_dumps(r) + "\n" for r in rows))
            for r in rows:
                done.setdefault(r["id"], []).append(r)
            bar.update(len(batch))
    by_problem = {r["id"]: sorted(done[r["id"]], key=lambda s: s["sample"]) for r in records}
    return eval_metrics.summarize(by_problem, records[0]["domain"], n)


def evaluate_policy(cfg, params, tokenizer, benchmarks, opts, sampler=None, workdir=None,
                    pool=None, stop_token_ids=None, prompt_fn=None) -> dict:
    """{benchmark: metrics} for `benchmarks` ({name: records} or a spec string).

    With `workdir`, writes <workdir>/<bench>/responses.jsonl, summary.json and results.md,
    and resumes from what is already there. `pool` (a RewardPool) and `sampler` are reused
    when given (the trainer has both); otherwise they are made and closed here.
    """
    from dsrl_jax.rewards import DEFAULT_CONFIG, RewardPool

    if isinstance(benchmarks, str):
        benchmarks = {name: load_benchmark(name, path, opts) for name, path in parse_benchmarks(benchmarks)}
    sampler = sampler or Sampler(cfg)
    stops = stop_token_ids if stop_token_ids is not None else default_stop_ids(cfg, tokenizer)
    own_pool = pool is None
    pool = pool or RewardPool(DEFAULT_CONFIG, num_workers=int(opts.reward_workers))
    summary = {}
    with contextlib.ExitStack() as stack:
        if workdir:  # a local copy of a remote (gs://) workdir, uploaded at the end
            workdir = stack.enter_context(paths.staged(workdir))
        _evaluate_all(benchmarks, summary, cfg, params, tokenizer, opts, sampler, pool, own_pool, stops,
                      workdir, prompt_fn)
    return summary


def _evaluate_all(benchmarks, summary, cfg, params, tokenizer, opts, sampler, pool, own_pool, stops,
                  workdir, prompt_fn) -> None:
    try:
        for name, records in benchmarks.items():
            bench_dir = os.path.join(workdir, name) if workdir else None
            summary[name] = evaluate_benchmark(name, records, cfg, params, tokenizer, opts, sampler,
                                               pool, stops, bench_dir, prompt_fn)
    finally:
        if own_pool:
            pool.close()
    if workdir and jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
            f.write(eval_metrics.results_markdown(summary))


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
    cfg, params, tok_dir = load_policy(config.model, dtype=config.get("dtype", "float32"))
    tokenizer = hf.load_tokenizer(tok_dir)
    stops = default_stop_ids(cfg, tokenizer, hf.resolve(tok_dir))
    paths.makedirs(workdir)
    summary = evaluate_policy(cfg, params, tokenizer, benchmarks, config, workdir=workdir,
                              stop_token_ids=stops)
    print(eval_metrics.results_markdown(summary))
    return summary


def main(argv) -> None:
    del argv
    from absl import flags

    from dsrl_jax.cli import UsageError

    if flags.FLAGS.config is None:
        raise UsageError("--config is required (e.g. --config=configs/eval.py --config.model=DIR)")
    if not flags.FLAGS.workdir:
        raise UsageError("--workdir is required (where responses, summary.json and results.md go)")
    run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    from dsrl_jax import cli

    config_flags.DEFINE_config_file("config", None, "Eval config file (configs/eval.py).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where responses, summary.json and results.md go (local or gs://...).")
    cli.run(main)
