"""Engine.run (fa_gpu.runtime.loop) and the shared host pools (fa_gpu.runtime.pools)."""
from __future__ import annotations

import asyncio
import sys
import threading
import time

import numpy as np
import pytest

import fa_gpu
from fa_gpu.envs import GridWorldEnv
from fa_gpu.runtime import pools

N = 200


def _engine(n=N, **kw):
    kw.setdefault("action_selection", "stochastic")
    kw.setdefault("backend", "numpy")
    return fa_gpu.Engine(fa_gpu.models.grid_world(5), n, seed=3, alpha=4.0, **kw)


class ActionEnv:
    """Deterministic stand-in: the observation is the last action (grid: 5 actions < 25 cells)."""

    def __init__(self):
        self.steps = 0

    def reset(self, n):
        return np.zeros((n, 1), dtype=np.int64)

    def step(self, actions):
        self.steps += 1
        return np.array(actions, dtype=np.int64)


class ListRecorder:
    """Duck-typed recorder: remembers what it got, from which thread, with an optional delay."""

    def __init__(self, delay=0.0):
        self.rows, self.threads, self.delay = [], set(), delay

    def record(self, step, actions, obs):
        time.sleep(self.delay)
        self.threads.add(threading.current_thread().name)
        self.rows.append((step, np.array(actions), np.array(obs)))


def _manual(engine, env, steps):
    obs, out = env.reset(engine.n_agents), []
    for _ in range(steps):
        actions = engine.step(obs)
        out.append((actions, obs))
        obs = env.step(actions)
    return out, obs


# -- pools ----------------------------------------------------------------------------------
def test_pools_are_shared_lazy_and_restartable():
    io, cpu = pools.io_pool(), pools.compute_pool()
    assert pools.io_pool() is io and pools.compute_pool() is cpu
    assert io._max_workers == fa_gpu.runtime.topology.pool_sizes().io_threads

    async def where():
        await asyncio.sleep(0)
        return threading.current_thread().name, asyncio.get_running_loop()

    (name1, loop1), (name2, loop2) = (pools.run_coroutine(where()).result(5) for _ in range(2))
    assert name1 == name2 == "fa_gpu-asyncio" and loop1 is loop2 is pools.event_loop()
    pools.shutdown()
    assert loop1.is_closed()
    assert pools.io_pool() is not io and pools.run_coroutine(where()).result(5)[1] is not loop1


def test_shutdown_cancels_pending_coroutines():
    started = threading.Event()

    async def forever():
        started.set()
        await asyncio.sleep(3600)

    fut = pools.run_coroutine(forever())
    assert started.wait(5)
    pools.shutdown()
    assert fut.cancelled()


# -- the loop ---------------------------------------------------------------------------------
def test_run_equals_the_manual_loop_and_reports():
    want, last = _manual(_engine(), GridWorldEnv(5, seed=1), 12)
    rec = ListRecorder()
    res = _engine().run(GridWorldEnv(5, seed=1), 12, recorder=rec, progress=False)
    assert [r[0] for r in rec.rows] == list(range(12))
    for (a, o), (_, ra, ro) in zip(want, rec.rows):
        np.testing.assert_array_equal(ra, a)
        np.testing.assert_array_equal(ro, o)
    np.testing.assert_array_equal(res.obs, last)
    assert res.steps == 12 and res.seconds > 0 and 0 < res.first_step_seconds <= res.seconds
    assert res.agent_steps_per_s == pytest.approx(12 * N / res.seconds)
    assert "obs" not in repr(res)


def test_reset_false_continues_and_the_recorder_appends():
    want, _ = _manual(_engine(), GridWorldEnv(5, seed=1), 10)
    engine, env, rec = _engine(), GridWorldEnv(5, seed=1), ListRecorder()
    engine.run(env, 4, recorder=rec, progress=False)
    engine.run(env, 6, recorder=rec, progress=False, reset=False)
    assert [r[0] for r in rec.rows] == list(range(10))
    for (a, _), (_, ra, _) in zip(want, rec.rows):
        np.testing.assert_array_equal(ra, a)
    np.testing.assert_array_equal(engine.t, 10)
    engine.run(env, 2, progress=False)  # reset=True: a new episode
    np.testing.assert_array_equal(engine.t, 2)
    with pytest.raises(ValueError, match="no first observations"):
        _engine().run(GridWorldEnv(5), 1, reset=False, progress=False)


