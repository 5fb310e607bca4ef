"""Tests for fa_gpu.runtime.recorder: Zarr v3 round trip, validation, backpressure, crashes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
zarr = pytest.importorskip("zarr", reason="zarr 3 needs Python >= 3.11 (the runtime extra)")

from fa_gpu.runtime.recorder import Recorder, read_store

# Deterministic step data, shared as source with the crash test's child process.
STEP_DATA_SRC = """
import numpy as np

def step_data(t, n=5):
    actions = (np.arange(n * 2).reshape(n, 2) * 7 + t) % 5
    obs = (np.arange(n * 3).reshape(n, 3) * 3 + 2 * t) % 7
    qs = [((np.arange(n * s).reshape(n, s) + t) % 11 / 10).astype(np.float32) for s in (3, 4)]
    return actions, obs, qs
"""
_ns: dict = {}
exec(STEP_DATA_SRC, _ns)
step_data = _ns["step_data"]


def small(path, **kw):
    """A recorder for step_data: N=5, F=2, M=3, beliefs with S=(3, 4)."""
    kw.setdefault("chunk_steps", 4)
    return Recorder(path, 5, num_modalities=3, num_factors=2, num_states=[3, 4],
                    record_beliefs=True, **kw)


def assert_matches_step_data(store, steps):
    assert store["steps_written"] >= steps
    for t in range(steps):
        actions, obs, qs = step_data(t)
        np.testing.assert_array_equal(store["actions"][t], actions)
        np.testing.assert_array_equal(store["obs"][t], obs)
        for f, q in enumerate(qs):
            np.testing.assert_array_equal(store[f"qs_{f}"][t], q)


def test_round_trip_every_element(tmp_path):
    n, steps, states = 37, 150, [4, 6]
    rng = np.random.default_rng(7)
    actions = rng.integers(0, 5, (steps, n, 2))
    obs = rng.integers(0, 9, (steps, n, 3), dtype=np.int32)
    qs = [rng.random((steps, n, s)) for s in states]  # float64 in, float32 stored
    path = tmp_path / "run.zarr"
    rec = Recorder(path, n, num_modalities=3, num_factors=2, num_states=states,
                   record_beliefs=True, chunk_steps=16, attrs={"seed": 7})
    for t in range(steps):
        rec.record(t, actions[t], obs[t], [q[t] for q in qs])
        if t == 70:  # a flush mid-chunk makes the partial chunk durable; it is rewritten later
            rec.flush()
            assert rec.steps_written == 71 and read_store(path)["steps_written"] == 71
    rec.close()

    store = read_store(path)
    assert store["steps_written"] == steps
    assert store["attrs"]["complete"] is True and store["attrs"]["seed"] == 7
    assert store["attrs"]["n_agents"] == n and store["attrs"]["num_states"] == states
    np.testing.assert_array_equal(store["actions"], actions)
    np.testing.assert_array_equal(store["obs"], obs)
    for f, q in enumerate(qs):
        assert store[f"qs_{f}"].dtype == np.float32
        np.testing.assert_array_equal(store[f"qs_{f}"], q.astype(np.float32))

    group = zarr.open_group(path, mode="r")
    assert group.metadata.zarr_format == 3 and group.attrs["steps_written"] == steps
    assert group["actions"].shape == (steps, n, 2) and group["actions"].chunks[0] == 16
    assert group["qs_1"].shape == (steps, n, 6)
    np.testing.assert_array_equal(group["obs"][:], obs)
    np.testing.assert_array_equal(group["qs_1"][:], qs[1].astype(np.float32))


def test_inputs_are_copied(tmp_path):
    actions, obs, qs = step_data(0)
    with small(tmp_path / "s") as rec:
        rec.record(0, actions, obs, qs)
        actions[:] = 4
        obs[:] = 6
        qs[1][:] = 0.5
        rec.record(1, *step_data(1))
    assert_matches_step_data(read_store(tmp_path / "s"), 2)


def test_bad_input_is_rejected_and_leaves_no_trace(tmp_path):
    actions, obs, qs = step_data(0)
    with small(tmp_path / "s") as rec:
        with pytest.raises(ValueError, match="expected step 0, got 1"):
            rec.record(1, actions, obs, qs)
        with pytest.raises(ValueError, match=r"actions must have shape \(5, 2\).*got \(5, 3\)"):
            rec.record(0, np.zeros((5, 3), dtype=np.int64), obs, qs)
        with pytest.raises(ValueError, match="obs must have an integer dtype, got float64"):
            rec.record(0, actions, obs.astype(np.float64), qs)
        with pytest.raises(ValueError, match=r"qs\[1\] must have shape \(5, 4\).*got \(5, 3\)"):
            rec.record(0, actions, obs, [qs[0], qs[0]])
        with pytest.raises(ValueError, match=r"qs\[0\] must have a floating dtype, got int64"):
            rec.record(0, actions, obs, [np.zeros((5, 3), dtype=np.int64), qs[1]])
        with pytest.raises(ValueError, match="qs must be a sequence of 2 arrays"):
            rec.record(0, actions, obs)
        rec.record(0, actions, obs, qs)
        with pytest.raises(ValueError, match="expected step 1, got 0"):
            rec.record(0, actions, obs, qs)
    assert_matches_step_data(read_store(tmp_path / "s"), 1)

    with pytest.raises(FileExistsError, match="overwrite=True"):
        small(tmp_path / "s")
    with pytest.raises(ValueError, match="needs num_states"):
        Recorder(tmp_path / "t", 5, num_modalities=3, num_factors=2, record_beliefs=True)


def test_backpressure_bounds_chunks_in_flight(tmp_path, monkeypatch):
    max_pending, steps = 2, 12
    started = finished = 0
    running, in_flight = [], []
    lock = threading.Lock()
    write = Recorder._write_chunk

    def slow_write(self, t0, data):
        nonlocal started, finished
        with lock:
            started += 1
            running.append(started - finished)
        time.sleep(0.05)
        write(self, t0, data)
        with lock:
            finished += 1

    monkeypatch.setattr(Recorder, "_write_chunk", slow_write)
    blocked = []
    begin = time.perf_counter()
    with small(tmp_path / "s", chunk_steps=1, max_pending=max_pending, io_threads=8) as rec:
        for t in range(steps):
            t_start = time.perf_counter()
            rec.record(t, *step_data(t))
            blocked.append(time.perf_counter() - t_start)
            with lock:
                # With chunk_steps=1 every record() hands over one chunk.
                in_flight.append(t + 1 - finished)
            assert rec.pending <= max_pending
    elapsed = time.perf_counter() - begin
    assert max(in_flight) == max_pending and max(running) <= max_pending
    assert max(blocked) > 0.02  # record() waited for a free slot
    assert elapsed >= steps * 0.05 / max_pending * 0.9
    assert_matches_step_data(read_store(tmp_path / "s"), steps)


def test_writer_error_propagates(tmp_path, monkeypatch):
    def failing_write(self, t0, data):
        raise OSError("disk full")

    monkeypatch.setattr(Recorder, "_write_chunk", failing_write)
    rec = small(tmp_path / "s", chunk_steps=2)
    rec.record(0, *step_data(0))
    rec.record(1, *step_data(1))  # hands the chunk to a writer thread, which fails
    deadline = time.monotonic() + 5
    while rec.pending and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(RuntimeError, match="disk full") as info:
        rec.record(2, *step_data(2))
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(RuntimeError, match="disk full"):
        rec.flush()
    with pytest.raises(RuntimeError, match="disk full"):
        rec.close()
    rec.close()  # already closed: a no-op
    store = read_store(tmp_path / "s")
    assert store["steps_written"] == 0 and store["attrs"]["complete"] is False


CHILD = STEP_DATA_SRC + """
import sys
from fa_gpu.runtime.recorder import Recorder

