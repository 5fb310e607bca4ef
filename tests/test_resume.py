"""Resumable runs: a run killed (SIGKILL) after a checkpoint and resumed with
``Engine.load(path).run(env, steps, resume=path)`` ends with the actions, beliefs and store of a
run never interrupted: no step missing or recorded twice. Each run is a child process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fa_gpu

zarr = pytest.importorskip("zarr")

STEPS, EVERY, KILL_AT = 30, 8, 21  # checkpoints after steps 8, 16, 24; killed during step 21

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import fa_gpu
    from fa_gpu.envs import GridWorldEnv

    mode, backend, pipeline, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    steps, every, kill_at = {steps}, {every}, {kill_at}
    ckpt, store = os.path.join(out, "run.ckpt"), os.path.join(out, "run.zarr")
    env = GridWorldEnv(4, noise=0.3, start="uniform", seed=5)
    if mode == "resume":
        engine = fa_gpu.Engine.load(ckpt, num_threads=1)
        rec = engine.recorder(store, beliefs=True, chunk_steps=5, resume=True)
    else:
        engine = fa_gpu.Engine(fa_gpu.models.grid_world(4, noise=0.3), 301, backend=backend,
                               dtype="float64", action_selection="stochastic", seed=3,
                               num_threads=1)
        rec = engine.recorder(store, beliefs=True, chunk_steps=5)

    def host_fn(ids, actions):  # the environment's obs stand; it only kills, in "kill" mode
        if mode == "kill" and engine.t[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return None

    engine.run(env, steps, recorder=rec, checkpoint_every=every, checkpoint_path=ckpt,
               host_fn=host_fn, pipeline=pipeline, progress=False,
               resume=ckpt if mode == "resume" else None)
    rec.close()
    np.savez(os.path.join(out, "final.npz"), q_pi=engine.q_pi, actions=engine.actions,
             t=engine.t, prior=engine.prior[0], true_state=env.true_state)
""").format(steps=STEPS, every=EVERY, kill_at=KILL_AT)


def _child(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "FA_GPU_BACKEND"}
    return subprocess.run([sys.executable, "-c", SCRIPT, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("backend, pipeline", [("numpy", 1), ("numba", 2)])
def test_killed_run_resumes_bit_for_bit(tmp_path, backend, pipeline):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir(), broken.mkdir()
    done = _child(tmp_path, "whole", backend, pipeline, whole)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = _child(tmp_path, "kill", backend, pipeline, broken)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = fa_gpu.read_store(broken / "run.zarr")
    assert 16 <= partial["steps_written"] < STEPS and not partial["attrs"]["complete"]
    resumed = _child(tmp_path, "resume", backend, pipeline, broken)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = np.load(whole / "final.npz"), np.load(broken / "final.npz")
    for key in a.files:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    sa, sb = fa_gpu.read_store(whole / "run.zarr"), fa_gpu.read_store(broken / "run.zarr")
    assert sa["steps_written"] == sb["steps_written"] == STEPS and sb["attrs"]["complete"]
    for key in ("actions", "obs", "qs_0"):
        np.testing.assert_array_equal(sb[key], sa[key], err_msg=key)


def test_resume_refuses_what_does_not_fit(tmp_path):
    from fa_gpu.envs import GridWorldEnv, TMazeEnv

    model = fa_gpu.models.grid_world(3)
    eng = fa_gpu.Engine(model, 5, backend="numpy", seed=1)
    eng.run(GridWorldEnv(3, seed=2), 4, checkpoint_every=2, checkpoint_path=tmp_path / "c.ckpt",
            progress=False)
    eng.save(tmp_path / "plain.ckpt")
    loaded = fa_gpu.Engine.load(tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match="holds no run state"):
        loaded.run(GridWorldEnv(3), 6, resume=tmp_path / "plain.ckpt", progress=False)
    with pytest.raises(ValueError, match="past steps=3"):
        loaded.run(GridWorldEnv(3), 3, resume=tmp_path / "c.ckpt", progress=False)
    with pytest.raises(ValueError, match="step counters are not the checkpoint's"):
        fa_gpu.Engine(model, 5, backend="numpy").run(GridWorldEnv(3), 6, resume=tmp_path / "c.ckpt",
                                                      progress=False)
    with pytest.raises(ValueError, match=r"TMazeEnv has num_obs \[4, 3, 2\]"):
        loaded.run(TMazeEnv(), 6, resume=tmp_path / "c.ckpt", progress=False)  # another world
    result = loaded.run(GridWorldEnv(3), 6, resume=tmp_path / "c.ckpt", progress=False)
    assert result.steps == 2 and loaded.t.tolist() == [6] * 5


def test_recorder_resume_checks_the_store(tmp_path):
    rec = fa_gpu.Recorder(tmp_path / "s.zarr", 3, num_modalities=1, num_factors=1, chunk_steps=4)
    for t in range(6):
        rec.record(t, np.full((3, 1), t), np.full((3, 1), 10 + t))
    rec.close()
    with pytest.raises(ValueError, match="recorded with n_agents=3, this recorder has n_agents=4"):
        fa_gpu.Recorder(tmp_path / "s.zarr", 4, num_modalities=1, num_factors=1, chunk_steps=4, resume=True)
    with pytest.raises(ValueError, match="not a store written by fa_gpu.Recorder"):
        zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
        fa_gpu.Recorder(tmp_path / "other.zarr", 3, num_modalities=1, num_factors=1, resume=True)
    again = fa_gpu.Recorder(tmp_path / "s.zarr", 3, num_modalities=1, num_factors=1, chunk_steps=4,
                            resume=True)
    again.rewind(5)  # inside the second chunk: its row 4 is kept, 5 rewritten
    with pytest.raises(ValueError, match=r"can rewind to a step in \[0, 5\]"):
        again.rewind(6)
    for t in range(5, 9):
        again.record(t, np.full((3, 1), 100 + t), np.full((3, 1), 200 + t))
    again.close()
    got = fa_gpu.read_store(tmp_path / "s.zarr")
    assert got["steps_written"] == 9 and got["attrs"]["complete"]
    np.testing.assert_array_equal(got["actions"][:, 0, 0], [0, 1, 2, 3, 4, 105, 106, 107, 108])
