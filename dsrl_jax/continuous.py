"""Continuous batching: a fixed number of decoding slots over a paged KV pool.

    out = Sampler(cfg, mesh).sample(params, prompts, rng,
                                    SampleOptions(max_new_tokens=24576, n=16, max_in_flight=192),
                                    on_finished=lambda rows, out: pool.submit(rows, out))

Rows (row = prompt_index * n + sample_index) wait in a queue. The host runs rounds:
  1. admit waiting rows into free slots: one jitted prefill of the admitted prompts writes
     their keys/values into free pages of the pool and their next-token logits into the slots;
  2. give every live slot the pages its next `steps_per_call` tokens need; when a group's
     pool is full, its most recently admitted row is preempted (pages freed, back to the
     head of the queue with its tokens so far, prefilled again with them when re-admitted);
  3. run the jitted decode loop (`steps_per_call` steps, or fewer when every slot is done);
  4. collect each slot's new tokens; rows that emitted a stop token or reached
     max_new_tokens are finished: their pages and slots are freed and `on_finished(rows,
     output)` receives them (a SampleOutput of those rows, in the order of `rows`) while the
     other rows keep decoding. It may return a list of further prompts: they join the queue
     (n samples each, rows numbered after all earlier ones) and appear in the final output.

Slots and pages are split into G groups, one per data-parallel shard: a slot only owns pages
of its group, so every gather and scatter stays on its device. Attention reads the whole pool
once per step (attention.pool_step), so the cache is sized by `kv_cache_tokens` (the tokens
live at once), not by rows x the length cap. Each row draws token t from
fold_in(fold_in(rng, row), t) (token_choice.row_uniforms): samples do not depend on slots,
rounds or preemption, and match the static path's.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dsrl_jax import parallel, token_choice
from dsrl_jax.decoding import FINISH_LENGTH, FINISH_STOP, SampleOutput, bucket, gathers_weights, loop_params
from dsrl_jax.models import qwen2


class Layout:
    """Shapes of one continuous-batching configuration: G groups x S slots, N pages of P
    tokens per group (page 0 is a scratch page), M pages per row at most."""

    def __init__(self, groups, slots, pages, page_size, max_row_pages):
        self.G, self.S, self.N, self.P, self.M = groups, slots, pages, page_size, max_row_pages


def plan_layout(sampler, max_in_flight: int, kv_cache_tokens, page_size: int, max_prompt: int,
                max_new: int) -> Layout:
    g = sampler.dp
    s = -(-max_in_flight // g)
    longest = _round(bucket(max_prompt + max_new, sampler.min_prompt_bucket), page_size)  # a re-admitted row's prompt
    m = -(-(longest + bucket(max_new)) // page_size)
    one_row = -(-(_round(bucket(max_prompt, sampler.min_prompt_bucket), page_size) + max_new) // page_size)
    tokens = kv_cache_tokens or s * g * one_row * page_size
    n = -(-tokens // (g * page_size)) + 1
    if n - 1 < one_row:
        raise ValueError(f"kv_cache_tokens={kv_cache_tokens}: each of the {g} data-parallel groups needs pages for "
                         f"at least one whole row ({one_row * page_size * g} tokens in all)")
    return Layout(g, s, n, page_size, m)


def _round(n: int, p: int) -> int:
    return -(-n // p) * p


class Programs:
    """The jitted prefill and decode programs for one sampler and layout."""

    def __init__(self, sampler, layout: Layout):
        self.sampler, self.lay = sampler, layout
        pin = lambda fn: parallel.pinned(fn, sampler.mesh, sampler.batch_axes)  # activations' batch dim
        self.prefill = jax.jit(pin(self._prefill), static_argnames=("cache_dtype", "gather_per_layer"),
                               donate_argnums=(1,))
        self.decode = jax.jit(pin(self._decode), static_argnames=("steps", "opts", "gather_per_layer"),
                              donate_argnums=(1,))
        self.init_state = jax.jit(pin(self._init_state), static_argnames=("cache_dtype",))

    # -- shardings --------------------------------------------------------------------------
    def slot_sharding(self, ndim):
        return parallel.batch_sharding(self.sampler.mesh, ndim, self.sampler.rules)

    def pool_sharding(self):
        mesh, cfg = self.sampler.mesh, self.sampler.cfg
        spec = [self.slot_sharding(1).spec[0], None, None, None, None]
        if mesh.shape.get("tensor", 1) > 1 and cfg.num_kv_heads % mesh.shape["tensor"] == 0:
            spec[2] = "tensor"
        return NamedSharding(mesh, P(*spec))

    def _constrain(self, state):
        pool = self.pool_sharding()
        out = {k: jax.lax.with_sharding_constraint(v, self.slot_sharding(v.ndim))
               for k, v in state.items() if k not in ("k", "v")}
        for k in ("k", "v"):
            out[k] = tuple(jax.lax.with_sharding_constraint(x, pool) for x in state[k])
        return out

    def _init_state(self, cache_dtype: str):
        """The device state: the pool and, per slot, next-token logits, the next token index
        to write (pos), the first visible one (start), tokens generated, row id, live flag."""
        lay, cfg = self.lay, self.sampler.cfg
        b = lay.G * lay.S
        st = qwen2.init_pool(cfg, lay.G, lay.N, lay.P, cache_dtype)
        st.update(last=jnp.zeros((b, cfg.vocab_size), jnp.float32), pos=jnp.zeros((b,), jnp.int32),
                  start=jnp.zeros((b,), jnp.int32), ngen=jnp.zeros((b,), jnp.int32),
                  row=jnp.zeros((b,), jnp.int32), live=jnp.zeros((b,), bool))
        return self._constrain(st)

    # -- device side --------------------------------------------------------------------------
    def _put(self, x, slots, val):
        """x [G*S, ...] with val [G*A, ...] written at local slots [G, A] (S: dropped)."""
        s = self.lay.S

        def local(x, slots, val):
            g = slots.shape[0]
            xs, vs = x.reshape(g, s, *x.shape[1:]), val.reshape(g, -1, *val.shape[1:])
            return jax.vmap(lambda a, i, v: a.at[i].set(v, mode="drop"))(xs, slots, vs).reshape(x.shape)

        spec = lambda a: ("batch",) + (None,) * (a.ndim - 1)
        return parallel.per_batch_shard(local, (x, slots, val), (spec(x), spec(slots), spec(val)), spec(x))

    def _write_pages(self, pools, chunks, pages, values: bool):
        """Every layer's prefilled chunk [G*A, ...] into its pool's pages, per shard."""
        def local(pools, chunks, pages):
            g = pages.shape[0]
            return tuple(qwen2.write_pages(p, c.reshape(g, -1, *c.shape[1:]), pages, values)
                         for p, c in zip(pools, chunks))

        spec = lambda a: ("batch",) + (None,) * (a.ndim - 1)
        pool_specs = tuple(("batch", None, "heads", None, None) for _ in pools)
        chunk_specs = tuple(("batch", "heads", None, None) for _ in chunks)
        return parallel.per_batch_shard(local, (tuple(pools), tuple(chunks), pages),
                                        (pool_specs, chunk_specs, spec(pages)), pool_specs,
                                        heads=self.sampler.cfg.num_kv_heads)

    def _prefill(self, params, state, tokens, mask, slots, pages, rows, ngen0, *, cache_dtype, gather_per_layer=False):
        """Prefills tokens/mask [G*A, L] (left-padded) into local `slots` [G, A] and their
        `pages` [G, A, L/P] (pages >= N and slots >= S mark padding)."""
        cfg, lay = self.sampler.cfg, self.lay
        ga, length = tokens.shape
        cache = qwen2.init_cache(cfg, ga, length, cache_dtype)
        positions = qwen2.positions_from_mask(mask)
        hidden, cache = qwen2.forward(cfg, params, tokens, positions, mask, cache, 0, return_hidden=True,
                                      gather_per_layer=gather_per_layer)
        last = (hidden[:, -1] @ qwen2.head_weight(cfg, params).astype(hidden.dtype)).astype(jnp.float32)
        new = dict(state)
        new["k"] = self._write_pages(state["k"], [c[0] for c in cache["k"]], pages, False)
        new["v"] = self._write_pages(state["v"], [c[0] for c in cache["v"]], pages, True)
        full = lambda v: jnp.full((ga,), v, jnp.int32)
        new["last"] = self._put(state["last"], slots, last)
        new["pos"] = self._put(state["pos"], slots, full(length))
        new["start"] = self._put(state["start"], slots, length - mask.sum(-1).astype(jnp.int32))
        new["ngen"] = self._put(state["ngen"], slots, ngen0.reshape(-1))
        new["row"] = self._put(state["row"], slots, rows.reshape(-1))
        new["live"] = self._put(state["live"], slots, jnp.ones((ga,), bool))
        return self._constrain(new)

    def _decode(self, params, state, table, owner, base, active, rng, max_new, temperature, top_p, *, steps, opts,
                gather_per_layer=False):
        """Up to `steps` decode steps of every live slot; returns (state, tokens [G*S, steps],
        log-probs [G*S, steps]) where slot s's new tokens are its first ngen_after - ngen_before."""
        cfg = self.sampler.cfg
        _, greedy, top_k, use_top_p, stops, _, pad_id = opts
        b = active.shape[0]
        weights0 = loop_params(cfg, params, self.sampler.mesh)
        pick = functools.partial(token_choice.choose, greedy=greedy, top_k=top_k, use_top_p=use_top_p)
        stop_ids = jnp.asarray(stops if stops else (-1,), jnp.int32)
        fixed = {"table": table, "owner": owner, "base": base, "start": state["start"].reshape(table.shape[:2])}

        def cond(c):
            return (c[0] < steps) & jnp.any(c[1])

        def body(c):
            i, live, last, pos, ngen, ks, vs, out_tok, out_lp = c
            weights, i = jax.lax.optimization_barrier((weights0, i))  # see Sampler._generate_impl
            u = token_choice.row_uniforms(rng, state["row"], ngen)
            tok = pick(last, u, temperature, top_p)
            lp = token_choice.sampled_logprob(last, tok, temperature, greedy=greedy)
            tok = jnp.where(live, tok, pad_id)
            out_tok = out_tok.at[:, i].set(tok)
            out_lp = out_lp.at[:, i].set(jnp.where(live, lp, 0.0))
            ngen = ngen + live.astype(jnp.int32)
            finished = live & (jnp.isin(tok, stop_ids) | (ngen >= max_new))
            cache = {"k": ks, "v": vs, **fixed}
            logits, cache = qwen2.forward(cfg, weights, tok[:, None], (pos - state["start"])[:, None], None,
                                          cache, pos, gather_per_layer=gather_per_layer)
            return (i + 1, live & ~finished, logits[:, -1].astype(jnp.float32), pos + live.astype(jnp.int32),
                    ngen, cache["k"], cache["v"], out_tok, out_lp)

        init = (jnp.int32(0), state["live"] & active, state["last"], state["pos"], state["ngen"], state["k"],
                state["v"], jnp.full((b, steps), pad_id, jnp.int32), jnp.zeros((b, steps), jnp.float32))
        _, live, last, pos, ngen, ks, vs, out_tok, out_lp = jax.lax.while_loop(cond, body, init)
        new = {**state, "live": live, "last": last, "pos": pos, "ngen": ngen, "k": ks, "v": vs}
        return self._constrain(new), out_tok, out_lp


