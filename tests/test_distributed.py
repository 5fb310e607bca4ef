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


# -- ShardedEngine.run ---------------------------------------------------------------------
_RUN = dict(dtype="float64", seed=3, action_selection="stochastic", alpha=2.0, num_threads=1)


def _grid():
    return fa_gpu.envs.GridWorldEnv(3, noise=0.3, goal=8, seed=9)


def _forage():
    return fa_gpu.envs.Foraging(side=4, patches=2, regrowth=0.5, capacity=3, seed=1)


def _models():
    return {"grid": fa_gpu.models.grid_world(3, noise=0.3, goal=8), "forage": fa_gpu.models.foraging()}


def _check_same(sharded, one, r_sharded, r_one):
    """Actions and obs bit for bit; beliefs too on numba (NumPy's reductions may round the last
    bit differently for another number of agents, as in test_shards_give_one_engines_numbers)."""
    np.testing.assert_array_equal(r_sharded.obs, r_one.obs)
    np.testing.assert_array_equal(sharded.actions, one.actions)
    np.testing.assert_array_equal(sharded.t, one.t)
    same = (np.testing.assert_array_equal if one.backend == "numba" else
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14))
    same(sharded.q_pi, one.q_pi)
    for a, b in zip(sharded.qs, one.qs):
        same(a, b)


def _check_store(path_sharded, path_one, steps):
    a, b = fa_gpu.read_store(path_one), fa_gpu.read_store(path_sharded)
    assert a["steps_written"] == b["steps_written"] == steps
    assert a["attrs"] == b["attrs"]
    for k in ("actions", "obs"):
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


@pytest.mark.parametrize("shards, backend", [
    (1, "numba"), (2, "numpy"), (3, "numba"),  # the rest of the 3 x 2 is slow (actor starts)
    *(pytest.param(k, b, marks=pytest.mark.slow) for k, b in ((1, "numpy"), (2, "numba"), (3, "numpy")))])
def test_run_gives_one_engines_run(tmp_path, backend, shards):
    """Independent copies stepped inside the shards and a shared world stepped by the driver:
    actions, beliefs, final obs and the recorded store equal one Engine's run, bit for bit."""
    n, steps = 29, 11
    opts = dict(_RUN, backend=backend)
    for name, make_env in (("grid", _grid), ("forage", _forage)):
        model = _models()[name]
        one = fa_gpu.Engine(model, n, **opts)
        with one.recorder(tmp_path / f"{name}-one.zarr", chunk_steps=4) as rec:
            r_one = one.run(make_env(), steps, recorder=rec, progress=False)
        sharded = ShardedEngine(model, n, shards=shards, **opts)
        try:
            assert all(lo % sharded.chunk_agents == 0 for lo, _ in sharded.bounds)
            # checkpoint blocks of 3 steps cut across the store's 4-step chunks
            r = sharded.run(make_env(), steps, recorder=tmp_path / f"{name}.zarr", chunk_steps=4,
                            checkpoint_every=3, checkpoint_path=tmp_path / f"{name}-ck", progress=False)
            assert r.steps == steps
            _check_same(sharded, one, r, r_one)
            _check_store(tmp_path / f"{name}.zarr", tmp_path / f"{name}-one.zarr", steps)
            if (shards, backend) != (2, "numba"):
                continue
            # a second run resets and starts over, appending to a store made by recorder()
            store = sharded.recorder(tmp_path / f"{name}-2.zarr", chunk_steps=4)
            sharded.run(make_env(), 5, recorder=store, progress=False)
            sharded.run(make_env(), steps, recorder=store, progress=False)
            store.close()
            got = fa_gpu.read_store(tmp_path / f"{name}-2.zarr")
            ref = fa_gpu.read_store(tmp_path / f"{name}-one.zarr")
            assert got["steps_written"] == 5 + steps and got["attrs"]["complete"]
            np.testing.assert_array_equal(got["actions"][:5], ref["actions"][:5])
            np.testing.assert_array_equal(got["actions"][5:], ref["actions"])
        finally:
            sharded.shutdown()


