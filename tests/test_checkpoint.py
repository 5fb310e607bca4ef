"""Engine.save / Engine.load (fa_gpu.runtime.checkpoint): exact resume, validation, atomicity."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

import fa_gpu
from fa_gpu import schema
from fa_gpu.runtime import checkpoint
from randmodels import CASES, Case, build, random_obs

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


# -- a checkpoint is validated like user input --------------------------------------------------
def _full_engine(backend="numpy", n=6, steps=3):
    """An engine holding every optional buffer (pA, pB, pD, wA, wB, per-agent rates), stepped."""
    case = Case("all_buffers", [3, 2], [3, 2], [3, 2], B_deps=[[0], [0, 1]], E=True,
                per_agent_gamma=True, counts=("pA", "pB", "pD"),
                kw=dict(use_param_info_gain=True, learn_A=True, learn_B=True, learn_D=True))
    _, engine = build(case, n, seed=3, backend=backend, action_selection="stochastic")
    for o in random_obs(case, n, steps, seed=3):
        engine.step(o)
    return engine


def _value_tampers(rule, arr, engine, buf):
    """{label: edit(arr) -> tampered copy} breaking schema rule ``rule`` for ``arr``."""
    def at(value, where=None):
        def edit(a):
            a = a.copy()
            a[where if where is not None else (0,) * a.ndim] = value
            return a
        return edit

    cfg = engine.config
    if rule in ("model", "finite", "rate"):
        return {"nan": at(np.nan), "inf": at(np.inf)}
    if rule == "belief":
        return {"nan": at(np.nan), "sum": lambda a: a * 0.5,
                "negative": lambda a: np.where(np.arange(a.shape[1]) == 0, -a, a)}
    if rule == "policy_posterior":
        return {"nan": at(np.nan), "sum": lambda a: a * 0.5, "negative": lambda a: -a}
    if rule in ("index", "index_or_none"):
        bound = {"M": cfg.num_obs, "F": cfg.num_controls}[schema.BY_NAME[buf].width]
        low = -2 if rule == "index_or_none" else -1
        return {"low": at(low), "high": at(bound[-1], (0, arr.shape[1] - 1)), "huge": at(10**12)}
    if rule == "count":
        return {"negative": at(-1)}
    if rule == "vfe":  # NaN is "not computed" (the fused step); inf is never
        return {"inf": at(np.inf)}
    if rule in ("obs_window", "qs_window"):  # an obs_window slot may be all zeros (empty)
        return {"nan": at(np.nan), "sum": lambda a: a * 0.5 + 0.01, "negative": at(-0.5)}
    if rule == "act_window":
        return {"low": at(-2), "huge": at(10**12)}
    raise AssertionError(f"no tamper for rule {rule}")


def _tampers(engine, path):
    """(member, label, edit of the {member: array} dict) for every checkpointed buffer, from
    the schema: wrong dtype, wrong shape, and values breaking its ``valid`` rule."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for member in checkpoint._buffers(engine):
        buf = member.split(".", 1)[1]
        arr = arrays[member]
        other = np.int64 if arr.dtype.kind == "f" else np.float64
        edits = {"dtype": lambda a, o=other: a.astype(o), "shape": lambda a: a[:-1] if len(a) > 1 else a[:, :-1],
                 **_value_tampers(schema.BY_NAME[buf].valid, arr, engine, buf)}
        for label, edit in edits.items():
            yield member, label, lambda a, m=member, e=edit: a.__setitem__(m, e(a[m]))
    for member in arrays:
        if member.startswith("model.") and member != "model.policies":
            yield member, "nan", lambda a, m=member: a.__setitem__(m, np.where(True, np.nan, a[m]))


