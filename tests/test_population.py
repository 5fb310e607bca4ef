"""`fa_gpu.Population`: several engines in one world, equal to stepping them by hand; recording
one Zarr group per type; checkpoints of every engine and the world."""
from __future__ import annotations

import os

import numpy as np
import pytest

import fa_gpu
from fa_gpu import envs, models
from fa_gpu.population import read_manifest


def _engines(backend_b="numba"):
    # two types: different models (crowd-averse vs not), sizes and backends
    a = fa_gpu.Engine(models.foraging(crowd_cost=3.0), 30, backend="numpy", dtype="float64",
                      action_selection="stochastic", seed=1)
    b = fa_gpu.Engine(models.foraging(food_pref=1.0), 45, backend=backend_b, dtype="float64",
                      action_selection="stochastic", seed=2)
    return {"explorer": a, "guardian": b}


def _world():
    return envs.Foraging(7, patches=4, regrowth=[0.2, 0.4, 0.8, 1.6], capacity=4, seed=3)


def test_population_equals_the_engines_stepped_by_hand():
    pop = fa_gpu.Population(_engines(), _world())
    res = pop.run(12, progress=False)
    ea, eb = _engines().values()
    w = _world()
    obs = w.reset({"explorer": 30, "guardian": 45})
    for _ in range(12):
        obs = w.step({"explorer": ea.step(obs["explorer"]), "guardian": eb.step(obs["guardian"])})
    for k, eng in zip(("explorer", "guardian"), (ea, eb)):
        np.testing.assert_array_equal(res.obs[k], obs[k])
        for x, y in zip(pop.engines[k].qs, eng.qs):
            np.testing.assert_array_equal(x, y)  # bitwise
        np.testing.assert_array_equal(pop.engines[k].actions, eng.actions)
    np.testing.assert_array_equal(pop.world.food, w.food)
    assert res.steps == 12 and pop.t == 12 and res.agent_steps_per_s > 0
    # continuing: reset=False picks up where the run stopped, as step() does
    acts, nxt = pop.step()
    assert set(acts) == set(nxt) == {"explorer", "guardian"} and nxt["guardian"].shape == (45, 3)


def test_population_records_one_group_per_type_and_checkpoints(tmp_path):
    pytest.importorskip("zarr")
    from fa_gpu.runtime.recorder import read_store

    pop = fa_gpu.Population(_engines("numpy"), _world())
    recs = pop.recorders(tmp_path / "run.zarr", chunk_steps=4)
    ckpt = tmp_path / "ckpt"
    pop.run(6, recorder=recs, checkpoint_every=3, checkpoint_path=ckpt, progress=False)
    saved_world = pop.world.state()
    for _ in range(4):
        pop.step()
    pop.run(2, recorder={"guardian": recs["guardian"]}, reset=False, progress=False)
    for r in recs.values():
        r.close()
    ex, gu = read_store(tmp_path / "run.zarr" / "explorer"), read_store(tmp_path / "run.zarr" / "guardian")
    assert ex["actions"].shape == (6, 30, 1) and gu["obs"].shape == (8, 45, 3)
    import zarr
    root = zarr.open_group(tmp_path / "run.zarr", mode="r")
    assert root.attrs["types"] == ["explorer", "guardian"] and sorted(root.group_keys()) == ["explorer", "guardian"]

    # the checkpoint after step 6: every engine and the world, and nothing stale
    man = read_manifest(ckpt)
    assert man["steps"] == 6 and man["types"] == ["explorer", "guardian"]
    assert sorted(os.listdir(ckpt)) == sorted(list(man["engines"].values()) + [man["world"], "manifest.npz"])
    with np.load(ckpt / man["world"], allow_pickle=False) as z:
        world_state = dict(z)
    for k, v in saved_world.items():
        np.testing.assert_array_equal(world_state[k], v)
    for k, f in man["engines"].items():  # each engine file is an ordinary engine checkpoint
        assert fa_gpu.Engine.load(ckpt / f).n_agents == pop.engines[k].n_agents


def test_population_checkpoint_resumes_bitwise(tmp_path):
    pop = fa_gpu.Population(_engines("numpy"), _world())
    pop.run(5, progress=False)
    obs5 = pop._obs
    pop.save(tmp_path / "c")
    pop.save(tmp_path / "c")  # a second checkpoint replaces the first; old files are gone
    assert len(os.listdir(tmp_path / "c")) == 4
    after = [pop.step() for _ in range(6)]
    man = read_manifest(tmp_path / "c")
    engines = {k: fa_gpu.Engine.load(tmp_path / "c" / f) for k, f in man["engines"].items()}
    w = _world()
    with np.load(tmp_path / "c" / man["world"], allow_pickle=False) as z:
        w.set_state(dict(z))
    resumed = fa_gpu.Population(engines, w)
    obs = obs5
    for acts, nxt in after:
        got_acts, obs = resumed.step(obs)
        for k in acts:
            np.testing.assert_array_equal(got_acts[k], acts[k])
            np.testing.assert_array_equal(obs[k], nxt[k])


