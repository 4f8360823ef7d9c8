"""Level rules on hand-computed pass-rate cases (paper section 3.2.1)."""
import pytest

from dsrl_jax.data import levels

S, M, L, R = levels.DEFAULT_PROXIES


def rec(id, domain="math", **rates):
    names = {"s": S, "m": M, "l": L, "r": R}
    return {"id": id, "domain": domain, "pass_rates": {names[k]: v for k, v in rates.items()}}


# (record, expected levels or None when dropped). L3 draws are avoided here (32B = 0 or
# checked separately) so each case is exact.
CASES = [
    (rec("r0", s=0.5, m=0.5, l=0.0, r=1.0), ["L1", "L2", "L3"]),  # both partial: L1 and L2
    (rec("r1", s=0.5, m=1.0, l=0.0, r=1.0), ["L1", "L3"]),  # 7B full: not "both in (0,1)"
    (rec("r2", s=0.0, m=1.0, l=0.0, r=0.5), ["L2", "L3"]),  # 1.5B=0, 7B=1
    (rec("r3", s=0.0, m=0.25, l=0.0, r=0.5), ["L2", "L3"]),  # 1.5B=0, 7B partial
    (rec("r4", s=0.0, m=0.0, l=0.0, r=0.25), ["L3"]),  # only R1 solves it
    (rec("r5", s=1.0, m=1.0, l=0.0, r=1.0), ["L3"]),  # 1.5B always right: not L1
    (rec("r6", s=0.5, m=0.5, l=0.0, r=0.0), None),  # R1 never solves: dropped
    (rec("r7", s=0.0, m=0.0, l=0.0), ["L3"]),  # every proxy 0, R1 unknown: kept, L3
    (rec("r8", s=0.0, m=0.0, l=0.0, r=0.0), None),
    (rec("r9", s=0.5, m=0.0, l=0.0, r=1.0), ["L1", "L3"]),  # 7B below 1.5B: not L2
    (rec("r10"), []),  # no rates at all: R1 unknown keeps it, no level holds
    (rec("r11", s=1.0, m=0.5, l=0.0, r=1.0), ["L3"]),
    (rec("r12", s=0.5, m=0.75, l=0.0), ["L1", "L2", "L3"]),  # R1 unknown, 32B fails
    (rec("r13", s=0.0, m=0.5), ["L2"]),  # R1 and 32B unknown: no L3 (needs a 32B rate)
]

# With R1 rates required, a problem without one is dropped, whatever the others say.
STRICT = {"r7": None, "r10": None, "r12": None, "r13": None}


@pytest.mark.parametrize("record,expected", CASES, ids=[c[0]["id"] for c in CASES])
def test_paper_rules_hand_cases(record, expected):
    out = levels.assign_levels([record], levels.paper_level_rules(), seed=0)
    if expected is None:
        assert out == []
    else:
        assert out[0]["levels"] == expected
        assert out[0]["pass_rates"] == record["pass_rates"]  # the record is carried along


@pytest.mark.parametrize("record,expected", CASES, ids=[c[0]["id"] for c in CASES])
def test_paper_rules_requiring_r1_rates(record, expected):
    out = levels.assign_levels([record], levels.paper_level_rules(require_strongest=True), seed=0)
    expected = STRICT.get(record["id"], expected)
    assert (out == []) if expected is None else out[0]["levels"] == expected


def test_l3_without_r1_rates_keeps_what_the_32b_fails():
    """The default scoring has no R1 rates: L3 = every 32B failure + half the 32B-solved."""
    failed = [rec(f"f{i}", s=0.0, m=0.0, l=0.0) for i in range(200)]
    solved = [rec(f"s{i}", s=1.0, m=1.0, l=1.0) for i in range(2000)]
    out = levels.assign_levels(failed + solved, seed=3)
    l3 = {r["id"] for r in out if "L3" in r["levels"]}
    assert len(out) == 2200 and {r["id"] for r in failed} <= l3
    assert abs(len(l3 - {r["id"] for r in failed}) / 2000 - 0.5) < 0.04
    note = levels.level_table(out, levels.paper_level_rules()).splitlines()[-1]
    assert note == "keep: 2200 of 2200 kept records have no deepseek-r1 rate ('unknown' counts as keep)"


def test_l3_takes_a_seeded_fraction_of_32b_solved():
    math = [rec(f"m{i}", s=1.0, m=1.0, l=0.75, r=1.0) for i in range(4000)]
    code = [rec(f"c{i}", "code", s=1.0, m=1.0, l=1.0, r=1.0) for i in range(4000)]
    out = levels.assign_levels(math + code, seed=7)
    frac = lambda dom: sum("L3" in r["levels"] for r in out if r["domain"] == dom) / 4000  # noqa: E731
    assert abs(frac("math") - 0.5) < 0.03 and abs(frac("code") - 0.1) < 0.02
    again = levels.assign_levels(list(reversed(math + code)), seed=7)  # order-free
    assert {r["id"]: r["levels"] for r in again} == {r["id"]: r["levels"] for r in out}
    other = levels.assign_levels(math, seed=8)
    assert [r["levels"] for r in other] != [r["levels"] for r in out[:4000]]


def test_custom_rules_and_proxy_names():
    rules = levels.paper_level_rules(small="a", medium="b", large="c", strongest="d",
                                     l3_fraction={"math": 1.0, "code": 0.0})
    r = {"id": "x", "domain": "math", "pass_rates": {"a": 0.5, "b": 0.5, "c": 1.0, "d": 1.0}}
    assert levels.assign_levels([r], rules)[0]["levels"] == ["L1", "L2", "L3"]
    rules = {"levels": [{"name": "hard", "when": {"not": {"proxy": "a", "op": "ge", "value": 0.5}}},
                        {"name": "unk", "when": {"proxy": "zz", "op": "eq", "value": 0, "if_missing": True}}]}
    assert levels.assign_levels([r], rules)[0]["levels"] == ["unk"]


@pytest.mark.parametrize("rules,needle", [
    ({"levels": [{"name": "L1", "when": {"proxy": "a", "op": "between", "value": 1}}]}, "levels[L1].when.op"),
    ({"levels": [{"name": "L1", "when": {"proxy": "a", "op": "in_open", "value": 1}}]}, "needs [lo, hi]"),
    ({"levels": [{"name": "L1", "when": {"any": []}}]}, "when.any"),
    ({"levels": [{"name": "L1", "when": {"sample": 2}}]}, "sample"),
    ({"levels": [{"name": "L1", "when": {"foo": 1}}]}, "needs one of"),
    ({"levels": []}, "rules.levels"),
    ({"keep": {"proxy": "a"}, "levels": [{"name": "L1", "when": {"sample": 1}}]}, "rules.keep.op"),
])
def test_bad_rules_name_the_field(rules, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        levels.assign_levels([rec("a", s=0.5)], rules)


def test_level_table_counts_overlaps():
    out = levels.assign_levels([c[0] for c in CASES], seed=0)
    table = levels.level_table(out + [{"id": "n", "domain": "code", "levels": []}])
    lines = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:-1]}
    # columns: code math all
    assert lines["L1"] == ["0", "4", "4"] and lines["L2"] == ["0", "5", "5"]
    assert lines["L3"] == ["0", "10", "10"] and lines["-"] == ["1", "1", "2"]
    assert lines["records"] == ["1", "12", "13"]
