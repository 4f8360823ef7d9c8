"""Why does GRPO lower the CPU demo's greedy accuracy? Token-level evidence from demo runs.

    python experiments/demo_greedy.py --demo_workdirs runs/demo_s0,runs/demo_s1 [--out NAME]

For each finished demo workdir (python -m dsrl_jax.main --config=configs/demo.py), compares
the warm start (models/warm-start) with the GRPO result (the latest checkpoint) on the 200
held-out problems (eval_problems.jsonl):
  * greedy decoding: accuracy, and what the greedy response gets wrong first, by token kind
    (a step's result digits, an operand copied from the problem, the "," between steps, the
    "\\boxed{..}" answer, or the end-of-sequence token);
  * the worked gold solution teacher-forced through the model: per token kind, how often
    the gold token is the argmax (what greedy decoding needs) and its mean probability
    (what sampling at temperature 1 needs), plus the probability of sampling the whole gold
    solution at T=1.
Writes experiments/results/<out>.{json,md}.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dsrl_jax import parallel  # noqa: E402  (this checkout's, by the path above)
from dsrl_jax.checkpoint import Checkpointer  # noqa: E402
from dsrl_jax.demo.evaluate import pass_at_1  # noqa: E402
from dsrl_jax.demo.task import solution  # noqa: E402
from dsrl_jax.demo.tokenizer import CharTokenizer  # noqa: E402
from dsrl_jax.models import qwen2  # noqa: E402
from dsrl_jax.policy import load_policy  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KINDS = ("result", "copy", "sep", "boxed", "eos")


def token_kinds(solution: str) -> list[str]:
    """The kind of every character of a worked solution, plus "eos" for the end token."""
    kinds, state = [], "copy"
    box = solution.index(" \\boxed{")
    for i, ch in enumerate(solution):
        if i >= box:
            kinds.append("boxed")
        elif ch == "=":
            kinds.append("copy")
            state = "result"
        elif ch == ",":
            kinds.append("sep")
            state = "copy"
        else:
            kinds.append(state)
    return kinds + ["eos"]


def load_models(workdir: str):
    """(tokenizer, {name: policy}): the warm start and the GRPO result, by their specs."""
    mesh = parallel.make_mesh({"fsdp": 1}, jax.devices()[:1])
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    step = ckpt.latest_step()
    ckpt.close()
    load = lambda spec: load_policy(spec, mesh, dtype="float32", attention_impl="plain")  # noqa: E731
    return CharTokenizer(), {"warm start": load(os.path.join(workdir, "models", "warm-start")),
                             f"GRPO (step {step})": load(workdir)}


def teacher_forced(cfg, params, tok, records):
    """Per record: (gold token ids' probabilities [L], argmax == gold [L]) over the solution + EOS."""
    seqs, spans = [], []
    for r in records:
        prompt = tok.format_prompt(r["problem"])
        gold = tok.encode(solution(r)) + [tok.eos_token_id]
        seqs.append(prompt + gold)
        spans.append((len(prompt), len(gold)))
    width = max(len(s) for s in seqs)
    tokens = np.zeros((len(seqs), width), np.int32)
    mask = np.zeros((len(seqs), width), bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)], mask[i, : len(s)] = s, True
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0).astype(np.int32)
    logits, _ = jax.jit(lambda p, t, pos, m: qwen2.forward(cfg, p, t, pos, m))(params, tokens, positions, mask)
    probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), -1))
    out = []
    for i, (p0, n) in enumerate(spans):
        rows = probs[i, p0 - 1 : p0 - 1 + n]
        gold = tokens[i, p0 : p0 + n]
        out.append((rows[np.arange(n), gold], rows.argmax(-1) == gold))
    return out


def facts(problem: str) -> list[tuple[int, str, int]]:
    """The (running total, op, digit) facts of a problem's chain, in order."""
    import re

    total, out = int(re.match(r"\d+", problem).group()), []
    for op, digit in re.findall(r"([+-])(\d+)", problem[len(re.match(r"\d+", problem).group()):]):
        out.append((total, op, int(digit)))
        total = total + int(digit) if op == "+" else total - int(digit)
    return out


def result_positions(solution: str) -> list[int]:
    """Index of the first character of every step's result ("=" + 1) in a worked solution."""
    return [i + 1 for i, ch in enumerate(solution[: solution.index(" \\boxed{")]) if ch == "="]


def fact_table(records, tf_before, tf_after, train_records) -> dict:
    """Per held-out step: is the gold result's first digit the argmax before / after GRPO,
    grouped by how often that fact occurs in the problems GRPO trained on."""
    freq = collections.Counter(f for r in train_records for f in facts(r["problem"]))
    bins = {"0": lambda n: n == 0, "1-4": lambda n: 1 <= n <= 4, "5-14": lambda n: 5 <= n <= 14, ">=15": lambda n: n >= 15}
    rows = {b: {"steps": 0, "right_to_wrong": 0, "wrong_to_right": 0, "dp": []} for b in bins}
    for rec, (p0, h0), (p1, h1) in zip(records, tf_before, tf_after):
        for fact, pos in zip(facts(rec["problem"]), result_positions(solution(rec))):
            b = next(k for k, test in bins.items() if test(freq[fact]))
            row = rows[b]
            row["steps"] += 1
            row["right_to_wrong"] += int(h0[pos] and not h1[pos])
            row["wrong_to_right"] += int(h1[pos] and not h0[pos])
            row["dp"].append(float(p1[pos] - p0[pos]))
    return {b: {**{k: v for k, v in r.items() if k != "dp"}, "mean_dp": float(np.mean(r["dp"])) if r["dp"] else None}
            for b, r in rows.items()}


