"""Engine.save / Engine.load (fa_gpu.runtime.checkpoint): exact resume, validation, atomicity."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import fa_gpu
from fa_gpu.runtime import checkpoint
from randmodels import CASES, build, random_obs

N = 48


def _state(engine) -> dict:
    out = {k: getattr(engine, k) for k in ("actions", "q_pi", "neg_efe", "t")}
    for k in ("qs", "prior", "A", "B", "pA", "pB"):
        for i, a in enumerate(getattr(engine, k)):
            out[f"{k}{i}"] = a
    return out


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", [CASES[26], CASES[27]], ids=lambda c: c.name)
def test_resume_is_bit_identical(tmp_path, backend, case):
    # stochastic selection + learning of A and B (+ per-agent gamma, alpha, learning rates in [27])
    _, engine = build(case, N, seed=5, backend=backend, action_selection="stochastic")
    obs = random_obs(case, N, 20, seed=5)
    for o in obs[:10]:
        engine.step(o)
    path = tmp_path / "ckpt.npz"
    engine.save(path)
    straight = []
    for o in obs[10:]:
        engine.step(o)
        straight.append(_state(engine))

    resumed = fa_gpu.Engine.load(path)
    assert resumed.backend == backend and resumed._epoch == 0  # a fresh sequence lock
    for want, o in zip(straight, obs[10:]):
        resumed.step(o)
        got = _state(resumed)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert len(np.unique(np.stack([s["actions"] for s in straight]))) > 1  # really stochastic


def test_load_on_another_backend_and_everything_round_trips(tmp_path):
    case = next(c for c in CASES if c.name == "paraminfo_learn")  # info gain, learning, B deps
    model, engine = build(case, 20, seed=7, action_selection="stochastic", gamma=np.linspace(1, 3, 20))
    for o in random_obs(case, 20, 4, seed=7):
        engine.step(o)
    engine.save(tmp_path / "c.npz")
    other = fa_gpu.Engine.load(tmp_path / "c.npz", backend="numba", num_threads=1)
    assert other.backend == "numba" and other._backend.num_threads == 1
    with pytest.raises(TypeError, match=r"load\(\) got unexpected options \['seed'\]; it takes num_threads, device, cuda_path"):
        fa_gpu.Engine.load(tmp_path / "c.npz", seed=3)
    for k, v in vars(engine.config).items():
        assert repr(getattr(other.config, k)) == repr(v), k
    assert other.config.learn_A and other.config.use_param_info_gain
    assert other.model.B_dependencies == model.B_dependencies
    np.testing.assert_array_equal(other.model.policies, model.policies)
    for k in engine._buffers.packed:
        if k != "work":
            np.testing.assert_array_equal(other._backend.to_host(other._buffers.packed[k]),
                                          engine._backend.to_host(engine._buffers.packed[k]), err_msg=k)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        header = json.loads(z["__header__"].tobytes())
    assert header["format"] == "fa_gpu-checkpoint" and header["version"] == checkpoint.FORMAT_VERSION
    assert header["fa_gpu_version"] == fa_gpu.__version__ and header["backend"] == "numpy"


def test_atomic_write_leaves_only_the_target(tmp_path, monkeypatch):
    _, engine = build(CASES[0], 8, seed=1)
    path = tmp_path / "c.npz"
    engine.save(path)
    engine.step(np.zeros((8, 1), dtype=np.int64))
    engine.save(path)  # replaces
    assert os.listdir(tmp_path) == ["c.npz"]
    assert fa_gpu.Engine.load(path).t[0] == 1

    def crash(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        engine.save(path)
    assert os.listdir(tmp_path) == ["c.npz"]  # no temp file, the old checkpoint intact
    monkeypatch.undo()
    assert fa_gpu.Engine.load(path).t[0] == 1


def _rewrite(src, dst, edit):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(dst, **arrays)


def _set_header(**changes):
    def edit(arrays):
        header = json.loads(arrays["__header__"].tobytes())
        header.update(changes)
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return edit


def test_bad_checkpoints_are_rejected_by_name(tmp_path):
    _, engine = build(CASES[26], 8, seed=1)
    good = tmp_path / "good.npz"
    engine.save(good)
    data = good.read_bytes()

    def bad(name, content=None, edit=None):
        p = tmp_path / name
        if edit is not None:
            _rewrite(good, p, edit)
        else:
            p.write_bytes(content)
        return p

    cases = [
        (bad("truncated.npz", data[: len(data) // 2]), "truncated or corrupt"),
        (bad("random.npz", np.random.default_rng(0).bytes(4096)), "not an fa_gpu checkpoint"),
        (bad("empty.npz", b""), "truncated or corrupt"),
        (bad("other.npz", edit=lambda a: a.pop("__header__")), r"not an fa_gpu checkpoint \(no __header__"),
        (bad("magic.npz", edit=_set_header(format="something-else")), "not an fa_gpu checkpoint"),
        (bad("version.npz", edit=_set_header(version=99)),
         f"checkpoint format version 99, this fa_gpu reads {checkpoint.FORMAT_VERSION}"),
        (bad("missing.npz", edit=lambda a: a.pop("state.qs")), "incomplete .* state.qs"),
    ]
    # flip bytes inside one stored array: the zip CRC catches it
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("state.qs.npy")
    flipped = bytearray(data)
    start = info.header_offset + 30 + len(info.filename) + 200
    flipped[start:start + 8] = bytes(255 - b for b in flipped[start:start + 8])
    cases.append((bad("flipped.npz", bytes(flipped)), "truncated or corrupt"))
    for path, match in cases:
        with pytest.raises(ValueError, match=match) as exc:
            fa_gpu.Engine.load(path)
        assert str(path) in str(exc.value), (path.name, str(exc.value))
    with pytest.raises(FileNotFoundError):
        fa_gpu.Engine.load(tmp_path / "absent.npz")