def _sequence_engine(n=5, steps=4):
    """An mmp engine with categorical observations: the window buffers present, stepped past
    its horizon."""
    case = Case("window", [3, 2], [3, 2], [3, 2])
    _, engine = build(case, n, seed=4, backend="numpy", inference_algo="mmp", inference_horizon=3,
                      categorical_obs=True)
    rng = np.random.default_rng(4)
    for _ in range(steps):
        engine.step([rng.dirichlet(np.ones(o), size=n) for o in case.num_obs])
    return engine


def test_every_tampered_member_is_rejected_by_name(tmp_path):
    names = set()
    for engine in (_full_engine(), _sequence_engine()):
        good = tmp_path / "good.npz"
        engine.save(good)
        for member, label, edit in _tampers(engine, good):
            names.add(member)
            p = tmp_path / "bad.npz"
            _rewrite(good, p, edit)
            member_re = re.escape(member) if member.startswith(("state.", "params.")) else "saved model"
            with pytest.raises(ValueError, match=member_re) as exc:
                fa_gpu.Engine.load(p)
            assert str(p) in str(exc.value), (member, label)
        assert fa_gpu.Engine.load(good).t.tolist() == engine.t.tolist()  # the untampered file loads
    checkpointed = {b.name for b in schema.BUFFERS if b.valid is not None}
    assert {n.split(".", 1)[1] for n in names if not n.startswith("model.")} == checkpointed


def test_header_epoch_is_not_trusted(tmp_path):
    engine = _full_engine()
    engine.save(tmp_path / "good.npz")
    _rewrite(tmp_path / "good.npz", tmp_path / "odd.npz", _set_header(epoch=7))
    loaded = fa_gpu.Engine.load(tmp_path / "odd.npz")
    done = []

    def use():
        loaded.snapshot()
        loaded.save(tmp_path / "again.npz")
        done.append(True)

    worker = threading.Thread(target=use, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert done == [True], "snapshot()/save() spun on the header's odd epoch"
    assert loaded.snapshot()["step_epoch"] == 0


@pytest.mark.parametrize("change, match", [
    (dict(config={"n_agents": 7}), "incomplete"),
    ("n_agents", r"params\.gamma has shape \(6,\).*expected \(7,\)"),
    ("dtype", "config.dtype"),
    ("num_iter", "header field config: num_iter"),
    ("model_M", "model.num_modalities must be int"),
])
def test_bad_header_fields_are_rejected(tmp_path, change, match):
    engine = _full_engine()
    engine.save(tmp_path / "good.npz")

    def edit(arrays):
        header = json.loads(arrays["__header__"].tobytes())
        if isinstance(change, dict):
            header.update(change)
        elif change == "model_M":
            header["model"]["num_modalities"] = "2"
        else:
            header["config"][change] = {"n_agents": 7, "dtype": "float16", "num_iter": 0}[change]
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)

    _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", edit)
    with pytest.raises(ValueError, match=match):
        fa_gpu.Engine.load(tmp_path / "bad.npz")