def first_error(response: str, gold: str) -> str:
    """The kind of the first character where a greedy response leaves the gold solution."""
    kinds = token_kinds(gold)
    for i, (a, b) in enumerate(zip(response, gold)):
        if a != b:
            return kinds[i]
    return "eos" if len(response) < len(gold) else ("eos" if len(response) > len(gold) else "none")


def analyse(workdir: str) -> dict:
    tok, models = load_models(workdir)
    with open(os.path.join(workdir, "eval_problems.jsonl")) as f:
        records = [json.loads(line) for line in f]
    out, tfs = {}, {}
    for name, policy in models.items():
        cfg, params = policy.cfg, policy.params
        greedy = pass_at_1(policy, records, greedy=True, max_new_tokens=64)
        scores = [1.0 if r == solution(rec) else None for r, rec in zip(greedy.responses, records)]
        errors = collections.Counter(first_error(r, solution(rec)) for r, rec, s in
                                     zip(greedy.responses, records, scores) if s is None)
        tf = teacher_forced(cfg, params, tok, records)
        tfs[name] = tf
        per = {k: {"argmax": [], "p": []} for k in KINDS}
        whole = []
        for (p, hit), rec in zip(tf, records):
            for kind, pk, hk in zip(token_kinds(solution(rec)), p, hit):
                per[kind]["argmax"].append(float(hk))
                per[kind]["p"].append(float(pk))
            whole.append(float(np.exp(np.log(np.maximum(p, 1e-30)).sum())))
        out[name] = {
            "greedy_accuracy": greedy.pass_at_1,
            "greedy_is_gold_solution": float(np.mean([s is not None for s in scores])),
            "greedy_first_error": dict(errors),
            "gold_argmax_rate": {k: float(np.mean(v["argmax"])) for k, v in per.items()},
            "gold_mean_prob": {k: float(np.mean(v["p"])) for k, v in per.items()},
            "gold_whole_solution_prob_T1": float(np.mean(whole)),
            "n_tokens": {k: len(v["p"]) for k, v in per.items()},
        }
    with open(os.path.join(workdir, "scored", "problems.jsonl")) as f:
        scored = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(workdir, "config.json")) as f:
        stages = json.load(f)["curriculum"]["stages"]
    wanted = {lv for s in stages for lv in (s["data"]["levels"] or [])}
    trained = [r for r in scored if wanted & set(r.get("levels") or [])]
    names = list(models)
    out["facts"] = fact_table(records, tfs[names[0]], tfs[names[1]], trained)
    return out


def table(results: dict) -> str:
    lines = ["| run | model | greedy acc | P(gold solution) at T=1 | " +
             " | ".join(f"{k}: argmax / p" for k in KINDS) + " | greedy's first error (count) |",
             "|---|---|---|---|" + "---|" * len(KINDS) + "---|"]
    for run, models in results.items():
        for name, m in models.items():
            if name == "facts":
                continue
            cells = " | ".join(f"{100 * m['gold_argmax_rate'][k]:.1f} / {100 * m['gold_mean_prob'][k]:.1f}" for k in KINDS)
            errs = ", ".join(f"{k} {v}" for k, v in sorted(m["greedy_first_error"].items(), key=lambda kv: -kv[1]))
            lines.append(f"| {run} | {name} | {100 * m['greedy_accuracy']:.1f} | "
                         f"{100 * m['gold_whole_solution_prob_T1']:.1f} | {cells} | {errs} |")
    lines += ["", "Held-out steps by how often their fact (running total, op, digit) occurs in the problems "
              "GRPO trained on: the gold result digit's argmax status, warm start -> GRPO", "",
              "| run | fact frequency in training data | steps | right -> wrong | wrong -> right | mean change of p(gold digit) |",
              "|---|---|---|---|---|---|"]
    for run, models in results.items():
        for b, r in models["facts"].items():
            dp = "–" if r["mean_dp"] is None else f"{100 * r['mean_dp']:+.1f}"
            lines.append(f"| {run} | {b} | {r['steps']} | {r['right_to_wrong']} | {r['wrong_to_right']} | {dp} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo_workdirs", required=True, help="comma-separated finished demo workdirs")
    p.add_argument("--out", default="demo_greedy")
    args = p.parse_args()
    results = {os.path.basename(w.rstrip("/")): analyse(w) for w in args.demo_workdirs.split(",") if w}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, args.out + ".json"), "w") as f:
        json.dump(results, f, indent=2)
    text = table(results)
    with open(os.path.join(RESULTS, args.out + ".md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
