"""Engine checkpoints: the whole engine in one ``.npz`` file, written atomically.

Contents (NumPy arrays only, so loading never unpickles):

- ``__header__``: UTF-8 JSON as uint8: ``format`` ("fa_gpu-checkpoint"), ``version``
  (:data:`FORMAT_VERSION`), ``fa_gpu_version``, ``backend``, ``config`` (the engine's
  constructor settings), ``model`` (dependencies, control factors, which arrays are present),
  ``epoch``;
- ``model.<name>[.<i>]``: the model as constructed (A, B, C, D, E, pA, pB, pD, policies);
- ``params.<name>``, ``state.<name>``: every buffer :func:`fa_gpu.schema.checkpointed` names, as
  stored (packed parameter rows: learned A/B/D and counts, derived logA, H_A, wA, wB, learning
  rates, gamma, alpha; state: prior, qs, qs_prev ``(N, sum S_f)``, obs, q_pi, neg_efe, actions,
  prev_actions, t).

The random draws are keyed by (seed, agent, t, draw), so seed and ``t`` are the whole RNG state:
a loaded engine continues bit-identically on the backend that saved it.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from .. import schema

__all__ = ["FORMAT", "FORMAT_VERSION", "capture", "write_atomic", "save", "load"]

FORMAT = "fa_gpu-checkpoint"
FORMAT_VERSION = 1
_HEADER = "__header__"
_SETTINGS = ("n_agents", "seed", "inference_algo", "num_iter", "use_utility", "use_states_info_gain",
             "use_param_info_gain", "action_selection", "sampling_mode", "learn_A", "learn_B",
             "learn_D", "inference_horizon", "categorical_obs")
#: settings added after format version 1 was first written, and their value in older files
_LATER = {"inference_horizon": None, "categorical_obs": False}
_MODEL_LISTS = ("A", "B", "C", "D", "pA", "pB", "pD")


def _buffers(engine) -> dict:
    """``{checkpoint name: backend array}`` of every buffer a checkpoint holds (from the schema):
    what :func:`capture` copies out and :func:`load` copies back in."""
    b = engine._buffers
    return {("state." if schema.BY_NAME[k].group == "state" else "params.") + k: b.packed[k]
            for k in schema.checkpointed(b.spec)}


def capture(engine) -> dict:
    """Host copies of everything :func:`save` writes, from one step boundary: ``{name: array}``.

    From the thread that steps the engine it first finishes an unfinished ``step_async``; from
    another thread it retries until no step ran during the copy (``read_consistent``).
    """
    from .. import __version__
    from .snapshot import read_consistent

    cfg, m, be = engine.config, engine.model, engine._backend
    arrays = {}
    for name in _MODEL_LISTS:
        for i, a in enumerate(getattr(m, name) or ()):
            arrays[f"model.{name}.{i}"] = np.asarray(a)
    arrays["model.E"], arrays["model.policies"] = np.asarray(m.E), np.asarray(m.policies)
    sources = _buffers(engine)
    state, epoch = read_consistent(engine, lambda: {k: be.to_host(v) for k, v in sources.items()})
    arrays.update(state)
    header = {
        "format": FORMAT, "version": FORMAT_VERSION, "fa_gpu_version": __version__,
        "backend": engine.backend, "epoch": epoch,
        "config": dict({k: getattr(cfg, k) for k in _SETTINGS}, dtype=cfg.dtype.name),
        "model": {"A_dependencies": m.A_dependencies, "B_dependencies": m.B_dependencies,
                  "control_fac_idx": m.control_fac_idx, "num_modalities": m.num_modalities,
                  "num_factors": m.num_factors,
                  "counts": [k for k in ("pA", "pB", "pD") if getattr(m, k) is not None]},
    }
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return arrays


def write_atomic(arrays: dict, path) -> None:
    """Write ``arrays`` as an ``.npz`` to ``path`` (exactly that name) so that ``path`` holds
    either the old file or the complete new one, also after a crash or power cut: temporary file
    in the same directory, fsync, ``os.replace``, fsync of the directory."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself is durable only once the directory entry is on disk.
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(engine, path) -> None:
    """Write ``engine`` (model, settings, parameters, beliefs, step counters) to ``path``."""
    write_atomic(capture(engine), path)


