"""The paper's pipeline rehearsed end to end (experiments/rehearsal.py --quick).

It runs in a subprocess, so its 8-device XLA flag applies whatever this process imported:
the real score / staged / eval configs on a (fsdp=4, tensor=2) mesh, random-weights
checkpoints with the real R1-Distill tokenizer and vocabulary, real math and code rows.
The assertions read the JSON it writes.
"""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared_path


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    shared = shared_path()
    shared_path("tokenizers", "deepseek-r1-distill-qwen-1.5b")
    shared_path("data", "math", "train_deepscaler_math.jsonl")
    shared_path("data", "code", "lcb_v5_public.json")
    tmp = tmp_path_factory.mktemp("rehearsal")
    out = tmp / "rehearsal.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": ""}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "rehearsal.py"), "--quick", "--out", str(out),
                           "--workdir", str(tmp / "run"), "--shared", str(shared)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text()), proc.stdout, tmp / "run"


@pytest.mark.slow
def test_every_stage_ran_sharded_on_8_devices(rehearsal):
    out, stdout, _ = rehearsal
    assert out["stages_ran"] == {k: True for k in ("score", "levels", "stage1", "stage2", "periodic_eval", "eval",
                                                   "export")}
    assert out["settings"]["devices"] == 8 and out["settings"]["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
    # Every policy loaded (two proxies, the training init, the trained workdir for eval) and
    # the trained state: parameters split over all 8 devices along fsdp and tensor.
    specs = [p["spec"] for p in out["placements"]]
    assert specs == ["r1-distill-1.5b", "r1-distill-7b", "r1-distill-1.5b", "train"], specs
    for where in out["placements"] + [out["training"]["placement"]]:
        embed = where["embed"]
        assert embed["shape"][0] == 151936 and embed["devices"] == 8
        assert "fsdp" in embed["spec"] and "tensor" in embed["spec"]
        assert math.prod(embed["shard_shape"]) * 8 == math.prod(embed["shape"])
    assert [p["phase"] for p in out["phases"]] == ["models", "score + levels", "staged GRPO",
                                                   "HF export + transformers", "eval"]
    assert "| staged GRPO |" in stdout  # the printed table


@pytest.mark.slow
def test_scoring_and_the_level_table(rehearsal):
    out, _, run = rehearsal
    score, per_domain = out["score"], out["score"]["problems"]["by_domain"]
    assert set(per_domain) == {"math", "code"} and all(n >= 4 for n in per_domain.values())
    total = score["problems"]["records"]
    for proxy in ("r1-distill-1.5b", "r1-distill-7b"):  # sampled and graded for real
        assert score["measured"][proxy]["scored"] == total
    # The paper's rules over the synthetic profiles, cycled per domain: (0.5, .75, 1, 1) is
    # L1 and L2, (0, .25, .75, 1) L2, (0, 0, 0, .5) L3, (0, 0, 0, 0) dropped (R1 never solves).
    table = out["levels"]["table"]
    for domain, n in per_domain.items():
        cycle = [len(range(i, n, 4)) for i in range(4)]
        assert table["L1"][domain] == cycle[0]
        assert table["L2"][domain] == cycle[0] + cycle[1]
        assert cycle[2] <= table["L3"][domain] <= cycle[0] + cycle[1] + cycle[2]
    assert out["levels"]["kept"] == total - sum(len(range(3, n, 4)) for n in per_domain.values())
    scored = [json.loads(line) for line in open(run / "scored" / "problems.jsonl")]
    assert len(scored) == out["levels"]["kept"] and all("r1-distill-7b" in r["pass_rates"] for r in scored)


@pytest.mark.slow
def test_stage_switch_and_stage_two_loss(rehearsal):
    out, _, _ = rehearsal
    t = out["training"]
    assert t["stages"]["stage1"]["levels"] == ["L2"] and t["stages"]["stage2"]["levels"] == ["L3"]
    assert t["stages"]["stage2"]["mask_truncated"] and t["stages"]["stage2"]["entropy_coef"] == 0
    assert t["stages"]["stage1"]["entropy_coef"] > 0 and not t["stages"]["stage1"]["mask_truncated"]
    switch = t["stage_switch_after_step"]
    assert switch == 2  # the plateau rule: window 1, patience 1, min_steps 2
    steps = t["steps"]
    assert [s["stage"] for s in steps] == ["stage1"] * switch + ["stage2"] * (len(steps) - switch)
    assert len(steps) == t["final_step"] == out["settings"]["steps"] and t["final_step"] in t["checkpoints"]
    for s in steps:
        assert s["skipped_updates"] == 0 and s["reward/mean"] == 0.0  # random weights solve nothing
        limit = t["stages"][s["stage"]]["max_response_len"]
        assert s["truncation_rate"] == 1.0 and s["response_length/mean"] == limit
        if s["stage"] == "stage1":  # the entropy bonus moves the policy
            assert s["grad_norm"] > 0 and s["entropy"] > 0
        else:  # every response was cut at the limit and masked: no loss, no gradient (KL included)
            assert s["grad_norm"] == 0 and s["loss"] == 0


@pytest.mark.slow
def test_periodic_and_final_eval(rehearsal):
    out, _, _ = rehearsal
    every, steps = out["settings"]["eval_every"], out["settings"]["steps"]
    assert sorted(int(k) for k in out["periodic_eval"]) == list(range(every, steps + 1, every))
    limit = out["settings"]["eval_limit"]
    expected = {"aime24": 16 * limit, "math500": 16 * limit, "livecodebench": 4 * limit}  # the paper's n
    for evals in out["periodic_eval"].values():
        assert {b: evals[f"{b}/n_samples"] for b in expected} == expected
    summary = out["eval"]["summary"]
    assert {b: s["n_samples"] for b, s in summary.items()} == expected
    assert all(s["pass@1"] == 0.0 for s in summary.values())


@pytest.mark.slow
def test_export_loads_in_transformers_with_our_logits(rehearsal):
    out, _, run = rehearsal
    e = out["export"]
    assert e["loaded_by"] == "Qwen2ForCausalLM" and e["vocab"] == 151936 and e["tokens"] >= 16
    assert e["max_abs_logit_diff"] < 1e-4 and e["argmax_agree"] == 1.0
    assert e["max_abs_param_change_from_init"] > 0  # it is the trained policy, not the init
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "generation_config.json"} <= set(e["files"])
    assert (run / "train" / "hf" / "model.safetensors").exists()
