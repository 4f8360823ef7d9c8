"""Prompt batches for GRPO: filter by level/domain, mix components at a fixed ratio.

    pipe = PromptPipeline(records, select={"levels": ["L1"], "domains": None},
                          mixture={"math": 2.1, "code": 1}, batch_prompts=128,
                          max_prompt_len=1024, tokenize_fn=lambda r: format_prompt(r, tok), seed=0)
    batch = next(pipe)       # PromptBatch: 87 math + 41 code prompts (the sampler draws each one's group)
    ckpt = pipe.get_state()  # small JSON dict; PromptPipeline(...).set_state(ckpt) resumes

Each mixture component (records whose `domain` or `source` equals its name) is an infinite
stream: epoch e visits the component in the order `permutation(seed, component, e)`, so a
component's whole state is one integer, its position (epoch = position // size). This is
the index-shuffle-repeat of a grain `MapDataset`, written out with numpy because (measured,
grain 0.2.18) grain's shuffle().repeat() costs ~100 ms per epoch boundary on small sets and
its permutation algorithm is grain's to change; an order fixed here keeps old checkpoints
resumable across library upgrades. Every batch takes EXACTLY the
largest-remainder split of `batch_prompts` by the weights (2.1:1 of 128 is 87:41 in every
batch, not on average), so the gradient sees the paper's math:code ratio at each step.

Prompts longer than `max_prompt_len` tokens are skipped and counted. Tokenization is lazy
and cached per id, so a large dataset costs nothing up front; the cache is rebuilt on resume
(tokenize_fn must be deterministic), only the counters are state.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

STATE_VERSION = 1


def largest_remainder(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer shares of `total` proportional to `weights`, summing to `total`.

    Floors first, then one more to the largest remainders; ties go to the earlier name.
    """
    names = list(weights)
    norm = sum(weights.values())
    quotas = [total * weights[n] / norm for n in names]
    shares = [math.floor(q) for q in quotas]
    order = sorted(range(len(names)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return dict(zip(names, shares))


def select_records(records: Sequence[dict], levels=None, domains=None) -> list[dict]:
    """Records with any of `levels` in their `levels` list (or `level` field) and a domain
    in `domains`; None selects everything. `levels` may also map a domain to its levels,
    e.g. {"math": ["L1"], "code": ["L3"]} (the paper's math+code mixture)."""
    def level_ok(r):
        wanted = levels.get(r.get("domain"), []) if isinstance(levels, Mapping) else levels
        if wanted is None:
            return True
        have = r.get("levels")
        have = list(have) if have is not None else ([r["level"]] if r.get("level") is not None else [])
        return bool(set(map(str, have)) & set(map(str, wanted)))

    return [r for r in records if level_ok(r) and (domains is None or r.get("domain") in domains)]


@dataclasses.dataclass
class PromptBatch:
    """One entry per prompt, in mixture order (the sampler draws each prompt's group of samples)."""

    records: list[dict]
    prompt_ids: list[list[int]]  # the tokenized prompts
    component: list[str]  # the mixture component each prompt came from

    @property
    def num_prompts(self) -> int:
        return len(self.records)


class PromptPipeline:
    def __init__(self, records: Sequence[dict], *, select: Mapping | None = None,
                 mixture: Mapping[str, float] | None = None, batch_prompts: int,
                 max_prompt_len: int | None = None, tokenize_fn: Callable[[dict], list[int]], seed: int = 0):
        select = dict(select or {})
        unknown = set(select) - {"levels", "domains"}
        if unknown:
            raise ValueError(f"select: unknown keys {sorted(unknown)}; known: levels, domains")
        if batch_prompts < 1:
            raise ValueError(f"batch_prompts must be >= 1, got {batch_prompts}")
        chosen = select_records(records, select.get("levels"), select.get("domains"))
        mixture = dict(mixture) if mixture else {"all": 1.0}
        if any(not isinstance(w, (int, float)) or w <= 0 for w in mixture.values()):
            raise ValueError(f"mixture weights must be > 0, got {mixture}")
        self.shares = largest_remainder(batch_prompts, mixture)
        self._components: dict[str, list[dict]] = {}
        for name in mixture:
            members = chosen if name == "all" and len(mixture) == 1 else [
                r for r in chosen if r.get("domain") == name or r.get("source") == name]
            if not members and self.shares[name]:
                raise ValueError(f"mixture component {name!r} matches no record after selecting {select} "
                                 f"({len(chosen)} of {len(records)} records selected)")
            self._components[name] = members
        self._orders: dict[tuple[str, int], np.ndarray] = {}  # (component, epoch) -> permutation
        self.batch_prompts, self.max_prompt_len = batch_prompts, max_prompt_len
        self.tokenize_fn, self.seed = tokenize_fn, seed
        self._fingerprint = _fingerprint(self._components, mixture, batch_prompts, seed)
        self._cache: dict[str, list[int] | None] = {}  # id -> token ids, None when too long
        self._position = {name: 0 for name in self._components}
        self.batches = 0
        self.dropped = 0  # over-long prompts skipped (occurrences, across epochs)

    # -- sizes and counters -----------------------------------------------------------------
    def component_sizes(self) -> dict[str, int]:
        return {name: len(m) for name, m in self._components.items()}

    @property
    def dropped_ids(self) -> list[str]:
        """Ids found too long so far (from the cache: rebuilt lazily after a resume)."""
        return sorted(i for i, ids in self._cache.items() if ids is None)

    def _tokens(self, record: dict) -> list[int] | None:
        key = record["id"]
        if key not in self._cache:
            ids = list(self.tokenize_fn(record))
            too_long = self.max_prompt_len is not None and len(ids) > self.max_prompt_len
            self._cache[key] = None if too_long or not ids else ids
        return self._cache[key]

    def _record_at(self, name: str, position: int) -> dict:
        members = self._components[name]
        epoch, offset = divmod(position, len(members))
        if (name, epoch) not in self._orders:
            if len(self._orders) > 4 * len(self._components):
                self._orders.clear()
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, _name_key(name), epoch])
            self._orders[name, epoch] = rng.permutation(len(members))
        return members[int(self._orders[name, epoch][offset])]

    def _take(self, name: str) -> tuple[dict, list[int]]:
        size = len(self._components[name])
        for _ in range(size + 1):
            record = self._record_at(name, self._position[name])
            self._position[name] += 1
            ids = self._tokens(record)
            if ids is not None:
                return record, ids
            self.dropped += 1
        raise ValueError(f"mixture component {name!r}: every one of its {size} prompts is empty or "
                         f"longer than max_prompt_len={self.max_prompt_len}")

    # -- iteration --------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> PromptBatch:
        records, prompt_ids, component = [], [], []
        for name, share in self.shares.items():
            for _ in range(share):
                record, ids = self._take(name)
                records.append(record)
                prompt_ids.append(ids)
                component.append(name)
        self.batches += 1
        return PromptBatch(records, prompt_ids, component)

    # -- checkpointing ----------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION, "fingerprint": self._fingerprint, "batches": self.batches,
            "dropped": self.dropped,
            "components": {name: {"position": p, "epoch": p // max(1, len(self._components[name]))}
                           for name, p in self._position.items()},
        }  # fmt: skip

    def set_state(self, state: Mapping) -> None:
        """Resume: the following batches equal those the saved pipeline would have given."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"pipeline state version {state.get('version')!r}, expected {STATE_VERSION}")
        if state["fingerprint"] != self._fingerprint:
            raise ValueError("pipeline state was saved for different records, mixture, batch size or seed")
        self._position = {name: int(c["position"]) for name, c in state["components"].items()}
        self.batches, self.dropped = int(state["batches"]), int(state["dropped"])


def _name_key(name: str) -> int:
    """A stable integer for a component name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def _fingerprint(components: Mapping[str, list[dict]], mixture, batch_prompts, seed) -> str:
    """Hash of what decides the order: a resume with other data must fail, not drift."""
    h = hashlib.sha256(json.dumps([seed, batch_prompts, sorted(mixture.items())]).encode())
    for name, members in components.items():
        h.update(name.encode() + b"\x00" + "\x00".join(r["id"] for r in members).encode())
    return h.hexdigest()[:16]
