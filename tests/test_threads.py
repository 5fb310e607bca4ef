"""One engine and several threads: steps serialize, readers never deadlock, a write stopped
halfway leaves the engine unusable rather than torn."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from randmodels import CASES, build, random_obs


def _in_thread(fn, timeout=60.0):
    """Run ``fn`` on a daemon thread; its result, or a failure when it has not ended in time."""
    out, err = [], []

    def target():
        try:
            out.append(fn())
        except BaseException as exc:  # re-raised below, on the test's thread
            err.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"still running after {timeout} s: deadlocked"
    if err:
        raise err[0]
    return out[0]


def test_snapshot_from_host_fn_during_pipelined_run_does_not_deadlock():
    """pipeline=2 starts cohort A's next kernel while cohort B's host_fn chunks run; a chunk
    that snapshots the engine used to wait forever for that kernel, whose starter waited for
    the chunk."""
    case, n, steps = CASES[0], 64, 6
    _, engine = build(case, n, seed=4)
    obs = random_obs(case, n, 1, seed=4)[0]
    snaps = []

    def host_fn(ids, actions):
        if ids[0] >= n // 2:
            time.sleep(0.01)  # cohort B's chunks: let cohort A's next kernel start first
        snaps.append(engine.snapshot())
        return np.zeros((len(ids), 1), dtype=np.int64)

    result = _in_thread(lambda: engine.run(None, steps, host_fn=host_fn, obs=obs, pipeline=2,
                                           chunk_size=16, progress=False))
    assert result.steps == steps and len(snaps) == steps * n // 16
    _, straight = build(case, n, seed=4)
    straight.step(obs)
    for _ in range(steps - 1):
        straight.step(np.zeros((n, 1), dtype=np.int64))
    np.testing.assert_array_equal(engine.q_pi, straight.q_pi)
    np.testing.assert_array_equal(engine.t, straight.t)


@pytest.mark.parametrize("n", [40, 1500], ids=["inline", "worker"])
def test_steps_from_two_threads_are_serialized_whole(n):
    """Engine.step from two threads at once: each step runs whole, one after the other (the
    engine's lock), so the result is that of 2 x k steps in a row."""
    case, k = CASES[20], 30 if n < 1000 else 6  # 3 factors, one with a single action
    _, engine = build(case, n, seed=6)
    _, straight = build(case, n, seed=6)
    obs = random_obs(case, n, 1, seed=6)[0]  # the same obs every step: order does not matter
    for _ in range(2 * k):
        straight.step(obs)
    barrier = threading.Barrier(2)

    def stepper():
        barrier.wait()
        for _ in range(k):
            engine.step(obs)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: mid-step, if allowed
    try:
        threads = [threading.Thread(target=stepper) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(old)
    assert engine.t.tolist() == [2 * k] * n
    assert engine._epoch == 4 * k  # each step moved it by 2, none lost
    for name in ("q_pi", "actions", "neg_efe"):
        np.testing.assert_array_equal(getattr(engine, name), getattr(straight, name), err_msg=name)
    for got, want in zip(engine.qs + engine.prior, straight.qs + straight.prior):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [10, 1500], ids=["inline", "worker"])
def test_a_step_stopped_halfway_makes_the_engine_unusable(n, tmp_path, monkeypatch):
    """An error (or Ctrl-C on the stepping thread) after infer_states wrote qs, before the
    policies: the state mixes two steps, so every later use says so instead of using it."""
    case = CASES[0]
    _, engine = build(case, n, seed=1)
    obs = random_obs(case, n, 2, seed=1)
    engine.step(obs[0])

    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine._backend, "infer_policies", stop)
    with pytest.raises(KeyboardInterrupt):
        engine.step(obs[1])
    monkeypatch.undo()
    for use in (lambda: engine.step(obs[1]), lambda: engine.qs, engine.snapshot,
                lambda: engine.save(tmp_path / "c.npz"), engine.reset, engine.infer_policies):
        with pytest.raises(RuntimeError, match="this engine is unusable: a write of its state "
                                               "stopped halfway \\(KeyboardInterrupt"):
            use()
    assert not (tmp_path / "c.npz").exists()