def _killing_grid(marker, at_clock):
    """A grid world whose slice at agent offset > 0 kills its own process (the shard actor's)
    once, in the middle of a block; made here so Ray pickles the class by value."""
    import signal

    class KillingGrid(fa_gpu.envs.GridWorldEnv):
        def step(self, actions):
            if self._offset > 0 and self._clock == at_clock and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return super().step(actions)

    return KillingGrid(3, noise=0.3, goal=8, seed=9)


def test_a_killed_shard_is_not_a_lost_run(tmp_path):
    """A shard's process killed mid-block (independent copies) or between world steps (shared
    world): Ray restarts it, every shard reloads the last checkpoint and the run ends as an
    uninterrupted one; store rows after the checkpoint are written again."""
    import signal

    n, steps = 29, 13
    models = _models()
    opts = dict(_RUN, backend="numba")
    one = fa_gpu.Engine(models["grid"], n, **opts)
    with one.recorder(tmp_path / "one.zarr", chunk_steps=4) as rec:
        r_one = one.run(_grid(), steps, recorder=rec, progress=False)
    sharded = ShardedEngine(models["grid"], n, shards=2, **opts)
    try:
        before = ray.get(sharded._actors[1].pid.remote())
        marker = str(tmp_path / "killed")
        r = sharded.run(_killing_grid(marker, 8), steps, recorder=tmp_path / "sh.zarr", chunk_steps=4,
                        checkpoint_every=5, checkpoint_path=tmp_path / "ck", progress=False)
        assert os.path.exists(marker) and ray.get(sharded._actors[1].pid.remote()) != before
        _check_same(sharded, one, r, r_one)
        _check_store(tmp_path / "sh.zarr", tmp_path / "one.zarr", steps)
        manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
        assert manifest["run"]["step"] == 10
    finally:
        sharded.shutdown()

    one = fa_gpu.Engine(models["forage"], n, **opts)
    r_one = one.run(_forage(), steps, progress=False)
    sharded = ShardedEngine(models["forage"], n, shards=2, **opts)
    pids = [ray.get(sharded._actors[1].pid.remote())]

    class KillingWorld(fa_gpu.envs.Foraging):
        def step(self, actions):
            if self.t == 6 and pids:
                os.kill(pids.pop(), signal.SIGKILL)  # the driver kills a shard between world steps
            return super().step(actions)

    world = KillingWorld(side=4, patches=2, regrowth=0.5, capacity=3, seed=1)
    try:
        r = sharded.run(world, steps, checkpoint_every=4, checkpoint_path=tmp_path / "ckw", progress=False)
        assert not pids
        # generations at steps 0, 4, (killed at 6: back to 4), 8, 12; only the last one stays
        assert sorted(p.name for p in (tmp_path / "ckw").iterdir()) == ["manifest.json"] + [
            f"shard-{k:04d}-g3.ckpt" for k in range(2)] + ["world-g3.npz"]
        _check_same(sharded, one, r, r_one)
        # without checkpoints a lost shard ends the run with the error
        pids.append(ray.get(sharded._actors[0].pid.remote()))
        with pytest.raises((ray.exceptions.RayActorError, fa_gpu.distributed.ShardLost)):
            sharded.run(KillingWorld(side=4, patches=2, seed=1), steps, progress=False)
    finally:
        sharded.shutdown()


def test_manifest_names_only_complete_files(tmp_path):
    """A save that crashed (its partial shard file and temporary manifest left behind) is not
    seen by load, which restores the last complete generation; the next save clears the debris."""
    idx, n = 1, 17
    opts = dict(backend="numpy", dtype="float64", seed=2, action_selection="stochastic")
    sharded = ShardedEngine(_model(idx), n, shards=2, **opts)
    obs = random_obs(CASES[idx], n, 4, 4)
    try:
        for o in obs[:2]:
            sharded.step(o)
        sharded.save(tmp_path)
        expect = sharded.step(obs[2])
        (tmp_path / "shard-0001-g1.ckpt").write_bytes(b"PK\x03\x04 half a file")
        (tmp_path / ".manifest.json.tmp").write_text('{"format": "fa_gpu-sharded-checkpoint", "gen')
        again = ShardedEngine.load(tmp_path)
        np.testing.assert_array_equal(again.step(obs[2]), expect)
        again.save(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "shard-0000-g1.ckpt",
                                                              "shard-0001-g1.ckpt"]
        again.shutdown()
        with pytest.raises(fa_gpu.distributed.ShardLost, match="no run state"):
            ray.get(sharded._actors[0].run_block.remote(1, 0))
    finally:
        sharded.shutdown()


