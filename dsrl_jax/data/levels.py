"""Difficulty levels from proxy-model pass rates, as rules in config (data, not code).

A record scored by `dsrl_jax.score` carries `pass_rates: {proxy_name: rate in [0, 1]}`.
`assign_levels` keeps the records that pass the `keep` rule and gives each a `levels`
list: every level whose `when` condition holds. Levels OVERLAP in the paper (a problem the
1.5B model half-solves and the 7B model half-solves is both L1 and L2), so a record has a
list of levels, not one; a pipeline selecting `levels=["L2"]` takes every record whose
list contains "L2". Kept records matching no level get `levels: []`.

The rule language (plain dicts/lists, so it lives in a ConfigDict and on the command line):

    {"proxy": "r1-distill-1.5b", "op": "in_open", "value": [0, 1]}
        ops: eq ne lt le gt ge (number), in_open (a, b), in_closed [a, b].
        `proxy` may be a list: the first proxy the record has a rate for is used
        ("the strongest proxy that was scored"). A record without any rate for it fails
        the condition, or passes when the condition says "if_missing": True.
    {"all": [cond, ...]}   {"any": [cond, ...]}   {"not": cond}
    {"sample": 0.5}  or  {"sample": {"math": 0.5, "code": 0.1}}
        true for a seeded pseudo-random fraction of records (per domain). The draw hashes
        (seed, level name, record id), so it does not depend on record order or on which
        other records are present, and is the same on every run with the same seed.

The paper's rules are `paper_level_rules()`. Its wording "the 32B model fails to solve"
is read as pass rate == 0 (as in "fails completely (pass rate = 0)" for L2), and
"solved" as pass rate > 0. The paper drops what DeepSeek-R1 never solves; R1 is not a
model this project can sample, so its rates come from a file and are often absent. A
problem without an R1 rate is KEPT by default ("R1 unknown" counts as keep): falling back
to "the 32B solves it" would drop every problem the 32B fails, the core of L3.
`paper_level_rules(require_strongest=True)` drops problems without an R1 rate instead.
"""
from __future__ import annotations

import collections
import hashlib
import operator

DEFAULT_PROXIES = ("r1-distill-1.5b", "r1-distill-7b", "r1-distill-32b", "deepseek-r1")

_OPS = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
    "gt": operator.gt, "ge": operator.ge,
    "in_open": lambda x, v: v[0] < x < v[1],
    "in_closed": lambda x, v: v[0] <= x <= v[1],
}  # fmt: skip


def paper_level_rules(small=DEFAULT_PROXIES[0], medium=DEFAULT_PROXIES[1], large=DEFAULT_PROXIES[2],
                      strongest=DEFAULT_PROXIES[3], l3_fraction=None,
                      require_strongest: bool = False) -> dict:
    """The paper's section 3.2.1 rules over configurable proxy names.

    `keep`: the strongest proxy (DeepSeek-R1) solves the problem at least once, or has no
    rate for it ("unknown" keeps; with `require_strongest`, a missing rate drops).
    """
    partial = lambda p: {"proxy": p, "op": "in_open", "value": [0, 1]}  # noqa: E731
    zero = lambda p: {"proxy": p, "op": "eq", "value": 0}  # noqa: E731
    return {
        "keep": {"proxy": strongest, "op": "gt", "value": 0, "if_missing": not require_strongest},
        "levels": [
            {"name": "L1", "when": partial(small)},
            {"name": "L2", "when": {"any": [
                {"all": [zero(small), {"proxy": medium, "op": "gt", "value": 0}]},
                {"all": [partial(small), partial(medium)]},
            ]}},
            {"name": "L3", "when": {"any": [
                zero(large),
                {"all": [{"proxy": large, "op": "gt", "value": 0},
                         {"sample": dict(l3_fraction or {"math": 0.5, "code": 0.1})}]},
            ]}},
        ],
    }  # fmt: skip


