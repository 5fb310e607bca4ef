"""Faults: a save or a recorder killed at a random moment, Ctrl-C during a long step.

``-m faults_long`` runs the kill loops longer (many more random kill moments)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fa_gpu
from fa_gpu.runtime.recorder import read_store
from randmodels import CASES, build


def _long_only(request, marked: bool) -> None:
    if marked and "faults_long" not in request.config.getoption("markexpr", ""):
        pytest.skip("the long kill loop: run with -m faults_long")


def _kill_loop(script: str, ready, check, rounds: int, seed: int) -> None:
    """Start ``script`` ``rounds`` times; each time SIGKILL it at a random moment once
    ``ready()``, then ``check()``."""
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline().strip() == b"ready"
            assert ready()
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        check()


@pytest.mark.parametrize("rounds", [pytest.param(10, id="10"),
                                    pytest.param(100, id="100", marks=pytest.mark.faults_long)])
def test_killed_save_leaves_the_previous_checkpoint_and_no_strays_after_the_next(tmp_path, rounds, request):
    _long_only(request, rounds > 10)
    path = tmp_path / "c.npz"
    _, engine = build(CASES[0], 2000, seed=1)
    engine.save(path)
    script = textwrap.dedent(f"""
        import numpy as np, fa_gpu
        e = fa_gpu.Engine.load({str(path)!r})
        print("ready", flush=True)
        while True:
            e.step(np.zeros((2000, 1), dtype=np.int64))
            e.save({str(path)!r})
    """)
    seen = set()

    def check():
        loaded = fa_gpu.Engine.load(path)  # whole: the old file or a complete new one
        t = loaded.t
        assert (t == t[0]).all()
        seen.add(int(t[0]))

    _kill_loop(script, path.exists, check, rounds, seed=rounds)
    engine.save(path)
    assert os.listdir(tmp_path) == ["c.npz"]
    assert len(seen) > 1, seen  # the kills landed at different moments


@pytest.mark.parametrize("rounds", [pytest.param(3, id="3"),
                                    pytest.param(30, id="30", marks=pytest.mark.faults_long)])
def test_killed_recorder_leaves_a_readable_store(tmp_path, rounds, request):
    _long_only(request, rounds > 3)
    store = tmp_path / "run.zarr"
    n = 50
    script = textwrap.dedent(f"""
        import numpy as np
        from fa_gpu.runtime.recorder import Recorder
        rec = Recorder({str(store)!r}, {n}, num_modalities=2, num_factors=1, num_states=[3],
                       record_beliefs=True, chunk_steps=4, overwrite=True)
        print("ready", flush=True)
        agents = np.arange({n})
        for t in range(10**6):
            actions = ((agents + t) % 5)[:, None]
            obs = np.stack([agents * 0 + t, agents], axis=1)
            qs = np.full(({n}, 3), t, dtype=np.float32)
            rec.record(t, actions, obs, [qs])
            if t % 7 == 0:
                rec.flush()  # partial chunks are rewritten whole later: the riskiest write
    """)
    counts = []

    def check():
        data = read_store(store)
        T = data["steps_written"]
        counts.append(T)
        assert data["actions"].shape == (T, n, 1) and data["obs"].shape == (T, n, 2)
        steps = np.arange(T)
        np.testing.assert_array_equal(data["obs"][:, :, 0], np.broadcast_to(steps[:, None], (T, n)))
        np.testing.assert_array_equal(data["obs"][:, :, 1], np.broadcast_to(np.arange(n), (T, n)))
        np.testing.assert_array_equal(data["actions"][:, :, 0], (np.arange(n)[None] + steps[:, None]) % 5)
        np.testing.assert_array_equal(data["qs_0"], np.broadcast_to(steps[:, None, None], (T, n, 3)))
        assert not data["attrs"]["complete"]

    _kill_loop(script, store.exists, check, rounds, seed=rounds)
    assert max(counts) > 0, counts


def test_ctrl_c_during_a_long_step_leaves_a_consistent_engine(tmp_path):
    """SIGINT while the main thread waits for a step on the worker thread: the interrupt is
    delivered once the step has ended, so a save in ``except KeyboardInterrupt`` stores one
    step's state (the old code marked the step done at once and saved a torn mix)."""
    model = fa_gpu.models.grid_world(5, policy_len=3)  # 125 policies: ~0.3 s a step
    n = 2048  # >= 1024 agents: a CPU step runs on the worker thread
    rng = np.random.default_rng(3)
    obs = rng.integers(0, 25, size=(2, n, 1))
    engine = fa_gpu.Engine(model, n, backend="numpy", dtype="float64")
    straight = fa_gpu.Engine(model, n, backend="numpy", dtype="float64")
    engine.step(obs[0])
    for o in obs:
        straight.step(o)

    main = threading.main_thread().ident
    timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    try:
        engine.step(obs[1])
        pytest.fail("no KeyboardInterrupt")  # the step took under 0.1 s: make it longer
    except KeyboardInterrupt:
        engine.save(tmp_path / "c.npz")
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 > 0.1
    for got in (fa_gpu.Engine.load(tmp_path / "c.npz"), engine):
        snap, want = got.snapshot(), straight.snapshot()
        for k in ("q_pi", "neg_efe", "actions", "obs", "t"):
            np.testing.assert_array_equal(snap[k], want[k], err_msg=k)
        for a, b in zip(snap["qs"] + snap["prior"], want["qs"] + want["prior"]):
            np.testing.assert_array_equal(a, b)
    engine.step(obs[0])  # still usable