def _read(path) -> tuple[dict, dict]:
    """(header, {name: array}) with every array read; ValueError naming ``path`` when the file is
    not a complete checkpoint of a format this version reads. Opening errors (missing file,
    permissions) propagate unchanged."""
    with open(path, "rb") as fh:
        return _parse(path, fh)


def _parse(path, fh) -> tuple[dict, dict]:
    try:
        with np.load(fh, allow_pickle=False) as z:
            if _HEADER not in z.files:
                raise ValueError(f"{path} is not an fa_gpu checkpoint (no {_HEADER} entry)")
            header = json.loads(z[_HEADER].tobytes().decode())
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError(f"{path} is not an fa_gpu checkpoint (format "
                                 f"{header.get('format') if isinstance(header, dict) else None!r})")
            if header.get("version") != FORMAT_VERSION:
                raise ValueError(f"{path}: checkpoint format version {header.get('version')}, "
                                 f"this fa_gpu reads {FORMAT_VERSION}")
            arrays = {k: z[k] for k in z.files if k != _HEADER}
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable fa_gpu checkpoint (truncated or corrupt: "
                         f"{type(exc).__name__}: {exc})") from exc
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        # np.load's own ValueError: not an npy/npz at all (it refuses to try pickle).
        raise ValueError(f"{path} is not an fa_gpu checkpoint ({exc})") from exc
    return header, arrays


_RUN_OPTIONS = ("num_threads", "device", "cuda_path")


def load(path, backend: str | None = None, **options):
    """The engine saved at ``path``, on ``backend`` (default: the backend that saved it; bit-
    identical continuation needs the same backend). ``options`` are the Engine's settings of
    where it runs, not saved with it: ``num_threads``, ``device``, ``cuda_path``. Raises
    ValueError for anything that is not a complete checkpoint of this format version."""
    from .. import Engine, GenerativeModel

    unknown = sorted(set(options) - set(_RUN_OPTIONS))
    if unknown:
        raise TypeError(f"load() got unexpected options {unknown}; it takes {', '.join(_RUN_OPTIONS)}")
    header, arrays = _read(path)
    try:
        cfg, mh = header["config"], header["model"]
        lists = {name: [arrays[f"model.{name}.{i}"] for i in range(
                     mh["num_modalities"] if name in ("A", "C", "pA") else mh["num_factors"])]
                 for name in _MODEL_LISTS if name[0] != "p" or name in mh["counts"]}
        # the policies are in the file already: the bound on enumerating them does not apply
        model = GenerativeModel(**lists, E=arrays["model.E"], policies=arrays["model.policies"],
                                A_dependencies=mh["A_dependencies"], B_dependencies=mh["B_dependencies"],
                                control_fac_idx=mh["control_fac_idx"], max_policies=None)
        settings = {k: cfg[k] if k in cfg or k not in _LATER else _LATER[k]
                    for k in _SETTINGS if k != "n_agents"}
        want = header["backend"] if backend is None else backend
        lr = arrays["params.lr"]
        try:  # the rates go through the constructor's checks; the restore below copies them again
            engine = Engine(model, cfg["n_agents"], backend=want, dtype=cfg["dtype"],
                            gamma=arrays["params.gamma"], alpha=arrays["params.alpha"],
                            **dict(zip(schema.LR_NAMES, np.asarray(lr).T)), **settings, **options)
        except RuntimeError as exc:
            if backend is not None:
                raise
            raise RuntimeError(f"{path} was saved by the {want!r} backend, which cannot run here "
                               f"({exc}); pass backend='auto' or another name to load it") from exc
        be = engine._backend
        with be.on_stream():
            for name, dst in _buffers(engine).items():
                src = arrays[name]
                if src.shape != tuple(dst.shape):
                    raise ValueError(f"{path}: {name} has shape {src.shape}, the rebuilt engine "
                                     f"expects {tuple(dst.shape)}")
                # In place: the pymdp-layout views (A, B, qs, ...) point into these buffers.
                dst[...] = be.asarray(src, dtype=dst.dtype)
            be.synchronize()
    except KeyError as exc:
        raise ValueError(f"{path} is an incomplete fa_gpu checkpoint: {exc.args[0]} is missing") from exc
    engine._epoch = int(header["epoch"])
    return engine
