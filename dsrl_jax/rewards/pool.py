"""RewardPool: score (response, record) pairs in worker processes with hard timeouts.

The trainer is a JAX process, so workers are started with the 'spawn' context (never
fork a process that holds an XLA runtime). A dispatcher thread hands one item at a time to
each idle worker and watches its deadline; a worker that overruns (e.g. Math-Verify
evaluating 9^{9^{9^{9}}}) or dies is killed and replaced, and its item scores 0 with
info["error"] = "timeout" / "worker_died". The pool therefore never stalls.

    with RewardPool(settings.rewards, num_workers=8) as pool:   # a plain-dict rewards block
        handle = pool.submit(responses, records)   # returns at once
        ...                                        # device work overlaps with grading
        results = handle.result()                  # list[RewardResult], input order

`num_workers=0` scores in the calling thread (debugging; code still runs sandboxed, but
math verifications are not time-bounded there).

Each worker first applies the reward block's settings (registry.SETTINGS): it imports
`modules` (user rewards) before reading the registry and sets the sandbox policy
(`allow_unsandboxed`). A code reward that finds no working sandbox (and no opt-in) fails
the whole pool with sandbox.SandboxUnavailable instead of scoring samples 0.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing as mp
import multiprocessing.connection as mpc
import signal
import threading
import time
from collections.abc import Mapping

from dsrl_jax.rewards import sandbox
from dsrl_jax.rewards.registry import RewardResult, parse_reward_config, reward_settings, score_record

DEFAULT_TIMEOUTS = {"math": 10.0, "code": 120.0}


def init_process(reward_cfg) -> dict:
    """Apply a reward block's settings in this process; return its parsed specs.

    Imports `modules` (parse_reward_config does, before reading the registry) and sets the
    sandbox policy. The pool runs this in itself and first thing in every worker.
    """
    sandbox.configure(allow_unsandboxed=bool(reward_settings(reward_cfg)["allow_unsandboxed"]))
    return parse_reward_config(reward_cfg)


def _worker_main(conn, reward_cfg) -> None:
    """Worker loop: import once, say ready, then score items until the pipe closes."""

    def on_term(signum, frame):  # the pool is killing us: take our sandboxes along
        sandbox.kill_live()
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, on_term)
    specs = init_process(reward_cfg)
    if "math" in specs:  # pay Math-Verify/sympy's lazy first-call costs before any deadline runs
        score_record("\\boxed{1}", {"domain": "math", "answer": "1"}, specs)
    conn.send("ready")
    while True:
        try:
            task_id, response, record = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = score_record(response, record, specs)
        except sandbox.SandboxUnavailable as e:  # fail closed, loudly: never score it 0
            conn.send(("fatal", task_id, str(e)))
            continue
        except Exception as e:  # a reward bug must not take the worker down
            result = RewardResult(0.0, {"error": f"exception: {type(e).__name__}: {e}"[:300]})
        conn.send((task_id, result))


class _Worker:
    def __init__(self, ctx, reward_cfg):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, reward_cfg), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task = None  # (task_id, future) while busy
        self.deadline = 0.0

    def stop(self, grace_s: float = 0.5) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(grace_s)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class BatchHandle:
    """Future-like result of `RewardPool.submit`: `.done()`, `.result(timeout=None)`."""

    def __init__(self, futures: list[concurrent.futures.Future]):
        self._futures = futures

    @property
    def futures(self) -> list[concurrent.futures.Future]:
        """One future per item, e.g. for `concurrent.futures.as_completed` progress bars."""
        return list(self._futures)

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def result(self, timeout: float | None = None) -> list[RewardResult]:
        end = None if timeout is None else time.monotonic() + timeout
        return [
            f.result(None if end is None else max(0.0, end - time.monotonic()))
            for f in self._futures
        ]


class RewardPool:
    def __init__(
        self,
        reward_config=None,
        num_workers: int = 2,
        timeout_s: float | Mapping[str, float] | None = None,
        start_method: str = "spawn",
    ):
        self._cfg = reward_config  # a plain dict (settings.Settings.rewards) or None: the defaults
        self._specs = init_process(self._cfg)  # fail fast on unknown names or modules
        if isinstance(timeout_s, Mapping) or timeout_s is None:
            self._timeouts = {**DEFAULT_TIMEOUTS, **(timeout_s or {})}
            self._default_timeout = max(self._timeouts.values())
        else:
            self._timeouts, self._default_timeout = {}, float(timeout_s)
        self.num_workers = num_workers
        self.stats = collections.Counter()  # timeouts, worker deaths, items scored
        self._queue: collections.deque = collections.deque()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = mp.Pipe(duplex=False)
        self._closed = False
        self._start_failures = 0
        self._workers: list[_Worker] = []
        if num_workers > 0:
            self._ctx = mp.get_context(start_method)
            self._workers = [_Worker(self._ctx, self._cfg) for _ in range(num_workers)]
            self._thread = threading.Thread(target=self._dispatch, daemon=True, name="RewardPool")
            self._thread.start()

    # -- public API -------------------------------------------------------------------
    def submit(self, responses: list[str], records: list[dict]) -> BatchHandle:
        if len(responses) != len(records):
            raise ValueError(f"{len(responses)} responses but {len(records)} records")
        if self._closed:
            raise RuntimeError("RewardPool is closed (or its workers failed to start)")
        futures = [concurrent.futures.Future() for _ in responses]
        if self.num_workers == 0:
            for fut, response, record in zip(futures, responses, records):
                fut.set_result(self._score_inline(response, record))
            return BatchHandle(futures)
        with self._lock:
            for fut, response, record in zip(futures, responses, records):
                self._queue.append((next(self._ids), fut, response, record))
        self._wake_w.send_bytes(b"x")
        return BatchHandle(futures)

    def score(self, responses: list[str], records: list[dict]) -> list[RewardResult]:
        return self.submit(responses, records).result()

    def close(self) -> None:
        if self._wake_w.closed:
            return
        self._closed = True
        if self.num_workers > 0:
            self._wake_w.send_bytes(b"x")
            self._thread.join(10)
            for w in self._workers:
                w.stop()
            with self._lock:
                while self._queue:
                    self._queue.popleft()[1].cancel()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------
    def _score_inline(self, response, record) -> RewardResult:
        try:
            return score_record(response, record, self._specs)
        except sandbox.SandboxUnavailable:
            raise
        except Exception as e:
            return RewardResult(0.0, {"error": f"exception: {type(e).__name__}: {e}"[:300]})

    def _timeout_for(self, record: dict) -> float:
        return self._timeouts.get(record.get("domain"), self._default_timeout)

    def _replace(self, i: int, error: str) -> None:
        """Kill worker i, fail its item with `error`, start a fresh worker in its place."""
        w = self._workers[i]
        if not w.ready:  # died before it could import: do not respawn forever
            self._start_failures += 1
            if self._start_failures >= 3:
                self._fail_all(RuntimeError(f"reward workers die at startup (exit code {w.proc.exitcode})"))
                return
        if w.task is not None:
            w.task[1].set_result(RewardResult(0.0, {"error": error}))
            w.task = None
        self.stats[error] += 1
        w.stop()
        self._workers[i] = _Worker(self._ctx, self._cfg)

    def _fail_all(self, exc: Exception) -> None:
        self._closed = True
        with self._lock:
            items = [(fut) for _, fut, _, _ in self._queue] + [w.task[1] for w in self._workers if w.task]
            self._queue.clear()
        for fut in items:
            if not fut.done():
                fut.set_exception(exc)
        for w in self._workers:
            w.task = None
            w.stop()

    def _dispatch(self) -> None:
        while not self._closed:
            now = time.monotonic()
            for w in self._workers:  # hand out work
                if w.ready and w.task is None:
                    with self._lock:
                        item = self._queue.popleft() if self._queue else None
                    if item is None:
                        break
                    task_id, fut, response, record = item
                    if not fut.set_running_or_notify_cancel():
                        continue
                    w.task, w.deadline = (task_id, fut), now + self._timeout_for(record)
                    w.conn.send((task_id, response, record))
            for i, w in enumerate(self._workers):  # enforce deadlines
                if w.task is not None and now > w.deadline:
                    self._replace(i, "timeout")
            busy = [w.deadline for w in self._workers if w.task is not None]
            wait_s = max(0.0, min(busy) - time.monotonic()) if busy else 1.0
            conns = {w.conn: i for i, w in enumerate(self._workers)}
            ready = mpc.wait([*conns, self._wake_r], timeout=min(wait_s, 1.0) + 0.01)
            for conn in ready:
                if self._closed:
                    break
                if conn is self._wake_r:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                    continue
                i = conns[conn]
                w = self._workers[i]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    self._replace(i, "worker_died")
                    continue
                if msg == "ready":
                    w.ready = True
                    self._start_failures = 0
                elif msg[0] == "fatal":
                    self._fail_all(sandbox.SandboxUnavailable(msg[2]))
                elif w.task is not None and msg[0] == w.task[0]:
                    w.task[1].set_result(msg[1])
                    w.task = None
                    self.stats["scored"] += 1