def unit_draw(seed: int, salt: str, record_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, salt, id): order-free seeded sampling."""
    digest = hashlib.sha256(f"{seed}\x00{salt}\x00{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def validate_condition(cond, where: str = "condition") -> None:
    """Raise ValueError naming the offending part of a rule."""
    if not isinstance(cond, dict):
        raise ValueError(f"{where}: a condition must be a dict, got {cond!r}")
    if "all" in cond or "any" in cond:
        key = "all" if "all" in cond else "any"
        if not isinstance(cond[key], (list, tuple)) or not cond[key]:
            raise ValueError(f"{where}.{key}: needs a non-empty list of conditions")
        for i, sub in enumerate(cond[key]):
            validate_condition(sub, f"{where}.{key}[{i}]")
    elif "not" in cond:
        validate_condition(cond["not"], f"{where}.not")
    elif "sample" in cond:
        fractions = cond["sample"]
        values = fractions.values() if isinstance(fractions, dict) else [fractions]
        if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
            raise ValueError(f"{where}.sample: fractions must be numbers in [0, 1], got {fractions!r}")
    elif "proxy" in cond:
        if cond.get("op") not in _OPS:
            raise ValueError(f"{where}.op: {cond.get('op')!r} is not one of {sorted(_OPS)}")
        value = cond.get("value")
        pair = cond["op"].startswith("in_")
        if pair != isinstance(value, (list, tuple)) or (pair and len(value) != 2):
            raise ValueError(f"{where}.value: {cond['op']} needs {'[lo, hi]' if pair else 'a number'}, got {value!r}")
    else:
        raise ValueError(f"{where}: needs one of proxy / all / any / not / sample, got keys {sorted(cond)}")


def validate_rules(rules) -> None:
    if "keep" in rules and rules["keep"] is not None:
        validate_condition(rules["keep"], "rules.keep")
    names = [lvl.get("name") for lvl in rules.get("levels", [])]
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"rules.levels: needs levels with distinct string names, got {names}")
    for lvl in rules["levels"]:
        validate_condition(lvl.get("when"), f"rules.levels[{lvl['name']}].when")


def evaluate(cond, record: dict, seed: int = 0, salt: str = "") -> bool:
    """Whether `record` (with `pass_rates`) satisfies `cond`; `salt` names the draw."""
    if "all" in cond:
        return all(evaluate(c, record, seed, salt) for c in cond["all"])
    if "any" in cond:
        return any(evaluate(c, record, seed, salt) for c in cond["any"])
    if "not" in cond:
        return not evaluate(cond["not"], record, seed, salt)
    if "sample" in cond:
        fraction = cond["sample"]
        if isinstance(fraction, dict):
            fraction = fraction.get(record.get("domain"), 0.0)
        return unit_draw(seed, salt, record["id"]) < fraction
    rates = record.get("pass_rates") or {}
    names = cond["proxy"] if isinstance(cond["proxy"], (list, tuple)) else [cond["proxy"]]
    rate = next((rates[n] for n in names if rates.get(n) is not None), None)
    if rate is None:
        return bool(cond.get("if_missing", False))
    return bool(_OPS[cond["op"]](float(rate), cond["value"]))


def assign_levels(records: list[dict], rules=None, seed: int = 0) -> list[dict]:
    """Kept records (copies) with `levels: [name, ...]`, in input order."""
    rules = rules if rules is not None else paper_level_rules()
    validate_rules(rules)
    out = []
    for record in records:
        if rules.get("keep") and not evaluate(rules["keep"], record, seed, "keep"):
            continue
        levels = [lvl["name"] for lvl in rules["levels"] if evaluate(lvl["when"], record, seed, lvl["name"])]
        out.append({**record, "levels": levels})
    return out


def level_counts(records: list[dict]) -> dict[tuple[str, str], int]:
    """{(level or "-", domain): count}; a record counts once under each of its levels."""
    counts = collections.Counter()
    for r in records:
        for level in r.get("levels") or ["-"]:
            counts[level, r.get("domain", "?")] += 1
    return dict(counts)


def unknown_kept(records: list[dict], rules) -> str | None:
    """A line saying how many kept records had no rate for the keep rule's proxy, when the
    rule keeps such records ("if_missing"); None otherwise."""
    keep = rules.get("keep") or {}
    if "proxy" not in keep or not keep.get("if_missing"):
        return None
    names = keep["proxy"] if isinstance(keep["proxy"], (list, tuple)) else [keep["proxy"]]
    n = sum(all((r.get("pass_rates") or {}).get(p) is None for p in names) for r in records)
    return f"keep: {n} of {len(records)} kept records have no {'/'.join(names)} rate ('unknown' counts as keep)"


def level_table(records: list[dict], rules=None) -> str:
    """Counts per level and domain; levels overlap, so columns need not sum to the total.
    With `rules`, a last line counts the records kept without a rate for the keep proxy."""
    counts = level_counts(records)
    domains = sorted({d for _, d in counts} | {r.get("domain", "?") for r in records})
    levels = sorted({lvl for lvl, _ in counts}, key=lambda s: (s == "-", s))
    header = ["level"] + domains + ["all"]
    rows = [[lvl] + [counts.get((lvl, d), 0) for d in domains] for lvl in levels]
    rows = [row + [sum(row[1:])] for row in rows]
    totals = collections.Counter(r.get("domain", "?") for r in records)
    rows.append(["records"] + [totals[d] for d in domains] + [len(records)])
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    note = unknown_kept(records, rules) if rules is not None else None
    return "\n".join(lines) + "\n(levels overlap: a record is counted under each of its levels; '-' = none)" + (
        f"\n{note}" if note else "")