class Run:
    """Host side of one continuous-batching call (see the module docstring)."""

    def __init__(self, programs: Programs, params, prompts, rng, opts, on_finished, first_row: int = 0):
        self.pr, self.lay, self.params, self.rng, self.opts = programs, programs.lay, params, rng, opts
        self.static = opts.static()
        self.gather = gathers_weights(params, programs.sampler.mesh, programs.sampler.rules)
        self.on_finished = on_finished
        self.first_row = first_row  # row r draws as row first_row + r
        self.prompts: list[list[int]] = []
        self.tokens: list[list[int]] = []
        self.lps: list[list[float]] = []
        self.finish: list[int] = []
        self.queue: collections.deque = collections.deque()
        self._add(prompts)
        g, s, n = self.lay.G, self.lay.S, self.lay.N
        self.slot_row = np.full((g, s), -1)
        self.slot_pages = [[[] for _ in range(s)] for _ in range(g)]
        self.slot_pos = np.zeros((g, s), np.int64)  # next token index to write
        self.slot_limit = np.zeros((g, s), np.int64)  # last token index the row can write
        self.slot_age = np.zeros((g, s), np.int64)
        self.free = [list(range(n - 1, 0, -1)) for _ in range(g)]
        self.table = np.zeros((g, s, self.lay.M), np.int32)
        self.owner = np.full((g, n), s, np.int32)
        self.base = np.zeros((g, n), np.int32)
        self.clock = 0
        self.state = programs.init_state(cache_dtype=opts.cache_dtype)

    def _add(self, prompts):
        for p in prompts:
            if len(p) == 0:
                raise ValueError("every prompt needs at least one token")
            for _ in range(self.opts.n):
                self.queue.append(len(self.prompts))
                self.prompts.append(list(p))
                self.tokens.append([])
                self.lps.append([])
                self.finish.append(-1)

    def _length(self, row) -> int:
        n = len(self.prompts[row]) + len(self.tokens[row])
        return _round(bucket(n, self.pr.sampler.min_prompt_bucket), self.lay.P)

    # -- pages ------------------------------------------------------------------------------
    def _take_page(self, g, s):
        page = self.free[g].pop()
        j = len(self.slot_pages[g][s])
        self.slot_pages[g][s].append(page)
        self.table[g, s, j] = page
        self.owner[g, page], self.base[g, page] = s, j * self.lay.P

    def _release(self, g, s):
        for page in self.slot_pages[g][s]:
            self.owner[g, page] = self.lay.S
            self.free[g].append(page)
        self.slot_pages[g][s] = []
        self.table[g, s] = 0
        self.slot_row[g, s] = -1

    # -- rounds -------------------------------------------------------------------------------
    def _admit(self):
        """Fills free slots from the queue, `prefill_rows` rows per shard per prefill call."""
        while self._admit_some():
            pass

    def _admit_some(self) -> bool:
        lay, k = self.lay, self.opts.steps_per_call
        free_slots = [list(np.flatnonzero(self.slot_row[g] < 0)) for g in range(lay.G)]
        want = list(self.queue)[: sum(map(len, free_slots))]
        if not want:
            return False
        length = max(self._length(r) for r in want)
        need = length // lay.P + -(-k // lay.P) + 1
        admits = [[] for _ in range(lay.G)]
        budget = [len(f) for f in self.free]
        for row in want:
            free_slots = [f if len(admits[j]) < self.opts.prefill_rows else [] for j, f in enumerate(free_slots)]
            g = max(range(lay.G), key=lambda j: (len(free_slots[j]) > 0 and budget[j] >= need, len(free_slots[j])))
            if not free_slots[g] or budget[g] < need:
                break
            budget[g] -= length // lay.P
            admits[g].append((free_slots[g].pop(0), self.queue.popleft()))
        a = max(map(len, admits))
        if a == 0:
            return False
        a = bucket(a, 1)
        tokens = np.zeros((lay.G * a, length), np.int32)
        mask = np.zeros((lay.G * a, length), bool)
        mask[:, -1] = True  # padding rows: one dummy token
        slots = np.full((lay.G, a), lay.S, np.int32)
        pages = np.full((lay.G, a, length // lay.P), lay.N, np.int32)
        rows = np.zeros((lay.G, a), np.int32)
        ngen0 = np.zeros((lay.G, a), np.int32)
        for g, group in enumerate(admits):
            for j, (s, row) in enumerate(group):
                seq = self.prompts[row] + self.tokens[row]
                tokens[g * a + j, length - len(seq):] = seq
                mask[g * a + j] = False
                mask[g * a + j, length - len(seq):] = True
                for _ in range(length // lay.P):
                    self._take_page(g, s)
                pages[g, j] = self.slot_pages[g][s]
                slots[g, j], rows[g, j], ngen0[g, j] = s, self.first_row + row, len(self.tokens[row])
                self.slot_row[g, s], self.slot_pos[g, s] = row, length
                self.slot_limit[g, s] = length + self.opts.max_new_tokens - len(self.tokens[row]) - 1
                self.slot_age[g, s] = self.clock
                self.clock += 1
        put = lambda x: parallel.to_global(np.asarray(x), self.pr.slot_sharding(x.ndim))
        self.state = self.pr.prefill(self.params, self.state, put(tokens), put(mask), put(slots), put(pages),
                                     put(rows), put(ngen0), cache_dtype=self.opts.cache_dtype,
                                     gather_per_layer=self.gather)
        return True

    def _reserve(self):
        """Pages for the next steps_per_call tokens of every live slot (oldest rows first);
        preempts the youngest rows of a group whose pool is full."""
        lay, k = self.lay, self.opts.steps_per_call
        for g in range(lay.G):
            for s in sorted(np.flatnonzero(self.slot_row[g] >= 0), key=lambda s: self.slot_age[g, s]):
                if self.slot_row[g, s] < 0:
                    continue  # preempted below
                last = min(self.slot_pos[g, s] + k - 1, self.slot_limit[g, s]) // lay.P
                while len(self.slot_pages[g][s]) <= last:
                    if not self.free[g]:
                        live = np.flatnonzero(self.slot_row[g] >= 0)
                        victim = max(live, key=lambda v: self.slot_age[g, v])
                        self.queue.appendleft(int(self.slot_row[g, victim]))
                        self._release(g, victim)
                        if victim == s:
                            break
                        continue
                    self._take_page(g, s)

    def _decode(self):
        lay, o = self.lay, self.opts
        active = (self.slot_row >= 0).reshape(-1)
        put = lambda x: parallel.to_global(np.asarray(x), self.pr.slot_sharding(x.ndim))
        self.state, tok, lp = self.pr.decode(
            self.params, self.state, put(self.table), put(self.owner), put(self.base), put(active), self.rng,
            jnp.int32(o.max_new_tokens), jnp.float32(o.temperature), jnp.float32(o.top_p),
            steps=o.steps_per_call, opts=self.static, gather_per_layer=self.gather)
        tok, lp, ngen, live = (parallel.to_host(x) for x in (tok, lp, self.state["ngen"], self.state["live"]))
        stops = set(o.stop_token_ids)
        done = []
        for g in range(lay.G):
            for s in np.flatnonzero(self.slot_row[g] >= 0):
                b, row = g * lay.S + s, int(self.slot_row[g, s])
                count = int(ngen[b]) - len(self.tokens[row])
                self.tokens[row] += tok[b, :count].tolist()
                self.lps[row] += lp[b, :count].tolist()
                self.slot_pos[g, s] += count
                if not live[b]:
                    stopped = self.tokens[row] and self.tokens[row][-1] in stops
                    self.finish[row] = FINISH_STOP if stopped else FINISH_LENGTH
                    done.append(row)
                    self._release(g, s)
        return done

    def run(self):
        while self.queue or (self.slot_row >= 0).any():
            self._admit()
            self._reserve()
            if not (self.slot_row >= 0).any():
                if self.queue:
                    raise RuntimeError("continuous batching: no row fits the KV pool")
                break
            done = self._decode()
            if done and self.on_finished is not None:
                more = self.on_finished(done, self.output(done))
                if more:
                    self._add(more)
        return self.output(range(len(self.prompts)))

    def output(self, rows):
        rows = list(rows)
        m, pad = self.opts.max_new_tokens, self.opts.pad_token_id
        toks = np.full((len(rows), m), pad, np.int32)
        lps = np.zeros((len(rows), m), np.float32)
        for i, r in enumerate(rows):
            toks[i, : len(self.tokens[r])] = self.tokens[r]
            lps[i, : len(self.lps[r])] = self.lps[r]
        lengths = np.asarray([len(self.tokens[r]) for r in rows], np.int32)
        return SampleOutput(toks, lps, lengths, np.asarray([self.finish[r] for r in rows], np.int32))
