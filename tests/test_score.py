"""Difficulty scoring: pass rates from tiny random proxies, kill + resume, merging, tables."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from dsrl_jax import score
from tests.conftest import REPO, shared_path

CONFIG = """
import sys
sys.path.insert(0, {repo!r})
from configs.score import get_config as base, proxy
from dsrl_jax.data.levels import paper_level_rules

def get_config():
    c = base()
    c.sources = [{{"path": {data!r}, "filters": {{"limit": 6}}}}]
    c.decontaminate.against = ""  # offline: no hub benchmarks to check against
    small = dict(k=2, max_new_tokens=16, batch_size=2, dtype="float32", max_prompt_len=4096, top_p=1.0)
    c.proxies = [proxy("tiny-a", {a!r}, **small), proxy("tiny-b", {b!r}, tokenizer={a!r}, **small)]
    c.pass_rates_file = {ext!r}
    c.output = {out!r}
    c.reward_workers = 1
    c.level_rules = paper_level_rules(small="tiny-a", medium="tiny-b", large="tiny-b", strongest="ext")
    return c
"""


def progress_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_score_kill_and_resume(tmp_path, r1_tokenizer_dir):
    from tests.hf_utils import make_hf_model

    data = shared_path("data", "math", "aime24.jsonl")
    dirs = []
    for seed, name in enumerate(("a", "b")):
        d = tmp_path / name
        make_hf_model(d, seed=seed, vocab_size=151936, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
        for f in os.listdir(r1_tokenizer_dir):
            if f != "config.json":  # keep the tiny model's own config
                shutil.copy(r1_tokenizer_dir / f, d / f)
        dirs.append(str(d))
    ids = [json.loads(line)["id"] for line in data.read_text().splitlines()[:6]]
    ext = tmp_path / "r1_rates.jsonl"  # DeepSeek-R1's rates, computed elsewhere: 2 never solved
    ext.write_text("".join(json.dumps({"id": i, "proxy": "ext", "pass_rate": [0.0, 0.5, 1.0][n % 3]}) + "\n"
                           for n, i in enumerate(ids)))
    out = tmp_path / "scored.jsonl"
    cfg = tmp_path / "score_cfg.py"
    cfg.write_text(CONFIG.format(repo=str(REPO), data=str(data), a=dirs[0], b=dirs[1], ext=str(ext), out=str(out)))
    cmd = [sys.executable, "-m", "dsrl_jax.score", f"--config={cfg}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    progress = str(out) + ".scores.jsonl"

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(progress) and progress_lines(progress):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    log = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, log[-3000:]
    first = progress_lines(progress)
    assert 1 <= len(first) < 12 and not out.exists()

    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = progress_lines(progress)
    keys = [(r["proxy"], r["id"]) for r in lines]
    assert len(keys) == len(set(keys)) == 12  # nothing scored twice
    assert set(keys) == {(p, i) for p in ("tiny-a", "tiny-b") for i in ids}
    assert lines[: len(first)] == first  # the first run's results were kept, not redone
    assert f"already_scored': {sum(r['proxy'] == 'tiny-a' for r in first)}" in run.stderr
    for r in lines:
        assert r["k"] == 2 and len(r["scores"]) == 2 and r["pass_rate"] == sum(r["scores"]) / 2

    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == [i for n, i in enumerate(ids) if n % 3]  # ext = 0 dropped
    for r in scored:
        assert set(r["pass_rates"]) == {"tiny-a", "tiny-b", "ext"}
        assert r["pass_rates"]["tiny-a"] == next(x["pass_rate"] for x in lines if x["id"] == r["id"] and x["proxy"] == "tiny-a")
        assert r["levels"] == score.levels_lib.assign_levels([r], score.levels_lib.paper_level_rules(
            small="tiny-a", medium="tiny-b", large="tiny-b", strongest="ext"))[0]["levels"]
    assert "pass rate" in run.stdout and "tiny-b" in run.stdout and "records" in run.stdout


def test_read_progress_repairs_a_torn_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"proxy": "a", "id": "1", "pass_rate": 0.5}) + "\n" + '{"proxy": "a", "id": "2", "pa')
    assert list(score.read_progress(str(path))) == [("a", "1")]
    assert path.read_text().endswith("0.5}\n")  # cut back so the next append starts a fresh line


def test_pass_rates_file_and_merge(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "x", "proxy": "r1", "pass_rate": 0.25}\n{"id": "y", "pass_rates": {"r1": 1, "q": 0}}\n')
    ext = score.read_pass_rates(str(path))
    assert ext == {"x": {"r1": 0.25}, "y": {"r1": 1.0, "q": 0.0}}
    records = [{"id": "x", "pass_rates": {"old": 0.5}}, {"id": "y"}, {"id": "z"}]
    merged = score.merge_pass_rates(records, {("p", "x"): {"pass_rate": 0.5}, ("q", "y"): {"pass_rate": 0.75}}, ext)
    assert [r.get("pass_rates") for r in merged] == [{"old": 0.5, "r1": 0.25, "p": 0.5}, {"r1": 1.0, "q": 0.75}, None]
    path.write_text('{"id": "x", "proxy": "r1", "pass_rate": 2}\n')
    with pytest.raises(ValueError, match="r.jsonl:1: not a pass-rate line"):
        score.read_pass_rates(str(path))


def test_histogram_table():
    recs = [{"pass_rates": {"a": v, "b": 1.0}} for v in (0.0, 0.0, 0.1, 0.5, 0.99, 1.0)] + [{"pass_rates": {"b": 0.3}}]
    rows = {line.split()[0]: line.split()[1:] for line in score.histogram_table(recs, ["a", "b"]).splitlines()[2:]}
    assert rows["0"] == ["2", "0"] and rows["(0,.25)"] == ["1", "0"] and rows["[.25,.5)"] == ["0", "1"]
    assert rows["[.5,.75)"] == ["1", "0"] and rows["[.75,1)"] == ["1", "0"] and rows["1"] == ["1", "6"]
    assert rows["scored"] == ["6", "7"]
