"""Difficulty scoring: proxy-model pass rates per problem, then the paper's levels.

    python -m dsrl_jax.score --config=configs/score.py [--config.output=scored/problems.jsonl]

For each proxy in turn: load it, sample k responses per problem, grade them with the
RewardPool, and append one line per problem to the progress log as soon as its batch is
graded:  {"proxy", "id", "pass_rate", "k", "scores", "truncated"}.  The log makes the job
resumable: a re-run skips every (proxy, id) already in it (a line cut short by a kill is
dropped and the file repaired before appending). At the end every record gets
`pass_rates: {proxy: rate}` (from the log, from `pass_rates_file`, and any it came with),
`levels` from the config's rules, and the whole set is written atomically to `output`
(problems dropped by the `keep` rule are left out). Tables of pass-rate histograms per
proxy and of levels per domain are printed.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import sys

import jax
import ml_collections
from tqdm import tqdm

from dsrl_jax import cli, parallel
from dsrl_jax.data import decontaminate
from dsrl_jax.data import levels as levels_lib
from dsrl_jax.data.sources import load_sources
from dsrl_jax.policy import load_policy, rollout
from dsrl_jax.rewards import RewardPool
from dsrl_jax.sampling import Sampler
from dsrl_jax.settings import plain_config

HIST_BINS = ("0", "(0,.25)", "[.25,.5)", "[.5,.75)", "[.75,1)", "1")


# -- the progress log -----------------------------------------------------------------------
def read_progress(path: str) -> dict[tuple[str, str], dict]:
    """{(proxy, id): line} of a progress log; a torn last line is dropped and cut off."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):  # killed mid-write: cut back to the last newline
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    done = {}
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
            done[str(row["proxy"]), str(row["id"])] = row
        except (ValueError, KeyError, TypeError):
            continue
    return done


def read_pass_rates(path: str) -> dict[str, dict[str, float]]:
    """{id: {proxy: rate}} from JSONL lines {"id", "proxy", "pass_rate"} or {"id", "pass_rates"}."""
    rates: dict[str, dict[str, float]] = collections.defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                got = row["pass_rates"] if "pass_rates" in row else {row["proxy"]: row["pass_rate"]}
                for proxy, rate in got.items():
                    if not 0 <= float(rate) <= 1:
                        raise ValueError(f"rate {rate} outside [0, 1]")
                    rates[str(row["id"])][str(proxy)] = float(rate)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{path}:{n}: not a pass-rate line ({type(e).__name__}: {e})") from None
    return dict(rates)


def merge_pass_rates(records, progress, external=None) -> list[dict]:
    """Records (copies) with `pass_rates` = their own, then `external`, then the log's."""
    by_id: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for (proxy, pid), row in progress.items():
        by_id[pid][proxy] = float(row["pass_rate"])
    out = []
    for r in records:
        rates = {**(r.get("pass_rates") or {}), **(external or {}).get(r["id"], {}), **by_id.get(r["id"], {})}
        out.append({**r, "pass_rates": rates} if rates else dict(r))
    return out


# -- tables ---------------------------------------------------------------------------------
def _bin(rate: float) -> str:
    if rate <= 0:
        return HIST_BINS[0]
    if rate >= 1:
        return HIST_BINS[-1]
    return HIST_BINS[1 + min(3, int(rate * 4))]


def histogram_table(records: list[dict], proxies: list[str]) -> str:
    """Problems per pass-rate bin, one column per proxy (plus count and mean rate)."""
    cols = {p: collections.Counter(_bin(r["pass_rates"][p]) for r in records if p in r.get("pass_rates", {}))
            for p in proxies}
    rates = {p: [r["pass_rates"][p] for r in records if p in r.get("pass_rates", {})] for p in proxies}
    rows = [[b] + [cols[p][b] for p in proxies] for b in HIST_BINS]
    rows.append(["scored"] + [len(rates[p]) for p in proxies])
    rows.append(["mean"] + [f"{sum(v) / len(v):.3f}" if v else "-" for v in rates.values()])
    header = ["pass rate"] + list(proxies)
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


