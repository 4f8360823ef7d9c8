"""Writes the colab/ notebooks (without outputs) from the cell sources below.

    python colab/make_notebooks.py        # after editing a cell here; commit both

Editing a notebook in Jupyter/Colab directly is fine too; then clear its outputs
(`jupyter nbconvert --clear-output --inplace colab/*.ipynb`) and port the change here,
or the next regeneration loses it. tests/test_notebooks.py checks the two agree.
"""
from __future__ import annotations

import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def setup_cell(title: str, run_dir: str, run_dir_doc: str) -> str:
    """The first code cell: where the data is, and a Colab-only install of the package."""
    return f'''\
# {title}
# Settings: RUN_DIR below, or the environment variable DSRL_RUN_DIR (which wins).
import os

RUN_DIR = "{run_dir}"  # {run_dir_doc}
RUN_DIR = os.environ.get("DSRL_RUN_DIR", RUN_DIR)

# In Colab, install dsrl_jax first; where it is importable (CI, a dev checkout) nothing is installed.
# DSRL_SOURCE: SET THIS to what pip installs dsrl_jax from: your clone's git URL
# ("git+https://<host>/<you>/dsrl_jax"), or a path where you uploaded the checkout.
DSRL_SOURCE = os.environ.get("DSRL_SOURCE", "/content/dsrl_jax")
try:
    import dsrl_jax  # noqa: F401
except ImportError:
    %pip install -q "{{DSRL_SOURCE}}"
    # A workdir on GCS: copy it locally first, e.g. !gsutil -m cp -r gs://bucket/run /content/run'''