def test_recorder_round_trip_inside_run(tmp_path):
    pytest.importorskip("zarr")
    from fa_gpu.runtime.recorder import Recorder, read_store

    want, _ = _manual(_engine(), GridWorldEnv(5, seed=2), 9)
    engine, env = _engine(), GridWorldEnv(5, seed=2)
    with Recorder(tmp_path / "r.zarr", N, num_modalities=1, num_factors=1, chunk_steps=4) as rec:
        engine.run(env, 5, recorder=rec, progress=False, pipeline=2)
        engine.run(env, 4, recorder=rec, progress=False, reset=False)
    store = read_store(tmp_path / "r.zarr")
    assert store["steps_written"] == 9
    np.testing.assert_array_equal(store["actions"], np.stack([a for a, _ in want]))
    np.testing.assert_array_equal(store["obs"], np.stack([o for _, o in want]))


def test_sync_host_fn_gets_every_chunk_and_overrides_obs():
    calls = []

    def host_fn(agent_ids, actions):
        calls.append((agent_ids.copy(), actions.copy(), threading.current_thread().name))
        assert not agent_ids.flags.writeable and not actions.flags.writeable
        if agent_ids[0] % 64 == 0:  # even chunks answer, odd ones keep the env's obs
            return np.full((len(agent_ids), 1), 7 + agent_ids[0] // 64)
        return None

    engine, env = _engine(), ActionEnv()
    res = engine.run(env, 3, host_fn=host_fn, chunk_size=32, progress=False)
    assert env.steps == 3 and len(calls) == 3 * 7  # ceil(200 / 32) chunks a step
    assert all(name.startswith("fa_gpu-io") for *_, name in calls)
    last = {int(ids[0]): acts for ids, acts, _ in calls[-7:]}
    np.testing.assert_array_equal(np.concatenate([last[k] for k in sorted(last)]), engine.actions)
    for lo in range(0, N, 32):
        got = res.obs[lo:lo + 32, 0]
        want = 7 + lo // 64 if lo % 64 == 0 else engine.actions[lo:lo + 32, 0]
        np.testing.assert_array_equal(got, want)


def test_async_host_fn_runs_on_the_one_shared_loop():
    loops, threads = set(), set()

    async def host_fn(agent_ids, actions):
        await asyncio.sleep(0.001)
        loops.add(id(asyncio.get_running_loop()))
        threads.add(threading.current_thread().name)
        return np.asarray(agent_ids % 25)[:, None]

    res = _engine().run(None, 4, host_fn=host_fn, obs=np.zeros((N, 1), np.int64), chunk_size=50,
                        progress=False)
    assert loops == {id(pools.event_loop())} and threads == {"fa_gpu-asyncio"}
    np.testing.assert_array_equal(res.obs[:, 0], np.arange(N) % 25)


def test_blocking_host_fn_chunks_overlap():
    delay, chunks = 1e-3, 20

    def host_fn(agent_ids, actions):
        time.sleep(delay)

    serial = time.perf_counter()
    for _ in range(chunks):
        host_fn(None, None)
    serial = time.perf_counter() - serial                    # >= 20 ms
    engine, env = _engine(), GridWorldEnv(5)
    engine.run(env, 2, host_fn=host_fn, chunk_size=N // chunks, progress=False)  # warm-up
    best = float("inf")
    for _ in range(3):
        plain = engine.run(env, 10, progress=False).seconds / 10
        hosted = engine.run(env, 10, host_fn=host_fn, chunk_size=N // chunks, progress=False).seconds / 10
        best = min(best, hosted - plain)
    assert best < 0.5 * serial, (best, serial)


def test_pipeline_2_moves_the_sink_off_the_critical_path(tmp_path):
    def host_fn(agent_ids, actions):
        time.sleep(0.02)

    rows = {}  # (tests never assert wall time: the threads the sink ran on say it moved)
    for pipeline in (1, 2):
        rec = ListRecorder(delay=0.02)
        ckpt = tmp_path / f"c{pipeline}.npz"
        _engine().run(GridWorldEnv(5, seed=4), 8, host_fn=host_fn, chunk_size=N, recorder=rec,
                      pipeline=pipeline, progress=False, checkpoint_every=3, checkpoint_path=ckpt)
        rows[pipeline] = rec
        assert fa_gpu.Engine.load(ckpt).t[0] == 6
    assert rows[1].threads == {threading.current_thread().name}
    assert all(t.startswith("fa_gpu-compute") for t in rows[2].threads)
    for r1, r2 in zip(rows[1].rows, rows[2].rows, strict=True):
        assert r1[0] == r2[0]
        np.testing.assert_array_equal(r1[1], r2[1])
        np.testing.assert_array_equal(r1[2], r2[2])


def test_errors_from_host_fn_and_the_sink_propagate():
    def boom(agent_ids, actions):
        if agent_ids[0] >= 100:
            raise OSError("network down")

    with pytest.raises(OSError, match="network down"):
        _engine().run(GridWorldEnv(5), 2, host_fn=boom, chunk_size=50, progress=False)
    with pytest.raises(ValueError, match=r"shape \(50, 1\) for agents 50..99 .*got float64 \(50, 1\)"):
        _engine().run(GridWorldEnv(5), 1, chunk_size=50, progress=False,
                      host_fn=lambda ids, a: None if ids[0] == 0 else np.zeros((50, 1)))
    with pytest.raises(ValueError, match="no env"):
        _engine().run(None, 1, host_fn=lambda ids, a: None, obs=np.zeros((N, 1), int), progress=False)

    class Broken:
        def record(self, step, actions, obs):
            raise RuntimeError("disk full")

    for pipeline in (1, 2):
        with pytest.raises(RuntimeError, match="disk full"):
            _engine().run(GridWorldEnv(5), 3, recorder=Broken(), pipeline=pipeline, progress=False)


@pytest.mark.parametrize("kw, match", [
    (dict(pipeline=3), "pipeline must be 1 or 2"),
    (dict(checkpoint_every=2), "needs checkpoint_path"),
    (dict(checkpoint_every=0, checkpoint_path="x"), "checkpoint_every must be"),
    (dict(chunk_size=0, host_fn=lambda i, a: None), "chunk_size must be"),
])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        _engine().run(GridWorldEnv(5), 1, progress=False, **kw)
    with pytest.raises(ValueError, match="needs an env"):
        _engine().run(None, 1)
    with pytest.raises(TypeError, match="callable"):
        _engine().run(GridWorldEnv(5), 1, host_fn=3)


def test_progress_bar_and_no_tqdm(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    _engine().run(GridWorldEnv(5), 3, progress=True)
    assert "agent-step" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    assert _engine().run(GridWorldEnv(5), 3, progress=True).steps == 3
    assert capsys.readouterr().err == ""


def test_pipeline2_cohorts_same_results_and_overlap():
    """pipeline=2 with a host_fn steps two cohorts: identical actions to pipeline=1 (stochastic
    selection), and the kernel of one cohort overlaps the other's blocking host work."""
    import time as _time

    import fa_gpu

    model = fa_gpu.models.grid_world(side=4)
    n = 4000
    rng_obs = np.random.default_rng(3).integers(0, 16, size=(n, 1))

    def host(ids, actions):
        _time.sleep(0.002)  # blocking I/O per chunk
        return (ids[:, None] + actions[:, :1] * 3) % 16

    def trajectory(pipeline):
        eng = fa_gpu.Engine(model, n, backend="numba", action_selection="stochastic", seed=4)
        seen = []

        def recording_host(ids, actions):
            seen.append((int(ids[0]), actions.copy()))
            return host(ids, actions)

        res = eng.run(None, 6, host_fn=recording_host, obs=rng_obs, reset=False, progress=False,
                      pipeline=pipeline, chunk_size=500)
        return res, sorted(seen, key=lambda x: x[0]), eng

    r1, s1, e1 = trajectory(1)
    r2, s2, e2 = trajectory(2)
    np.testing.assert_array_equal(r1.obs, r2.obs)
    np.testing.assert_array_equal(e1.q_pi, e2.q_pi)
    assert [k for k, _ in s1] == [k for k, _ in s2]
    for (_, a), (_, b) in zip(s1, s2):
        np.testing.assert_array_equal(a, b)