# -- scoring one proxy ----------------------------------------------------------------------
def score_proxy(proxy, records, done, log, pool, config, mesh, rules, *, tokenizer=None,
                prompt_fn=None) -> collections.Counter:
    """Sample, grade and log every record not yet scored by `proxy`; returns counters.

    The proxy is loaded sharded on `mesh` (FSDP x tensor parallel: a 32B model does not fit
    one chip). `tokenizer` (an object) and `prompt_fn(record) -> ids` replace the proxy's own
    tokenizer and the chat-template / plain prompt (the CPU demo passes its own); `rules`:
    the sharding rules, a plain dict."""
    stats = collections.Counter()
    todo = [r for r in records if (proxy.name, r["id"]) not in done]
    stats["already_scored"] = len(records) - len(todo)
    if not todo:
        return stats
    policy = load_policy(proxy.model, mesh, rules, tokenizer=tokenizer or proxy.tokenizer or None,
                         prompt_mode=config.prompt_mode, prompt_fn=prompt_fn, dtype=proxy.dtype)
    prompts = []
    for r in todo:
        ids = policy.prompt_fn(r)
        if len(ids) > proxy.max_prompt_len or max(ids) >= policy.cfg.vocab_size:
            stats["skipped_prompt_too_long" if len(ids) > proxy.max_prompt_len else "skipped_bad_token"] += 1
            continue
        prompts.append((r, ids))
    opts = policy.sample_options(max_new_tokens=proxy.max_new_tokens, temperature=proxy.temperature,
                                 top_p=proxy.top_p, top_k=proxy.top_k, n=proxy.k, cache_dtype=proxy.dtype)
    sampler = Sampler(policy.cfg, mesh, rules)
    dp = parallel.data_parallel_size(mesh, rules)
    per_call = proxy.batch_size or max(1, proxy.get("rows_per_device", 8) * dp // proxy.k)
    base = jax.random.fold_in(jax.random.key(config.seed), sum(map(ord, proxy.name)))
    with tqdm(total=len(prompts), desc=f"score {proxy.name}", unit="problem", disable=jax.process_index() != 0) as bar:
        for start in range(0, len(prompts), per_call):
            chunk = prompts[start: start + per_call]
            ro = rollout(policy, sampler, [r for r, _ in chunk], jax.random.fold_in(base, start), opts, pool,
                         prompt_ids=[ids for _, ids in chunk]).wait()
            for i, (r, _) in enumerate(chunk):
                scores = [float(x) for x in ro.rewards[i * proxy.k: (i + 1) * proxy.k]]
                truncated = int(ro.truncated[i * proxy.k: (i + 1) * proxy.k].sum())
                row = {"proxy": proxy.name, "id": r["id"], "pass_rate": sum(scores) / len(scores),
                       "k": proxy.k, "scores": scores, "truncated": truncated}
                if log is not None:
                    log.write(json.dumps(row) + "\n")
                done[proxy.name, r["id"]] = row
            if log is not None:
                log.flush()
                os.fsync(log.fileno())
            stats["scored"] += len(chunk)
            bar.update(len(chunk))
    return stats


# -- the job --------------------------------------------------------------------------------
def _sources(config) -> list:
    """The source specs (plain dicts) of a scoring config."""
    specs = ([{"path": p.strip()} for p in config.paths.split(",") if p.strip()] if config.get("paths")
             else plain_config(config.sources))
    if config.get("limit"):
        specs = [{**s, "filters": {**(s.get("filters") or {}), "limit": config.limit}} for s in specs]
    return specs


def run(config, records: list[dict] | None = None, tokenizer=None, prompt_fn=None) -> list[dict]:
    """The whole job; returns the merged, levelled records written to `config.output`.
    `records` replaces the config's sources; `tokenizer` and `prompt_fn` go to
    `score_proxy` (the CPU demo passes its synthetic problems and character tokenizer)."""
    plain = plain_config(config)  # once: the blocks the library functions read as plain dicts
    levels_lib.validate_rules(plain["level_rules"])
    proxies = [ml_collections.ConfigDict(p) for p in config.proxies]
    names = [p.name for p in proxies]
    if len(set(names)) != len(names):
        raise ValueError(f"proxies: names must be distinct, got {names}")
    wanted = [n.strip() for n in config.get("only_proxies", "").split(",") if n.strip()]
    if set(wanted) - set(names):
        raise ValueError(f"only_proxies: unknown {sorted(set(wanted) - set(names))}; proxies are {names}")
    external = read_pass_rates(config.pass_rates_file) if config.pass_rates_file else {}
    if records is None:
        records, reports = load_sources(_sources(config))
        for report in reports:
            print(report, file=sys.stderr)
        records = decontaminate.apply(records, plain.get("decontaminate"), config.output + ".decontamination.json")
    if not records:
        raise ValueError("no problems to score: every source came out empty")
    progress = config.progress or config.output + ".scores.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(progress)), exist_ok=True)
    done = read_progress(progress)
    mesh = parallel.make_mesh(plain["mesh"])
    primary = jax.process_index() == 0  # every process samples and grades; one writes the log
    with RewardPool(plain["rewards"], num_workers=config.reward_workers) as pool, \
            (open(progress, "a", encoding="utf-8") if primary else contextlib.nullcontext()) as log:
        for proxy in proxies:
            if wanted and proxy.name not in wanted:
                continue
            stats = score_proxy(proxy, records, done, log, pool, config, mesh, plain["sharding_rules"], tokenizer=tokenizer,
                                prompt_fn=prompt_fn)
            print(f"{proxy.name}: {dict(stats)}", file=sys.stderr)
    merged = merge_pass_rates(records, done, external)
    levelled = levels_lib.assign_levels(merged, plain["level_rules"], seed=config.level_seed)
    if primary:
        tmp = config.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in levelled)
        os.replace(tmp, config.output)
    all_proxies = list(dict.fromkeys(names + sorted({p for r in merged for p in r.get("pass_rates", {})})))
    print(histogram_table(merged, all_proxies))
    print(f"\n{len(levelled)} of {len(merged)} problems kept by the rules -> {config.output}")
    print(levels_lib.level_table(levelled, plain["level_rules"]))
    return levelled


def main(argv) -> None:
    del argv
    from absl import flags

    run(flags.FLAGS.config)


if __name__ == "__main__":
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Scoring config (configs/score.py).", lock_config=True)
    cli.run(main)