def notebook(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives an identical file
        cell.id = f"{name}-{i}"
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    return nb


# ---------------------------------------------------------------------------------------------
RUN_CURVES = [
    ("code", setup_cell("dsrl_jax: training curves of a GRPO run",
                        "/content/run", "a training workdir: the one holding metrics.jsonl")),
    ("md", """\
# Training curves of a staged GRPO run

Reads `<RUN_DIR>/metrics.jsonl`, which `python -m dsrl_jax.main` appends one line per step
(`step`, `stage`, the step's metrics; NaN is stored as `null` and shows up as a gap).
Shaded spans are curriculum stages (`config.curriculum.stages`), labelled by name; a
dashed line marks where the next stage starts. Figures are also saved under
`RUN_DIR/figures/` (a temporary directory when that is not writable)."""),
    ("code", """\
import math

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from dsrl_jax import analysis

cols = analysis.load_metrics(RUN_DIR)
spans = analysis.stage_spans(cols)
FIG_DIR = analysis.figure_dir(RUN_DIR)
SMOOTH = 0.6  # EMA weight of the thick line (0 = raw); the thin line is always raw
print(f"{len(cols['step'])} steps logged, steps {cols['step'][0]}..{cols['step'][-1]}; "
      f"stages: {' -> '.join(str(s['stage']) for s in spans)}; figures -> {FIG_DIR}")"""),
    ("md", """\
**Per stage** (means over the stage's steps). Stage 1 of the paper trains on L2 problems
with a 16k-token budget until the reward plateaus; stage 2 moves to L3 with 24k tokens and
drops truncated responses from the loss. Expect the reward to fall at a stage switch (the
data gets harder) and the response length to rise after it (the budget grows)."""),
    ("code", """\
display(Markdown(analysis.markdown_table(analysis.run_summary(cols))))"""),
    ("md", """\
**What to look for**
- *reward / accuracy*: rising, then flattening: the plateau is what ends a stage.
- *response length* and *truncation rate*: lengths pressing against the stage's
  `max_response_len` show up as a truncation rate rising toward 1: the budget binds
  (the paper's reason for a longer second stage).
- *entropy*: a steady slide is sharpening; a collapse to ~0 early means exploration is
  gone (the entropy bonus is 0.001 in stage 1, off in stage 2).
- *KL to reference*: stays small with coefficient 0.001; a jump goes with a reward jump
  or an instability.
- *grad norm*: spikes above the clip (1.0) or runs of `skipped_updates` point to bad
  batches or a too-high learning rate."""),
    ("code", """\
def shade_stages(ax, spans, label=True):
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(s["stage"] for s in spans))
    for i, s in enumerate(spans):
        ax.axvspan(s["start"], s["end"], color=colors[names.index(s["stage"]) % len(colors)],
                   alpha=0.08, lw=0)
        if i:
            ax.axvline(s["start"], color="k", ls="--", lw=0.8)
        if label:
            ax.text((s["start"] + s["end"]) / 2, 1.0, str(s["stage"]), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8)


panels = analysis.curve_panels(cols)
ncols = 2
nrows = math.ceil(len(panels) / ncols)
fig, axes = plt.subplots(nrows, ncols, figsize=(12, 2.8 * nrows), sharex=True, squeeze=False)
for ax, (title, names) in zip(axes.flat, panels):
    for name in names:
        xs, ys = analysis.finite(cols["step"], cols[name])
        line, = ax.plot(xs, ys, lw=0.8, alpha=0.4 if SMOOTH else 1.0)
        if SMOOTH:
            ax.plot(xs, analysis.smooth(ys, SMOOTH), color=line.get_color(), lw=1.8, label=name)
        else:
            line.set_label(name)
    shade_stages(ax, spans)
    ax.set_title(title, pad=14, fontsize=10)
    if len(names) > 1:
        ax.legend(fontsize=8)
    if title == "learning rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
for ax in axes[-1]:
    ax.set_xlabel("step")
fig.tight_layout()
fig.savefig(os.path.join(FIG_DIR, "curves.png"), dpi=120)
plt.show()"""),
    ("md", """\
**Periodic evaluation** (`config.eval.every`): `eval/<benchmark>/pass@1` is the mean
correctness over `n` samples per problem (the paper's Pass@1: 16 samples for AIME24 and
MATH-500, 4 for LiveCodeBench). Training reward that rises while eval Pass@1 stays flat
is overfitting to the training problems (or to the reward)."""),
    ("code", """\
evals = analysis.eval_series(cols, "pass@1")
if not evals:
    print("no eval/<benchmark>/pass@1 metrics in this run (config.eval.every = 0?)")
else:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for bench, (xs, ys) in evals.items():
        ax.plot(xs, [100 * y for y in ys], marker="o", label=bench)
        for row, value in analysis.paper_reference(bench).items():
            ax.axhline(value, ls=":", lw=1, color=ax.lines[-1].get_color())
            ax.annotate(f"{row}: {value}", (1, value), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize=7)
    shade_stages(ax, spans)
    ax.set_xlim(spans[0]["start"], spans[-1]["end"])
    ax.set(xlabel="step", ylabel="pass@1 (%)")
    ax.set_title("periodic eval", pad=14)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(FIG_DIR, "eval_pass1.png"), dpi=120)
    plt.show()"""),
    ("md", """\
Other logged metrics (rollout timing `time/*`, throughput `perf/*`, `solve_none` /
`solve_all` group fractions, per-domain rewards) are in `cols`; plot any of them with
`analysis.finite(cols["step"], cols[name])`."""),
    ("code", """\
print(sorted(k for k in cols if k not in ("step", "stage")))"""),
]

# ---------------------------------------------------------------------------------------------
DIFFICULTY_LEVELS = [
    ("code", setup_cell("dsrl_jax: difficulty levels of a scored dataset",
                        "/content/scored/problems.jsonl",
                        "the output of python -m dsrl_jax.score (the file or its directory), or a run workdir holding scored/")),
    ("md", """\
# Difficulty levels of a scored dataset

`python -m dsrl_jax.score` samples every problem k times with each proxy model, writes
each problem's pass rate to the append log `<output>.scores.jsonl`, and then the merged
dataset `<output>`: the records with `pass_rates: {proxy: rate}` and `levels` from the
paper's rules (section 3.2.1; `dsrl_jax/data/levels.py`):
- kept only if the strongest proxy (DeepSeek-R1, else the 32B) solves it at least once;
- **L1**: the 1.5B model's pass rate is in (0, 1);
- **L2**: the 1.5B model fails (0) and the 7B solves it, or both are in (0, 1);
- **L3**: the 32B fails, plus a seeded fraction of 32B-solved ones (50% math, 10% code).

Levels overlap: a record is counted under each of its levels."""),
    ("code", """\
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from dsrl_jax import analysis
from dsrl_jax.data.levels import level_table
from dsrl_jax.score import histogram_table

SCORED = analysis.find_scored_file(RUN_DIR)
records = analysis.load_scored(SCORED)
log = analysis.load_score_log(SCORED)
proxies = analysis.proxies_of(records)
FIG_DIR = analysis.figure_dir(SCORED)
print(f"{len(records)} records from {SCORED}; proxies: {proxies}; {len(log)} log lines; figures -> {FIG_DIR}")
print()
print(histogram_table(records, proxies))
print()
print(level_table(records))"""),
    ("md", """\
**Pass-rate histograms per proxy.** A useful RL set has mass strictly between 0 and 1 for
the policy being trained: a problem it always solves (rate 1) or never solves (rate 0)
gives a GRPO group with equal rewards and no gradient. Larger proxies should shift mass
to the right; a proxy with nearly everything at 0 may be truncated (see the log table at
the end) rather than weak."""),
    ("code", """\
ncols = min(3, len(proxies))
nrows = -(-len(proxies) // ncols)
fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False, sharey=True)
for ax, proxy in zip(axes.flat, proxies):
    edges, counts = analysis.pass_rate_histogram(records, proxy, bins=10)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="white")
    rates = analysis.pass_rates(records, proxy)
    ax.set_title(f"{proxy} (n={len(rates)}, mean={np.mean(rates):.2f})", fontsize=9)
    ax.set_xlabel("pass rate")
for ax in axes.flat[len(proxies):]:
    ax.set_visible(False)
for ax in axes[:, 0]:
    ax.set_ylabel("problems")
fig.tight_layout()
fig.savefig(os.path.join(FIG_DIR, "pass_rate_histograms.png"), dpi=120)
plt.show()"""),
    ("md", """\
**Problems per level and domain.** The paper's stage 1 trains on L2 and stage 2 on L3;
the math+code run mixes L1 math with L3 code at about 2.1:1 inside each batch, so check
that each level you select has enough problems for the steps you plan
(batch 128 prompts per step)."""),
    ("code", """\
levels, domains, counts = analysis.level_domain_counts(records)
x = np.arange(len(levels))
width = 0.8 / max(1, len(domains))
fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(levels) * max(1, len(domains)) ** 0.5, 3.5))
for i, domain in enumerate(domains):
    heights = [counts[lvl][domain] for lvl in levels]
    bars = ax.bar(x + (i - (len(domains) - 1) / 2) * width, heights, width, label=domain)
    ax.bar_label(bars, fontsize=8)
ax.set_xticks(x, levels)
ax.set(xlabel="level ('-' = kept, in no level)", ylabel="problems", title="problems per level and domain")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(FIG_DIR, "level_counts.png"), dpi=120)
plt.show()"""),
    ("md", """\
**1.5B vs 7B pass rates, coloured by level.** The level boundaries are lines in this
plane: L1 is the open strip 0 < x < 1, L2 the left edge x = 0 with y > 0 plus the open
square. Points are jittered a little (rates are multiples of 1/k)."""),
    ("code", """\
X_PROXY, Y_PROXY = "r1-distill-1.5b", "r1-distill-7b"
if not {X_PROXY, Y_PROXY} <= set(proxies):  # other proxy names: the first two scored
    X_PROXY, Y_PROXY = (proxies + proxies)[:2]
rng = np.random.default_rng(0)
fig, ax = plt.subplots(figsize=(5.5, 5))
for label, (xs, ys) in analysis.rate_pairs(records, X_PROXY, Y_PROXY).items():
    jx = np.asarray(xs) + rng.uniform(-0.015, 0.015, len(xs))
    jy = np.asarray(ys) + rng.uniform(-0.015, 0.015, len(ys))
    ax.scatter(jx, jy, s=14, alpha=0.7, label=f"{label} ({len(xs)})")
ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
ax.set(xlabel=f"{X_PROXY} pass rate", ylabel=f"{Y_PROXY} pass rate", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
ax.legend(fontsize=8, title="levels")
fig.tight_layout()
fig.savefig(os.path.join(FIG_DIR, "pass_rate_scatter.png"), dpi=120)
plt.show()"""),
    ("md", """\
**The progress log** (`<output>.scores.jsonl`, one line per proxy and problem scored by
this job; rates merged from `pass_rates_file` are not in it). A high truncation rate
means `max_new_tokens` cut the proxy's reasoning: its pass rates are then lower bounds."""),
    ("code", """\
summary = analysis.log_summary(log)
if summary:
    display(Markdown(analysis.markdown_table([{"proxy": p, **s} for p, s in summary.items()])))
else:
    print("no progress log beside", SCORED)"""),
]

# ---------------------------------------------------------------------------------------------
COMPARE_EVALS = [
    ("code", setup_cell("dsrl_jax: compare evaluations across checkpoints",
                        "/content/evals",
                        "one eval workdir (holds summary.json), or a directory of them (a run's workdir or its evals/)")),
    ("md", """\
# Evaluation results across checkpoints

`python -m dsrl_jax.evaluate --workdir=DIR` writes `DIR/summary.json`:
`{benchmark: {"pass@1", "pass@k", "maj@k", "mean_reward", "n_problems", "n_samples"}}`.
Point `RUN_DIR` at one such directory or at a parent holding several (for example
`evals/step_400`, `evals/step_800`, ...); directories whose name ends in a number are
read as checkpoint steps and drawn as lines over steps, otherwise as bars. Dotted
horizontal lines are the paper's Pass@1 for the benchmarks it reports (AIME24, MATH-500,
LiveCodeBench; `analysis.PAPER_RESULTS`)."""),
    ("code", """\
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from dsrl_jax import analysis

METRIC = "pass@1"  # or pass@k / maj@k (k as evaluated), mean_reward
summaries = analysis.load_eval_summaries(RUN_DIR)
if not summaries:
    raise FileNotFoundError(f"no summary.json in or under {RUN_DIR}")
table = analysis.metric_table(summaries, METRIC, percent=METRIC != "mean_reward")
labels = list(summaries)
FIG_DIR = analysis.figure_dir(RUN_DIR)
rows = [{"checkpoint": lbl, **{b: table[b][lbl] for b in table}} for lbl in labels]
print(f"{len(labels)} eval dirs; {METRIC} {'(%)' if METRIC != 'mean_reward' else ''}; figures -> {FIG_DIR}")
display(Markdown(analysis.markdown_table(rows)))"""),
    ("md", """\
**What to look for**: RL should lift AIME24 most (the paper: 28.9 -> 42.3 with staged
math training) and MATH-500 a little (83.9 -> 89.5); code gains come from mixing in L3
code (LiveCodeBench 16.9 -> 20.4). A curve that rises then falls over steps is a reason
to pick an earlier checkpoint. With few problems (AIME has 30) differences of a few
points are within sampling noise: compare `n_samples`."""),
    ("code", """\
benches = list(table)
steps = [analysis.step_of(lbl) for lbl in labels]
over_steps = len(labels) > 1 and all(s is not None for s in steps) and len(set(steps)) == len(steps)
fig, axes = plt.subplots(1, len(benches), figsize=(4.5 * len(benches), 3.8), squeeze=False)
for ax, bench in zip(axes[0], benches):
    values = [table[bench][lbl] for lbl in labels]
    if over_steps:
        order = np.argsort(steps)
        ax.plot(np.array(steps)[order], np.array(values)[order], marker="o", label="this run")
        ax.set_xlabel("checkpoint step")
        if len(steps) <= 12:
            ax.set_xticks(sorted(steps))
    else:
        ax.bar(range(len(labels)), values, color="C0", label="this run")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    if METRIC == "pass@1":  # the paper reports Pass@1
        for i, (row, value) in enumerate(analysis.paper_reference(bench).items()):
            ax.axhline(value, ls=":", lw=1.2, color=f"C{i + 1}", label=f"{row}: {value}")
    if METRIC != "mean_reward":  # percentages: from 0, with room for the reference lines
        ax.set_ylim(0, 1.1 * max([5.0] + [v for v in values if np.isfinite(v)]
                                 + list(analysis.paper_reference(bench).values())))
    ax.set_title(bench)
    ax.set_ylabel(METRIC + (" (%)" if METRIC != "mean_reward" else ""))
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(FIG_DIR, f"compare_{METRIC.replace('@', '_at_')}.png"), dpi=120)
plt.show()"""),
    ("md", """\
**The paper's numbers** (Pass@1 %, arXiv 2504.00829), for reference. Benchmarks named
differently in your eval spec (`aime=...`, `math=...`, `lcb=...`) are matched through
`analysis.BENCHMARK_ALIASES`."""),
    ("code", """\
display(Markdown(analysis.markdown_table(
    [{"model": row, **vals} for row, vals in analysis.PAPER_RESULTS.items()])))"""),
    ("md", """\
**All metrics of every checkpoint** (pass@k for k up to the samples drawn, maj@k for math,
mean reward: partial credit for code)."""),
    ("code", """\
for lbl, summary in summaries.items():
    print(lbl)
    for bench, stats in summary.items():
        print("   ", bench, {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()})"""),
]

NOTEBOOKS = {
    "run_curves.ipynb": RUN_CURVES,
    "difficulty_levels.ipynb": DIFFICULTY_LEVELS,
    "compare_evals.ipynb": COMPARE_EVALS,
}


def build() -> dict[str, nbformat.NotebookNode]:
    return {name: notebook(name.removesuffix(".ipynb"), cells) for name, cells in NOTEBOOKS.items()}


def main(out_dir: str = HERE) -> None:
    for name, nb in build().items():
        nbformat.validate(nb)
        path = os.path.join(out_dir, name)
        nbformat.write(nb, path)
        print("wrote", path)


if __name__ == "__main__":
    main(*sys.argv[1:])