def test_population_host_fn_overrides_one_type():
    seen = []

    def host(ids, actions):
        seen.append(len(ids))
        return np.zeros((len(ids), 3), dtype=np.int64)

    pop = fa_gpu.Population(_engines("numpy"), _world())
    res = pop.run(3, host_fn={"explorer": host}, chunk_size=8, progress=False)
    assert (res.obs["explorer"] == 0).all() and sum(seen) == 3 * 30
    assert res.obs["guardian"].shape == (45, 3)


def test_population_bad_arguments(tmp_path):
    e = _engines("numpy")
    with pytest.raises(TypeError, match="World"):
        fa_gpu.Population(e, envs.GridWorldEnv())
    with pytest.raises(ValueError, match="type names"):
        fa_gpu.Population({"a/b": e["explorer"]}, _world())
    with pytest.raises(ValueError, match="num_obs"):
        fa_gpu.Population({"x": fa_gpu.Engine(models.tmaze(), 3)}, _world())
    with pytest.raises(ValueError, match="distinct"):
        fa_gpu.Population({"x": e["explorer"], "y": e["explorer"]}, _world())
    with pytest.raises(TypeError, match="non-empty dict"):
        fa_gpu.Population({}, _world())
    pop = fa_gpu.Population(e, _world())
    with pytest.raises(RuntimeError, match="reset"):
        pop.step()
    with pytest.raises(ValueError, match="recorder must be a dict"):
        pop.run(1, recorder={"nobody": None}, progress=False)
    with pytest.raises(ValueError, match="checkpoint_path"):
        pop.run(1, checkpoint_every=1, progress=False)
    with pytest.raises(ValueError, match="not a population checkpoint"):
        np.savez(tmp_path / "manifest.npz", manifest=np.frombuffer(b'{"format": "x"}', np.uint8))
        read_manifest(tmp_path)


def test_population_run_resumes_after_a_crash_bit_for_bit(tmp_path, monkeypatch):
    """A population run that dies after a checkpoint, resumed with Population.load(path,
    world).run(steps, resume=path), ends as a run never interrupted: engines, world and store."""
    pytest.importorskip("zarr")
    from fa_gpu.runtime.recorder import read_store

    def run(store, ckpt, crash_at=None):
        pop = fa_gpu.Population(_engines("numba"), _world())
        recs = pop.recorders(store, chunk_steps=3)
        if crash_at is not None:
            step, calls = envs.Foraging.step, []

            def dies(self, actions):
                calls.append(1)
                if len(calls) == crash_at:
                    raise OSError("power cut")
                return step(self, actions)
            monkeypatch.setattr(envs.Foraging, "step", dies)
        try:
            pop.run(14, recorder=recs, checkpoint_every=4, checkpoint_path=ckpt, progress=False)
        finally:
            monkeypatch.undo()
            for r in recs.values():
                r.close()
        return pop

    whole = run(tmp_path / "whole.zarr", tmp_path / "whole.ckpt")
    with pytest.raises(OSError, match="power cut"):
        run(tmp_path / "broken.zarr", tmp_path / "broken.ckpt", crash_at=11)  # checkpoint of step 8 stands
    pop = fa_gpu.Population.load(tmp_path / "broken.ckpt", _world())
    recs = pop.recorders(tmp_path / "broken.zarr", chunk_steps=3, resume=True)
    res = pop.run(14, recorder=recs, checkpoint_every=4, checkpoint_path=tmp_path / "broken.ckpt",
                  resume=tmp_path / "broken.ckpt", progress=False)
    for r in recs.values():
        r.close()
    assert res.steps == 6 and pop.t == whole.t == 14
    for k in whole.engines:
        np.testing.assert_array_equal(pop.engines[k].q_pi, whole.engines[k].q_pi)
        np.testing.assert_array_equal(pop.engines[k].actions, whole.engines[k].actions)
        a, b = read_store(tmp_path / "whole.zarr" / k), read_store(tmp_path / "broken.zarr" / k)
        assert a["steps_written"] == b["steps_written"] == 14
        np.testing.assert_array_equal(b["actions"], a["actions"])
        np.testing.assert_array_equal(b["obs"], a["obs"])
    np.testing.assert_array_equal(pop.world.food, whole.world.food)