def test_out_of_range_previous_actions_never_reach_the_numba_kernel(tmp_path):
    """The old loader accepted them, and the next numba step with learn_B died with SIGSEGV:
    run in a child so that a crash fails this test instead of killing the test run."""
    engine = _full_engine("numba")
    engine.save(tmp_path / "good.npz")
    _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz",
             lambda a: a["state.prev_actions"].__setitem__((0, 0), 10**9))
    code = ("import numpy as np, fa_gpu\n"
            "try:\n"
            f"    e = fa_gpu.Engine.load({str(tmp_path / 'bad.npz')!r})\n"
            "except ValueError as exc:\n"
            "    print('rejected:', exc)\n"
            "else:\n"
            "    e.step(np.zeros((6, 2), dtype=np.int64))\n"
            "    print('stepped')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert "rejected:" in out.stdout and "state.prev_actions" in out.stdout, out.stdout


def _replace_member(src, dst, name, write):
    """Copy checkpoint ``src`` to ``dst`` with member ``name`` written by ``write(zipfile)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename != name:
                zout.writestr(info, zin.read(info))
        write(zout)


def _npy_header(shape, dtype) -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_zip_bomb_member_is_rejected_without_reading_it(tmp_path):
    engine = _full_engine()
    engine.save(tmp_path / "good.npz")
    header = _npy_header((6,), np.int64)  # what state.t must declare

    def bomb(z):  # the right .npy header, then 200 MB of zeros, deflated to ~200 kB
        info = zipfile.ZipInfo("state.t.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            f.write(header)
            zeros = bytes(1 << 20)
            for _ in range(200):
                f.write(zeros)

    _replace_member(tmp_path / "good.npz", tmp_path / "bomb.npz", "state.t.npy", bomb)
    assert os.path.getsize(tmp_path / "bomb.npz") < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="state.t is a compressed member"):
            fa_gpu.Engine.load(tmp_path / "bomb.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak

    # stored, the right header, but more data than it declares
    _replace_member(tmp_path / "good.npz", tmp_path / "long.npz", "state.t.npy",
                    lambda z: z.writestr("state.t.npy", header + bytes(6 * 8 + 4096)))
    with pytest.raises(ValueError, match=r"state.t declares \(6,\) int64 \(48 bytes\) but its zip "
                                         r"entry holds 4144"):
        fa_gpu.Engine.load(tmp_path / "long.npz")
    # a header declaring a huge array is refused before its data is read
    _replace_member(tmp_path / "good.npz", tmp_path / "huge.npz", "state.t.npy",
                    lambda z: z.writestr("state.t.npy", _npy_header((10**12,), np.int64)))
    with pytest.raises(ValueError, match=r"state.t has shape \(1000000000000,\)"):
        fa_gpu.Engine.load(tmp_path / "huge.npz")
    # members the loader does not expect are refused
    _replace_member(tmp_path / "good.npz", tmp_path / "extra.npz", "none",
                    lambda z: z.writestr("extra.npy", header + bytes(48)))
    with pytest.raises(ValueError, match=r"unexpected members \['extra'\]"):
        fa_gpu.Engine.load(tmp_path / "extra.npz")


def test_a_plain_npy_or_text_file_is_not_a_checkpoint(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(5))
    (tmp_path / "x.txt").write_text("hello")
    for p in (tmp_path / "x.npy", tmp_path / "x.txt"):
        with pytest.raises(ValueError, match="not an fa_gpu checkpoint"):
            fa_gpu.Engine.load(p)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_save_removes_stale_temp_files_of_dead_writers_only(tmp_path):
    _, engine = build(CASES[0], 4, seed=1)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".c.npz.{_dead_pid()}.0123abcd.tmp"
        busy = tmp_path / f".c.npz.{live.pid}.89abcdef.tmp"
        foreign = [tmp_path / ".c.npz.backup.tmp", tmp_path / f".d.npz.{_dead_pid()}.0123abcd.tmp",
                   tmp_path / "c.npz.tmp"]
        for p in [stale, busy, *foreign]:
            p.write_bytes(b"partial")
        engine.save(tmp_path / "c.npz")
        assert sorted(os.listdir(tmp_path)) == sorted([p.name for p in [busy, *foreign]] + ["c.npz"])
    finally:
        live.kill()
        live.wait()


def test_saved_file_mode_follows_umask_and_is_kept_on_overwrite(tmp_path):
    _, engine = build(CASES[0], 4, seed=1)
    old = os.umask(0o027)
    try:
        engine.save(tmp_path / "a.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o640
        os.umask(0o022)
        engine.save(tmp_path / "b.npz")
        assert stat.S_IMODE(os.stat(tmp_path / "b.npz").st_mode) == 0o644
        os.chmod(tmp_path / "b.npz", 0o600)
        engine.save(tmp_path / "b.npz")  # replaces it: keeps its mode
        assert stat.S_IMODE(os.stat(tmp_path / "b.npz").st_mode) == 0o600
    finally:
        os.umask(old)
