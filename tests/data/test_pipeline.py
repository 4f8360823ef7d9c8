"""PromptPipeline: exact per-batch mixture, filters, over-long prompts, resume, determinism."""
import collections
import json

import pytest

from dsrl_jax.data.pipeline import PromptPipeline, largest_remainder


def make_records():
    recs = []
    for i in range(23):
        recs.append({"id": f"m{i}", "domain": "math", "problem": "x" * (5 + i), "answer": "1",
                     "levels": ["L1"] if i % 2 else ["L1", "L2"]})
    for i in range(11):
        recs.append({"id": f"c{i}", "domain": "code", "problem": "y" * (3 + i), "tests": [],
                     "levels": ["L3"], "source": "lcb" if i < 6 else "cf"})
    recs.append({"id": "n0", "domain": "math", "problem": "zz", "answer": "2", "levels": []})
    return recs


def tok(record):
    return [ord(c) % 50 for c in record["problem"]]


def pipe(**kw):
    args = dict(batch_prompts=9, max_prompt_len=None, tokenize_fn=tok, seed=0)
    return PromptPipeline(make_records(), **{**args, **kw})


def ids(batch):
    return [r["id"] for r in batch.records]


@pytest.mark.parametrize("total,weights,expected", [
    (128, {"math": 2.1, "code": 1}, {"math": 87, "code": 41}),
    (10, {"a": 1, "b": 1, "c": 1}, {"a": 4, "b": 3, "c": 3}),  # tie -> earlier name
    (7, {"a": 1}, {"a": 7}),
    (5, {"a": 0.01, "b": 100}, {"a": 0, "b": 5}),
])
def test_largest_remainder(total, weights, expected):
    assert largest_remainder(total, weights) == expected


def test_mixture_holds_in_every_batch():
    p = pipe(batch_prompts=31, mixture={"math": 2.1, "code": 1})
    assert p.shares == {"math": 21, "code": 10}
    seen = collections.Counter()
    for _ in range(40):  # many epochs of both components
        b = next(p)
        assert len(b.records) == len(b.prompt_ids) == len(b.component) == b.num_prompts == 31
        counts = collections.Counter(r["domain"] for r in b.records)
        assert counts == {"math": 21, "code": 10}
        for i in range(31):  # each prompt once, with its tokens and mixture component
            assert b.prompt_ids[i] == tok(b.records[i])
            assert b.component[i] == b.records[i]["domain"]
        seen.update(ids(b))
    # every epoch visits every record once: counts differ by at most one per component
    math_counts = [seen[f"m{i}"] for i in range(23)] + [seen["n0"]]
    assert max(math_counts) - min(math_counts) <= 1
    assert max(seen[f"c{i}"] for i in range(11)) - min(seen[f"c{i}"] for i in range(11)) <= 1


def test_epochs_are_reshuffled_and_seeded():
    p = pipe(batch_prompts=12, select={"domains": ["math"]})
    a, b = ids(next(p)) + ids(next(p)), ids(next(p)) + ids(next(p))
    assert sorted(a) == sorted(b) and a != b  # two epochs of 24, different orders
    q = pipe(batch_prompts=12, select={"domains": ["math"]})
    assert ids(next(q)) + ids(next(q)) == a  # same seed, same order
    r = pipe(batch_prompts=12, select={"domains": ["math"]}, seed=1)
    assert ids(next(r)) + ids(next(r)) != a


def test_filters_by_level_domain_and_source():
    p = pipe(select={"levels": ["L2"]})
    got = {i for _ in range(5) for i in ids(next(p))}
    assert got == {f"m{i}" for i in range(0, 23, 2)}
    p = pipe(select={"levels": ["L1", "L3"], "domains": ["code"]})
    assert {i for _ in range(5) for i in ids(next(p))} == {f"c{i}" for i in range(11)}
    p = pipe(mixture={"lcb": 1, "cf": 2}, batch_prompts=6)
    b = next(p)
    assert [r["source"] for r in b.records] == ["lcb"] * 2 + ["cf"] * 4
    with pytest.raises(ValueError, match="'code' matches no record"):
        pipe(select={"levels": ["L2"]}, mixture={"math": 1, "code": 1})
    with pytest.raises(ValueError, match="unknown keys"):
        pipe(select={"level": ["L1"]})


def test_overlong_prompts_dropped_and_counted():
    calls = collections.Counter()

    def counting_tok(r):
        calls[r["id"]] += 1
        return tok(r)

    # math problems have 5..27 characters (ids m0..m22), n0 has 2: keep <= 10 tokens
    p = pipe(select={"domains": ["math"]}, max_prompt_len=10, batch_prompts=4, tokenize_fn=counting_tok)
    got = [i for _ in range(30) for i in ids(next(p))]
    assert set(got) == {f"m{i}" for i in range(6)} | {"n0"}
    assert p.dropped_ids == sorted(f"m{i}" for i in range(6, 23))
    assert p.dropped >= 17 * 17 and p.get_state()["dropped"] == p.dropped  # each epoch drops them again
    assert max(calls.values()) == 1  # tokenized once per id
    with pytest.raises(ValueError, match="longer than max_prompt_len=1"):
        next(pipe(max_prompt_len=1))


def test_resume_mid_stream_gives_the_same_batches():
    kw = dict(mixture={"math": 2, "code": 1}, batch_prompts=7, max_prompt_len=20)
    ref = pipe(**kw)
    ref_batches = [ids(next(ref)) for _ in range(25)]
    p = pipe(**kw)
    for _ in range(11):
        next(p)
    state = json.loads(json.dumps(p.get_state()))
    assert set(state["components"]) == {"math", "code"}
    q = pipe(**kw)
    q.set_state(state)
    assert [ids(next(q)) for _ in range(14)] == ref_batches[11:]
    assert q.get_state() == ref.get_state()
    with pytest.raises(ValueError, match="different records"):
        pipe(**{**kw, "seed": 3}).set_state(state)
