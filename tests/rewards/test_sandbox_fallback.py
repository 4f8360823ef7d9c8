"""Without a working bubblewrap, code rewards fail closed unless the config opts in.

A missing bwrap is simulated the honest way: a PATH without it (the pool's workers inherit
it). Transient failures (a killed first probe, bwrap failing to set up one sandbox) are
retried and never remembered.
"""
import logging
import os

import pytest

from dsrl_jax.rewards import RewardPool, sandbox
from dsrl_jax.rewards.code import code_reward

STDIN = {"id": "sum", "domain": "code", "problem": "print a+b",
         "tests": [{"testtype": "stdin", "input": "1 2\n", "output": "3\n"}]}  # fmt: skip
RIGHT = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
WRONG = "```python\nprint(4)\n```"
CODE = {"code": [{"name": "code", "options": {"per_test_timeout_s": 3.0}}]}


@pytest.fixture
def fresh(monkeypatch):
    """A clean sandbox choice and policy before and after the test."""
    saved = dict(sandbox._chosen)

    def reset():
        sandbox._chosen.clear()
        sandbox.configure(allow_unsandboxed=False)
        sandbox._warned = False

    reset()
    yield monkeypatch
    reset()
    sandbox._chosen.update(saved)


@pytest.fixture
def no_bwrap(fresh, tmp_path):
    fresh.setenv("PATH", str(tmp_path))  # nothing here: no bwrap (absolute interpreter paths still work)
    fresh.delenv("DSRL_SANDBOX", raising=False)
    return fresh


def test_code_rewards_refuse_without_bwrap(no_bwrap):
    with pytest.raises(sandbox.SandboxUnavailable, match="allow_unsandboxed"):
        code_reward(RIGHT, STDIN)
    with RewardPool(CODE, num_workers=0) as pool, pytest.raises(sandbox.SandboxUnavailable):
        pool.score([RIGHT], [STDIN])


def test_the_pool_fails_loudly_instead_of_scoring_zero(no_bwrap):
    with RewardPool(CODE, num_workers=1) as pool:
        handle = pool.submit([RIGHT, WRONG], [STDIN, STDIN])
        with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap is not installed"):
            handle.result(timeout=120)


def test_plain_mode_also_needs_the_opt_in(fresh):
    fresh.setenv("DSRL_SANDBOX", "plain")
    with pytest.raises(sandbox.SandboxUnavailable, match="allow_unsandboxed"):
        sandbox.resolve()


def test_opt_in_runs_unsandboxed_with_a_loud_warning(no_bwrap, caplog):
    cfg = {**CODE, "allow_unsandboxed": True}
    with caplog.at_level(logging.WARNING), RewardPool(cfg, num_workers=0) as pool:
        assert [r.score for r in pool.score([RIGHT, WRONG], [STDIN, STDIN])] == [1, 0]
    assert sandbox.resolve()[0] is False
    text = caplog.text
    assert "UNSANDBOXED" in text and all(gap[:40] in text for gap in sandbox.UNSANDBOXED_GAPS)


def test_opt_in_workers_use_the_fallback(no_bwrap):
    with RewardPool({**CODE, "allow_unsandboxed": True}, num_workers=1) as pool:
        assert [r.score for r in pool.score([RIGHT, WRONG], [STDIN, STDIN])] == [1, 0]


@pytest.mark.skipif(not sandbox.bwrap_available(), reason="bubblewrap is unavailable here")
def test_a_killed_first_probe_is_retried_not_cached(fresh):
    real, calls = sandbox._probe, []

    def flaky(python, use_bwrap):
        calls.append(python)
        return False if len(calls) <= 3 else real(python, use_bwrap)  # first round "killed"

    fresh.setattr(sandbox, "_probe", flaky)
    assert sandbox.resolve()[0] is True  # the retry found the working sandbox
    assert len(calls) > 3


@pytest.mark.skipif(not sandbox.bwrap_available(), reason="bubblewrap is unavailable here")
def test_a_failing_probe_is_not_remembered(fresh):
    real = sandbox._probe
    fresh.setattr(sandbox, "_probe", lambda python, use_bwrap: False)
    with pytest.raises(sandbox.SandboxUnavailable, match="fails its probe"):
        sandbox.resolve()
    assert sandbox._chosen == {}
    fresh.setattr(sandbox, "_probe", real)
    assert sandbox.resolve()[0] is True  # recovered: bwrap, not a lifelong fallback
    assert code_reward(RIGHT, STDIN).score == 1


@pytest.mark.skipif(not sandbox.bwrap_available(), reason="bubblewrap is unavailable here")
def test_a_transient_bwrap_failure_is_retried(fresh):
    real, calls = sandbox._spawn, []

    def flaky(files, argv, *args, **kwargs):
        if "_prelude.py" in argv:  # a real run, not the probe
            calls.append(argv)
            if len(calls) == 1:  # bwrap cannot set up this one sandbox
                return sandbox.SandboxResult("", "bwrap: Can't mount proc on /newroot/proc\n", "", 1, False, None, 0.0)
        return real(files, argv, *args, **kwargs)

    fresh.setattr(sandbox, "_spawn", flaky)
    assert code_reward(RIGHT, STDIN).score == 1
    assert len(calls) == 2 and sandbox.resolve()[0] is True
    assert os.environ.get("DSRL_SANDBOX") != "plain"