def test_run_rejects_bad_arguments(tmp_path):
    sharded = ShardedEngine(_models()["grid"], 8, shards=2, backend="numpy")
    try:
        with pytest.raises(ValueError, match="steps must be"):
            sharded.run(_grid(), -1)
        with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_path"):
            sharded.run(_grid(), 2, checkpoint_every=1)
        with pytest.raises(ValueError, match="num_obs"):
            sharded.run(fa_gpu.envs.GridWorldEnv(4), 2)
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "x").write_text("")
        with pytest.raises(FileExistsError):
            sharded.run(_grid(), 2, recorder=tmp_path / "taken")
        other = ShardedEngine(_models()["grid"], 9, shards=2, backend="numpy")
        store = other.recorder(tmp_path / "nine.zarr")
        other.shutdown()
        default = fa_gpu.Engine(_models()["grid"], 9, backend="numpy").config.dtype
        assert fa_gpu.read_store(tmp_path / "nine.zarr")["attrs"]["dtype"] == np.dtype(default).name
        with pytest.raises(ValueError, match="recorder was made for"):
            sharded.run(_grid(), 2, recorder=store)
        with pytest.raises(ValueError, match="chunk_agents"):
            ShardedEngine(_models()["grid"], 8, shards=2, backend="numpy", chunk_agents=0)
    finally:
        sharded.shutdown()


# -- the command line ----------------------------------------------------------------------
def test_cli_simulate_shards_records_what_one_engine_records(tmp_path, capsys):
    from fa_gpu import cli

    common = ["simulate", "--agents", "21", "--steps", "4", "--backend", "numpy", "--seed", "4",
              "--no-progress", "--side", "3"]
    assert cli.main(common + ["--output", str(tmp_path / "one.zarr")]) == 0
    assert cli.main(common + ["--shards", "3", "--output", str(tmp_path / "sh.zarr")]) == 0
    out = capsys.readouterr().out
    assert "backend: numpy, 3 Ray shards" in out and "at the goal after the last step" in out
    a, b = fa_gpu.read_store(tmp_path / "one.zarr"), fa_gpu.read_store(tmp_path / "sh.zarr")
    assert a["steps_written"] == b["steps_written"] == 4 and b["attrs"]["complete"]
    for k in ("actions", "obs"):
        np.testing.assert_array_equal(b[k], a[k])
    import zarr
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "sh.zarr", mode="r")["true_state"][:],
                                  zarr.open_group(tmp_path / "one.zarr", mode="r")["true_state"][:])
    assert cli.main(common + ["--shards", "22", "--output", str(tmp_path / "x.zarr")]) == 2
    assert "shards=22 is more than n_agents=21" in capsys.readouterr().err


def test_cli_info_shows_the_ray_cluster(capsys):
    import subprocess
    import sys

    from fa_gpu import cli

    assert cli.main(["info"]) == 0  # this process is connected to the module's Ray
    assert "Ray cluster: 1 nodes, 2 CPUs, 0 GPUs" in capsys.readouterr().out
    address = ray.get_runtime_context().gcs_address
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    got = subprocess.run([sys.executable, "-m", "fa_gpu", "info", "--address", address],
                         capture_output=True, text=True, env=env, timeout=120)
    assert got.returncode == 0, got.stderr
    assert f"Ray cluster at {address}: 1 nodes, 2 CPUs, 0 GPUs" in got.stdout
    assert "  node " in got.stdout
    got = subprocess.run([sys.executable, "-m", "fa_gpu", "info"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert "Ray cluster: not connected (pass --address ADDR, or set RAY_ADDRESS)" in got.stdout
