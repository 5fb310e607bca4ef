"""Engine.snapshot (fa_gpu.runtime.snapshot): consistent copies while another thread steps."""
from __future__ import annotations

import threading
import time

import numpy as np

from fa_gpu import reference as ref
from fa_gpu.runtime.snapshot import read_consistent
from randmodels import CASES, build, random_obs


def test_snapshot_of_an_idle_engine_equals_the_properties():
    case = CASES[13]  # 2 factors, 2 modalities, one factor uncontrolled
    _, engine = build(case, 30, seed=1)
    for obs in random_obs(case, 30, 3, seed=1):
        engine.step(obs)
    snap = engine.snapshot()
    for key in ("qs", "prior"):
        assert len(snap[key]) == 2
        for got, want in zip(snap[key], getattr(engine, key)):
            np.testing.assert_array_equal(got, want)
    for key in ("q_pi", "neg_efe", "actions", "t"):
        np.testing.assert_array_equal(snap[key], getattr(engine, key))
    np.testing.assert_array_equal(snap["obs"], obs)
    assert snap["step_epoch"] == engine._epoch == 6
    snap["q_pi"][:] = -1  # a private copy
    assert np.all(engine.q_pi >= 0)


def test_snapshots_under_concurrent_stepping_are_consistent():
    case, n, steps = CASES[14], 2000, 50  # B_dependencies [[0], [0, 1]]: a coupled transition
    model, engine = build(case, n, seed=2)
    B = [np.broadcast_to(b, (n,) + b.shape) for b in model.B]
    all_obs = random_obs(case, n, steps, seed=2)
    history = {0: (engine.q_pi, engine.qs, engine.actions)}
    snaps, stop = [], threading.Event()

    def reader():
        mine = []
        while not stop.is_set():
            mine.append(engine.snapshot())
        snaps.extend(mine)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for r in readers:
        r.start()
    try:
        for k, obs in enumerate(all_obs, start=1):
            engine.step(obs)
            history[k] = (engine.q_pi, engine.qs, engine.actions, obs)
            time.sleep(0.001)  # let readers in between steps too
    finally:
        stop.set()
        for r in readers:
            r.join()

    assert len(snaps) > 50
    seen = set()
    for snap in snaps:
        t = snap["t"]
        assert np.all(t == t[0]), "a snapshot mixes steps"
        k = int(t[0])
        seen.add(k)
        assert snap["step_epoch"] == 2 * k
        q_pi, qs, actions, *obs = history[k]
        np.testing.assert_array_equal(snap["q_pi"], q_pi)
        np.testing.assert_array_equal(snap["actions"], actions)
        for got, want in zip(snap["qs"], qs):
            np.testing.assert_array_equal(got, want)
        if k:
            np.testing.assert_array_equal(snap["obs"], obs[0])
            # the prior in the snapshot is the B-propagation of the snapshot's own qs and actions
            pred = ref.expected_state(snap["qs"], B, snap["actions"], model.B_dependencies)
            for got, want in zip(snap["prior"], pred):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert len(seen) > 10, sorted(seen)


class _FakeEngine:
    _epoch = 0
    _pending = None  # no step_async to finish

    def _check_usable(self):
        pass


def test_read_consistent_retries_a_read_that_a_step_overlapped():
    eng, calls = _FakeEngine(), []

    def read():
        calls.append(eng._epoch)
        if len(calls) == 1:
            eng._epoch += 2  # a whole step ran during the first copy
        return len(calls)

    assert read_consistent(eng, read) == (2, 2)
    assert calls == [0, 2]


def test_read_consistent_waits_while_a_step_writes():
    eng = _FakeEngine()
    eng._epoch = 5

    def finish():
        time.sleep(0.02)
        eng._epoch = 6

    threading.Thread(target=finish).start()
    t0 = time.perf_counter()
    assert read_consistent(eng, lambda: eng._epoch) == (6, 6)
    assert time.perf_counter() - t0 >= 0.015


def test_every_write_of_the_state_moves_the_epoch():
    """The single methods and reset write the state too: the epoch is odd while they run and
    has moved by 2 after each, so a concurrent snapshot retries instead of reading a torn copy."""
    case = CASES[13]
    _, engine = build(case, 6, seed=2)
    be = engine._backend
    seen = []
    for name in ("infer_states", "infer_policies", "sample_action", "update_empirical_prior"):
        method = getattr(be, name)
        setattr(be, name, lambda *a, _m=method: (seen.append(engine._epoch), _m(*a))[1])
    obs = next(iter(random_obs(case, 6, 1, seed=2)))
    assert engine._epoch == 0
    engine.infer_states(obs)
    engine.infer_policies()
    actions = engine.sample_action()
    engine.update_empirical_prior(actions)
    assert seen == [1, 3, 5, 7] and engine._epoch == 8
    engine.reset([0, 2])
    assert engine._epoch == 10
    assert engine.snapshot()["step_epoch"] == 10


def test_another_thread_can_wait_capture_and_snapshot_during_step_async():
    """Readers on other threads during a step_async (a checkpoint capture, a property that
    waits, a snapshot) leave the epoch even once the step is done: the step's end moves the
    epoch exactly once, however many threads waited for it."""
    import fa_gpu
    from fa_gpu.runtime.checkpoint import capture

    n = 4000  # above the inline size: the step runs on the worker thread
    eng = fa_gpu.Engine(fa_gpu.models.grid_world(10), n, backend="numpy")
    obs = np.zeros((n, 1), dtype=np.int64)
    eng.step(obs)
    for reader in (capture, lambda e: e.qs, lambda e: e.snapshot()):
        before = eng._epoch
        pending = eng.step_async(obs)
        t = threading.Thread(target=reader, args=(eng,))
        t.start()
        pending.result()
        t.join(30)
        assert not t.is_alive()
        assert eng._epoch == before + 2
    # two threads waiting on one step
    before = eng._epoch
    pending = eng.step_async(obs)
    t = threading.Thread(target=pending.result)
    t.start()
    pending.result()
    t.join(30)
    assert eng._epoch == before + 2 and eng.snapshot()["step_epoch"] == before + 2
