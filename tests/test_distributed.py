"""ShardedEngine on a local Ray instance started here (2 CPUs, no dashboard): K shards give one
engine's numbers bit for bit, checkpoints are one manifest of complete shard files, and a run
survives a shard's process being killed."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import fa_gpu
from randmodels import CASES, build, make_model_arrays, random_obs

ray = pytest.importorskip("ray", reason="needs the distributed extra (pip install 'fa_gpu[distributed]')")
from fa_gpu.distributed import ShardedEngine, shard_bounds  # noqa: E402

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _model(idx):
    return fa_gpu.GenerativeModel(**make_model_arrays(CASES[idx], 100 + idx))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_shards_give_one_engines_numbers(backend, shards):
    idx, n = 22, 23  # 3 factors, stochastic actions: every draw keyed by the global agent
    opts = dict(backend=backend, dtype="float64", seed=5, action_selection="stochastic", alpha=0.8,
                num_threads=1)
    one = fa_gpu.Engine(_model(idx), n, **opts)
    sharded = ShardedEngine(_model(idx), n, shards=shards, **opts)
    try:
        assert [hi - lo for lo, hi in sharded.bounds] and sharded.bounds[-1][1] == n
        for t, obs in enumerate(random_obs(CASES[idx], n, 5, 3)):
            np.testing.assert_array_equal(sharded.step(obs), one.step(obs), err_msg=f"step {t}")
        if backend == "numba":
            np.testing.assert_array_equal(sharded.q_pi, one.q_pi)
        else:
            np.testing.assert_allclose(sharded.q_pi, one.q_pi, rtol=1e-12, atol=1e-14)
        for a, b in zip(sharded.qs, one.qs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(sharded.t, one.t)
        sharded.reset([0, n - 1])
        one.reset([0, n - 1])
        np.testing.assert_array_equal(sharded.t, one.t)
    finally:
        sharded.shutdown()


def test_save_load_continue_and_manifest_checks(tmp_path):
    idx, n = 1, 17
    opts = dict(backend="numpy", dtype="float64", seed=2, action_selection="stochastic")
    one = fa_gpu.Engine(_model(idx), n, **opts)
    sharded = ShardedEngine(_model(idx), n, shards=3, **opts)
    obs = random_obs(CASES[idx], n, 6, 4)
    for o in obs[:3]:
        sharded.step(o), one.step(o)
    sharded.save(tmp_path / "ck")
    sharded.step(obs[3])
    sharded.save(tmp_path / "ck")  # a second generation replaces the first
    one.step(obs[3])
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["manifest.json"] + [f"shard-{k:04d}-g1.ckpt" for k in range(3)]
    sharded.shutdown()
    again = ShardedEngine.load(tmp_path / "ck")
    try:
        for o in obs[4:]:
            np.testing.assert_array_equal(again.step(o), one.step(o))
    finally:
        again.shutdown()
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    for bad, msg in ((dict(manifest, bounds=[[0, 5], [6, 17], [17, 17]]), "do not cover"),
                     (dict(manifest, files=["../x"] * 3), "bad shard file name"),
                     (dict(manifest, format="other"), "not a valid")):
        (tmp_path / "ck" / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=msg):
            ShardedEngine.load(tmp_path / "ck")
    with pytest.raises(ValueError, match="not a sharded fa_gpu checkpoint"):
        ShardedEngine.load(tmp_path)


def test_shard_bounds():
    assert shard_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert shard_bounds(10_000, 3, quantum=64) == [(0, 3328), (3328, 6720), (6720, 10_000)]
    for n, k, q in ((1, 1, 1), (5, 5, 1), (1000, 7, 64), (129, 3, 64)):
        b = shard_bounds(n, k, q)
        assert b[0][0] == 0 and b[-1][1] == n and all(lo < hi for lo, hi in b)
        assert all(lo % q == 0 for lo, _ in b)
    with pytest.raises(ValueError, match="more than n_agents"):
        shard_bounds(2, 3)
    with pytest.raises(ValueError, match="whole 64-agent chunks"):
        shard_bounds(100, 3, quantum=64)