rec = Recorder(sys.argv[1], 5, num_modalities=3, num_factors=2, num_states=[3, 4],
               record_beliefs=True, chunk_steps=4, max_pending=3)
for t in range(10**7):
    rec.record(t, *step_data(t))
    if t % 25 == 24:  # 25 is not a multiple of 4: partial chunks get rewritten
        rec.flush()
        print(rec.steps_written, flush=True)
"""


def test_killed_writer_leaves_readable_store(tmp_path):
    path = tmp_path / "crash.zarr"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(30, child.kill)  # never hang the suite on a stuck child
    guard.start()
    try:
        flushed = 0
        while flushed < 150:
            line = child.stdout.readline()
            assert line, f"child exited early: {child.stderr.read()}"
            flushed = int(line)
        time.sleep(0.02)  # let it run on, so chunks are in flight when it dies
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate()
    finally:
        guard.cancel()
    assert child.returncode == -signal.SIGKILL
    flushed = max([flushed] + [int(line) for line in rest.splitlines()])

    store = read_store(path)
    assert store["attrs"]["complete"] is False
    assert store["steps_written"] >= flushed
    assert zarr.open_group(path, mode="r")["actions"].shape[0] >= store["steps_written"]
    assert_matches_step_data(store, store["steps_written"])


def test_context_manager_closes(tmp_path):
    with small(tmp_path / "s", chunk_steps=8) as rec:
        for t in range(5):
            rec.record(t, *step_data(t))
    with pytest.raises(RuntimeError, match="closed"):
        rec.record(5, *step_data(5))
    rec.close()
    store = Recorder.open(tmp_path / "s")
    assert store["steps_written"] == 5 and store["attrs"]["complete"] is True
    assert_matches_step_data(store, 5)


def test_overwrite_replaces_only_a_recorder_store(tmp_path):
    def rec(path):
        return Recorder(path, 2, num_modalities=1, num_factors=1, overwrite=True)

    with rec(tmp_path / "run") as r:  # absent: created
        r.record(0, np.zeros((2, 1), dtype=np.int64), np.zeros((2, 1), dtype=np.int64))
    assert read_store(tmp_path / "run")["attrs"]["format"] == "fa_gpu-trajectories"
    rec(tmp_path / "run").close()  # ours: replaced
    assert read_store(tmp_path / "run")["steps_written"] == 0
    (tmp_path / "empty").mkdir()
    rec(tmp_path / "empty").close()  # an empty directory holds nothing to lose

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("years of work")
    (tmp_path / "file.txt").write_text("data")
    foreign = tmp_path / "foreign.zarr"  # a zarr group someone else wrote
    zarr.open_group(foreign, mode="w", zarr_format=3, attributes={"n_agents": 2})
    for path, match in ((tmp_path / "docs", "not a store written by fa_gpu.Recorder"),
                        (tmp_path / "file.txt", "is not a directory"),
                        (foreign, "not a store written by fa_gpu.Recorder")):
        before = sorted(p.relative_to(path) for p in path.rglob("*")) if path.is_dir() else path.read_text()
        with pytest.raises(FileExistsError, match=match):
            rec(path)
        after = sorted(p.relative_to(path) for p in path.rglob("*")) if path.is_dir() else path.read_text()
        assert before == after
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "years of work"
    with pytest.raises(ValueError, match="reserved keys \\['format'\\]"):
        Recorder(tmp_path / "x", 2, num_modalities=1, num_factors=1, attrs={"format": "mine"})


def test_block_left_by_an_exception_flushes_but_is_not_complete(tmp_path):
    """A ``with`` block that raises: the exception propagates, the steps recorded are on disk,
    and ``complete`` stays false (the run did not finish)."""
    with pytest.raises(KeyError, match="boom"):
        with small(tmp_path / "s", chunk_steps=8) as rec:
            for t in range(3):
                rec.record(t, *step_data(t))
            raise KeyError("boom")
    store = Recorder.open(tmp_path / "s")
    assert store["steps_written"] == 3 and store["attrs"]["complete"] is False
    assert_matches_step_data(store, 3)


def test_sharded_store_block_left_by_an_exception_is_not_complete(tmp_path):
    from fa_gpu.runtime.recorder import ShardedStore

    for fail in (False, True):
        path = tmp_path / f"s{fail}"
        with pytest.raises(KeyError) if fail else contextlib.nullcontext():
            with ShardedStore.create(path, 4, 2, num_modalities=1, num_factors=1):
                if fail:
                    raise KeyError("boom")
        assert Recorder.open(path)["attrs"]["complete"] is (not fail)
