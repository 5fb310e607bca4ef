"""The front of the package a new user meets: the default backend, engine.recorder, read_store."""
from __future__ import annotations

import numpy as np

import fa_gpu
from fa_gpu import backends


def test_engine_takes_the_best_backend_by_default(monkeypatch):
    monkeypatch.delenv("FA_GPU_BACKEND", raising=False)
    eng = fa_gpu.Engine(fa_gpu.models.grid_world(side=3), 2)
    want, skipped = backends.resolve("auto")
    assert eng.backend == want.name and eng.backend_skipped == skipped
    assert all(why for why in eng.backend_skipped.values())  # each skip says why
    assert list(eng.backend_skipped) == list(backends.ORDER[:backends.ORDER.index(eng.backend)])


def test_engine_recorder_takes_the_engine_s_shapes(tmp_path):
    model = fa_gpu.models.tmaze(policy_len=2)                      # 2 factors, 3 modalities
    eng = fa_gpu.Engine(model, 7, backend="numpy", dtype="float64")
    env = fa_gpu.envs.TMazeEnv(seed=1)
    with eng.recorder(tmp_path / "r.zarr", beliefs=True, chunk_steps=2) as rec:
        obs = env.reset(7)
        for t in range(3):
            actions = eng.step(obs)
            rec.record(t, actions, obs, eng.qs)
            obs = env.step(actions)
    store = fa_gpu.read_store(tmp_path / "r.zarr")
    attrs = store["attrs"]
    assert (attrs["n_agents"], attrs["num_modalities"], attrs["num_factors"]) == (7, 3, 2)
    assert attrs["num_states"] == [4, 2] and attrs["dtype"] == "float64"
    assert store["actions"].shape == (3, 7, 2) and store["obs"].shape == (3, 7, 3)
    np.testing.assert_array_equal(store["qs_1"][-1], eng.qs[1])
    assert fa_gpu.read_store is fa_gpu.runtime.recorder.read_store
    with eng.recorder(tmp_path / "b.zarr", attrs={"run": "x"}) as rec:
        pass
    assert fa_gpu.read_store(tmp_path / "b.zarr")["attrs"]["record_beliefs"] is False
