"""Engine checkpoints: the whole engine in one ``.npz`` file, written atomically.

Contents (NumPy arrays only, so loading never unpickles; every member stored uncompressed):

- ``__header__``: UTF-8 JSON as uint8: ``format`` ("fa_gpu-checkpoint"), ``version``
  (:data:`FORMAT_VERSION`), ``fa_gpu_version``, ``backend``, ``config`` (the engine's
  constructor settings), ``model`` (dependencies, control factors, which arrays are present),
  ``epoch`` (informative only: a loaded engine starts a fresh sequence lock);
- ``model.<name>[.<i>]``: the model as constructed (A, B, C, D, E, pA, pB, pD, policies);
- ``params.<name>``, ``state.<name>``: every buffer :func:`fa_gpu.schema.checkpointed` names, as
  stored (packed parameter rows: learned A/B/D and counts, derived logA, H_A, wA, wB, learning
  rates, gamma, alpha; state: prior, qs, qs_prev ``(N, sum S_f)``, obs, q_pi, neg_efe, actions,
  prev_actions, t).

- with a run's state (a checkpoint ``Engine.run(..., checkpoint_every=...)`` writes): header
  ``run`` (``step``, ``steps``, ``recorded``, ``env``: the environment's state keys) and members
  ``run.obs`` (the next step's observations) and ``run.env.<key>`` (the environment's
  ``state()``); ``load`` ignores them, :func:`read_run` reads them.

The random draws are keyed by (seed, agent, t, draw), so seed and ``t`` are the whole RNG state:
a loaded engine continues bit-identically on the backend that saved it.

A file is validated like user input before anything of it reaches an engine: only the expected
members are read, each member's declared shape and dtype (its ``.npy`` header) and its size in
the zip directory are checked against the schema before its data is read (so a crafted member
cannot make the loader allocate more than the file holds), and every array must satisfy its
buffer's ``valid`` rule (:class:`fa_gpu.schema.Buffer`).
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
import threading
import zipfile

import numpy as np

from .. import schema
from ..model import GenerativeModel, _tol, float_dtype

__all__ = ["FORMAT", "FORMAT_VERSION", "capture", "write_atomic", "save", "load", "run_state",
           "read_run"]

FORMAT = "fa_gpu-checkpoint"
FORMAT_VERSION = 1
_HEADER = "__header__"
_MAX_HEADER_BYTES = 1 << 20  # the JSON header; a real one is a few kB
_SETTINGS = ("n_agents", "seed", "inference_algo", "num_iter", "use_utility", "use_states_info_gain",
             "use_param_info_gain", "action_selection", "sampling_mode", "learn_A", "learn_B",
             "learn_D", "inference_horizon", "categorical_obs", "agent_offset")
#: settings added after format version 1 was first written, and their value in older files
_LATER = {"inference_horizon": None, "categorical_obs": False, "agent_offset": 0}
_MODEL_LISTS = ("A", "B", "C", "D", "pA", "pB", "pD")


def _buffers(engine) -> dict:
    """``{checkpoint name: backend array}`` of every buffer a checkpoint holds (from the schema):
    what :func:`capture` copies out and :func:`load` copies back in."""
    b = engine._buffers
    return {_member_name(k): b.packed[k] for k in schema.checkpointed(b.spec)}


def _member_name(buffer: str) -> str:
    return ("state." if schema.BY_NAME[buffer].group == "state" else "params.") + buffer


def capture(engine, run: dict | None = None) -> dict:
    """Host copies of everything :func:`save` writes, from one step boundary: ``{name: array}``.
    ``run``: the state of a run in progress (see :func:`run_state`), saved with the engine so
    ``Engine.run(..., resume=path)`` can continue it.

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
    if run is not None:
        env = run["env"]
        header["run"] = {"step": int(run["step"]), "steps": int(run["steps"]),
                         "recorded": int(run["recorded"]), "env": None if env is None else sorted(env)}
        arrays["run.obs"] = np.array(run["obs"], dtype=np.int64)
        for key, value in (env or {}).items():
            arrays[f"run.env.{key}"] = np.array(value)
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return arrays


def run_state(step: int, steps: int, recorded: int, obs, env) -> dict:
    """What a checkpoint taken during ``Engine.run`` holds besides the engine: ``step`` (steps of
    the run done), ``steps`` (the run's total), ``recorded`` (rows in the recorder), ``obs`` int
    ``(N, M)`` (the next step's input) and ``env`` (the environment's ``state()`` dict of arrays,
    or None for a run without an environment)."""
    return {"step": step, "steps": steps, "recorded": recorded, "obs": obs, "env": env}


_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")


def read_run(path, engine) -> dict:
    """The run state (:func:`run_state`'s dict) a checkpoint written during ``Engine.run`` holds,
    checked like user input against ``engine``, which must be the engine loaded from that same
    checkpoint (its step counters are compared). The environment's dict is checked by its own
    ``set_state``. ValueError for a checkpoint without run state or with a bad one."""
    with open(path, "rb") as fh:
        archive, header = _open(path, fh)
        run = header.get("run")
        if not isinstance(run, dict):
            raise ValueError(f"{path} holds no run state (it was written by save(), not by "
                             f"run(checkpoint_every=...)), so it cannot resume a run")
        fields = {k: _header_field(path, header, "run", k, kind=int) for k in ("step", "steps", "recorded")}
        if not 0 <= fields["step"] <= fields["steps"] or fields["recorded"] < 0:
            raise ValueError(f"{path}: run state {fields} is inconsistent")
        cfg = engine.config
        try:
            t = archive.read("state.t", (cfg.n_agents,), np.int64)
            obs = archive.read("run.obs", (cfg.n_agents, cfg.num_modalities), np.int64)
        except KeyError as exc:
            raise ValueError(f"{path} is an incomplete fa_gpu checkpoint: {exc.args[0]} is missing") from None
        if not np.array_equal(t, engine.t):
            raise ValueError(f"{path}: the engine's step counters are not the checkpoint's; resume "
                             f"with the engine loaded from it (Engine.load({str(path)!r}))")
        try:
            _check_indices(obs, cfg.num_obs, "modality", 0)
        except ValueError as exc:
            raise ValueError(f"{path}: run.obs: {exc}") from None
        env = None
        if run.get("env") is not None:
            keys = run["env"]
            if not isinstance(keys, list) or not all(isinstance(k, str) and _ENV_KEY.fullmatch(k) for k in keys):
                raise ValueError(f"{path}: header field run.env must list the environment's state keys")
            try:
                env = {k: archive.read(f"run.env.{k}", kinds="biufU") for k in keys}
            except KeyError as exc:
                raise ValueError(f"{path}: environment state member {exc.args[0]} is missing") from None
    return dict(fields, obs=obs, env=env)


# -- writing ------------------------------------------------------------------------------------
# Temporary files are ``.<target>.<pid>.<8 hex>.tmp`` next to the target: the pid tells a stale one
# (its writer is gone) from one another save is still writing.
_in_flight: set = set()  # temporary paths this process is writing now
_in_flight_lock = threading.Lock()


def _temp_pattern(base: str) -> re.Pattern:
    return re.compile(re.escape(f".{base}.") + r"(\d+)\.[0-9a-f]{8}\.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale_temps(directory: str, base: str) -> None:
    """Remove temporary files of earlier saves to ``base`` whose writer died (a killed save);
    only names of our own pattern, never one a live save is writing."""
    pattern, me = _temp_pattern(base), os.getpid()
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if e.name.startswith(f".{base}.")]
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        pid, path = int(match.group(1)), os.path.join(directory, name)
        with _in_flight_lock:
            busy = path in _in_flight if pid == me else _alive(pid)
        if not busy:
            try:
                os.unlink(path)
            except FileNotFoundError:  # another save removed it first
                pass


def write_atomic(arrays: dict, path) -> None:
    """Write ``arrays`` as an ``.npz`` to ``path`` (exactly that name) so that ``path`` holds
    either the old file or the complete new one, also after a crash or power cut: temporary file
    in the same directory, fsync, ``os.replace``, fsync of the directory. A new file gets the
    default mode (``0o666`` less the umask), a replaced one keeps its mode. Temporary files that
    a killed earlier save left next to ``path`` are removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _remove_stale_temps(directory, base)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with _in_flight_lock:
        _in_flight.add(tmp)
    try:
        # 0o666: the kernel applies the umask, as for any file the user creates
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    os.fchmod(f.fileno(), stat.S_IMODE(os.stat(path).st_mode))
                except FileNotFoundError:
                    pass
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
    finally:
        with _in_flight_lock:
            _in_flight.discard(tmp)
    # The rename itself is durable only once the directory entry is on disk.
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(engine, path, run: dict | None = None) -> None:
    """Write ``engine`` (model, settings, parameters, beliefs, step counters) to ``path``; with
    ``run`` (:func:`run_state`), also the state of the run in progress."""
    write_atomic(capture(engine, run), path)


# -- reading ------------------------------------------------------------------------------------
class _Archive:
    """The members of a checkpoint file, each read only after its ``.npy`` header and its size
    in the zip directory agree with what the caller expects."""

    def __init__(self, path, fh):
        self.path, self.size = path, os.fstat(fh.fileno()).st_size
        magic = fh.read(4)
        fh.seek(0)
        if self.size and magic not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ValueError(f"{path} is not an fa_gpu checkpoint (not a zip archive: a .npz "
                             f"written by Engine.save)")
        self.zip = zipfile.ZipFile(fh)
        self.infos = {}
        for info in self.zip.infolist():
            if not info.filename.endswith(".npy") or info.filename[:-4] in self.infos:
                raise ValueError(f"{path} is not an fa_gpu checkpoint (unexpected member "
                                 f"{info.filename!r})")
            self.infos[info.filename[:-4]] = info
        self.read_names = set()

    def __contains__(self, name) -> bool:
        return name in self.infos

    def read(self, name: str, shape=None, dtype=None, kinds: str = "") -> np.ndarray:
        """Member ``name`` as an array. ``shape``, ``dtype``: what it must declare (None: any);
        ``kinds``: dtype kinds it may have. KeyError when it is absent."""
        info, path = self.infos[name], self.path
        self.read_names.add(name)
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ValueError(f"{path}: {name} is a compressed member; checkpoints store arrays "
                             f"uncompressed")
        if info.file_size > self.size:
            raise ValueError(f"{path}: {name} declares {info.file_size} bytes, more than the "
                             f"file's {self.size}")
        with self.zip.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{path}: {name} has .npy format version {version}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            got_shape, fortran, got_dtype = read_header(fp)
            if got_dtype.hasobject or (kinds and got_dtype.kind not in kinds):
                raise ValueError(f"{path}: {name} has dtype {got_dtype}, expected "
                                 f"{dtype or 'kind ' + kinds}")
            if (shape is not None and got_shape != tuple(shape)) or (
                    dtype is not None and got_dtype != np.dtype(dtype)):
                raise ValueError(f"{path}: {name} has shape {got_shape} and dtype {got_dtype}; "
                                 f"expected {tuple(shape) if shape is not None else 'any shape'} "
                                 f"and {np.dtype(dtype) if dtype is not None else got_dtype}")
            nbytes = math.prod(got_shape) * got_dtype.itemsize
            if info.file_size != fp.tell() + nbytes:
                raise ValueError(f"{path}: {name} declares {got_shape} {got_dtype} ({nbytes} "
                                 f"bytes) but its zip entry holds {info.file_size - fp.tell()} "
                                 f"bytes of data")
            data = fp.read(nbytes)  # reaching the end checks the member's CRC
        arr = np.frombuffer(data, dtype=got_dtype)
        return (arr.reshape(got_shape[::-1]).T if fortran else arr.reshape(got_shape))

    def check_all_read(self) -> None:
        extra = sorted(set(self.infos) - self.read_names)
        if extra:
            raise ValueError(f"{self.path} is not an fa_gpu checkpoint of this engine "
                             f"(unexpected members {extra})")


def _open(path, fh) -> tuple[_Archive, dict]:
    """(archive, header) with the header checked: ValueError naming ``path`` when the file is
    not a checkpoint of a format this version reads."""
    try:
        archive = _Archive(path, fh)
        if _HEADER not in archive:
            raise ValueError(f"{path} is not an fa_gpu checkpoint (no {_HEADER} entry)")
        raw = archive.read(_HEADER, dtype=np.uint8)
        if raw.ndim != 1 or raw.size > _MAX_HEADER_BYTES:
            raise ValueError(f"{path}: {_HEADER} must be at most {_MAX_HEADER_BYTES} bytes of "
                             f"JSON; got shape {raw.shape}")
        header = json.loads(raw.tobytes().decode())
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeDecodeError,
            json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable fa_gpu checkpoint (truncated or corrupt: "
                         f"{type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not an fa_gpu checkpoint (format "
                         f"{header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {header.get('version')}, "
                         f"this fa_gpu reads {FORMAT_VERSION}")
    return archive, header


_RUN_OPTIONS = ("num_threads", "device", "cuda_path")


def load(path, backend: str | None = None, **options):
    """The engine saved at ``path``, on ``backend`` (default: the backend that saved it; bit-
    identical continuation needs the same backend). ``options`` are the Engine's settings of
    where it runs, not saved with it: ``num_threads``, ``device``, ``cuda_path``. Raises
    ValueError, naming the member and the rule, for anything that is not a complete, valid
    checkpoint of this format version; the file is never trusted (see the module docstring).
    A loaded engine starts a fresh sequence lock (``snapshot``'s epoch is 0)."""
    unknown = sorted(set(options) - set(_RUN_OPTIONS))
    if unknown:
        raise TypeError(f"load() got unexpected options {unknown}; it takes {', '.join(_RUN_OPTIONS)}")
    with open(path, "rb") as fh:
        archive, header = _open(path, fh)
        try:
            return _restore(path, archive, header, backend, options)
        except KeyError as exc:
            raise ValueError(f"{path} is an incomplete fa_gpu checkpoint: {exc.args[0]} is "
                             f"missing") from exc
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path} is not a readable fa_gpu checkpoint (truncated or corrupt: "
                             f"{type(exc).__name__}: {exc})") from exc


def _header_field(path, header, *keys, kind=None):
    value = header
    for k in keys:
        value = value[k]  # KeyError: reported as missing
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ValueError(f"{path}: header field {'.'.join(keys)} must be "
                         f"{getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _read_model(path, archive, header) -> GenerativeModel:
    """The saved model, through GenerativeModel's checks."""
    M = _header_field(path, header, "model", "num_modalities", kind=int)
    F = _header_field(path, header, "model", "num_factors", kind=int)
    counts = _header_field(path, header, "model", "counts", kind=list)
    lists = {name: [archive.read(f"model.{name}.{i}", kinds="f")
                    for i in range(M if name in ("A", "C", "pA") else F)]
             for name in _MODEL_LISTS if name[0] != "p" or name in counts}
    try:
        # the policies are in the file already: the bound on enumerating them does not apply
        return GenerativeModel(
            **lists, E=archive.read("model.E", kinds="f"),
            policies=archive.read("model.policies", kinds="iu"),
            A_dependencies=_header_field(path, header, "model", "A_dependencies", kind=list),
            B_dependencies=_header_field(path, header, "model", "B_dependencies", kind=list),
            control_fac_idx=_header_field(path, header, "model", "control_fac_idx", kind=list),
            max_policies=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: the saved model (members model.*) is invalid: {exc}") from exc


def _restore(path, archive, header, backend, options):
    from .. import Engine

    model = _read_model(path, archive, header)
    cfg = _header_field(path, header, "config", kind=dict)
    n = _header_field(path, header, "config", "n_agents", kind=int)
    try:
        dt = float_dtype(cfg["dtype"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: header field config.dtype: {exc}") from None
    # the rates go through the Engine constructor's own checks
    rates = {}
    for b in schema.BUFFERS:
        if b.valid == "rate":
            shape = (n,) if b.width is None else (n, len(schema.LR_NAMES))
            rates[b.name] = archive.read(_member_name(b.name), shape, dt)
    settings = {k: cfg[k] if k in cfg or k not in _LATER else _LATER[k]
                for k in _SETTINGS if k != "n_agents"}
    want = _header_field(path, header, "backend", kind=str) if backend is None else backend
    try:
        engine = Engine(model, n, backend=want, dtype=dt, gamma=rates["gamma"],
                        alpha=rates["alpha"], **dict(zip(schema.LR_NAMES, rates["lr"].T)),
                        **settings, **options)
    except RuntimeError as exc:
        if backend is not None:
            raise
        raise RuntimeError(f"{path} was saved by the {want!r} backend, which cannot run here "
                           f"({exc}); pass backend='auto' or another name to load it") from exc
    except (ValueError, TypeError) as exc:
        # the constructor's message starts with the argument's name: name the member instead
        where = next((_member_name(b.name) for b in schema.BUFFERS if b.valid == "rate"
                      and str(exc).startswith(schema.LR_NAMES if b.views == "lr" else b.name)),
                     "header field config")
        raise ValueError(f"{path}: {where}: {exc}") from exc

    # Every buffer read and checked before any reaches the engine.
    targets = _buffers(engine)
    host = {}
    for name, dst in targets.items():
        host[name.split(".", 1)[1]] = archive.read(name, tuple(dst.shape), dst.dtype)
    if isinstance(header.get("run"), dict):  # a run's state: read by read_run, not by load
        archive.read_names.update(k for k in archive.infos if k.startswith("run."))
    archive.check_all_read()
    views = schema.Bound(host, engine._spec, engine.config, engine.layout)
    for buf in host:
        rule = schema.BY_NAME[buf].valid
        if rule != "rate":
            try:
                _RULES[rule](buf, views, engine)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}: {_member_name(buf)}: {exc}") from exc

    be = engine._backend
    with be.on_stream():
        for name, dst in targets.items():
            # In place: the pymdp-layout views (A, B, qs, ...) point into these buffers.
            dst[...] = be.asarray(host[name.split(".", 1)[1]], dtype=dst.dtype)
        be.synchronize()
    return engine


# -- the valid rules of schema.Buffer -------------------------------------------------------------
def _rule_model(buf, views, engine) -> None:
    """GenerativeModel's rules for this group, with the saved array in place of the model's."""
    m = engine.model
    arrays = {k: getattr(m, k) for k in ("A", "B", "C", "D", "E", "pA", "pB", "pD")}
    arrays[buf] = getattr(views, buf)
    GenerativeModel(**arrays, A_dependencies=m.A_dependencies, B_dependencies=m.B_dependencies,
                    control_fac_idx=m.control_fac_idx, policies=m.policies, max_policies=None)


def _first(bad: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _rule_finite(buf, views, engine) -> None:
    arr = views.packed[buf]
    if not np.isfinite(arr).all():
        idx = _first(~np.isfinite(arr))
        raise ValueError(f"must be finite; entry {idx} is {arr[idx]}")


def _distributions(rows: np.ndarray, what: str, zeros_ok: bool = False) -> None:
    """Each row of ``rows`` (N, K) non-negative, finite and summing to 1 (or, with ``zeros_ok``,
    all zeros), checked in the array's own dtype's tolerance."""
    if not np.isfinite(rows).all():
        idx = _first(~np.isfinite(rows))
        raise ValueError(f"{what} must be finite; agent {idx[0]} entry {idx[1]} is {rows[idx]}")
    if (rows < 0).any():
        idx = _first(rows < 0)
        raise ValueError(f"{what} must be non-negative; agent {idx[0]} entry {idx[1]} is {rows[idx]}")
    sums = rows.sum(axis=1)
    bad = np.abs(sums - 1) > _tol(rows.dtype)
    if zeros_ok:
        bad &= ~(rows == 0).all(axis=1)
    if bad.any():
        a = int(np.argmax(bad))
        raise ValueError(f"{what} of every agent must sum to 1{' (or be all 0)' if zeros_ok else ''}; "
                         f"agent {a} sums to {float(sums[a]):.6g}")


def _rule_belief(buf, views, engine) -> None:
    for f, q in enumerate(getattr(views, buf)):
        _distributions(q, f"factor {f}")


def _rule_policy_posterior(buf, views, engine) -> None:
    # all zeros: reset, no policy inferred since
    _distributions(views.packed[buf], "the policy posterior", zeros_ok=True)


def _check_indices(arr, bounds, what: str, low: int) -> None:
    hi = np.asarray(bounds, dtype=np.int64)
    bad = (arr < 0) | (arr >= hi)
    if low < 0:
        bad &= arr != low
    if bad.any():
        a, k = _first(bad)
        lo = f"{low} or [0, {hi[k]})" if low < 0 else f"[0, {hi[k]})"
        raise ValueError(f"agent {a}, {what} {k}: {int(arr[a, k])} is outside {lo}")


def _rule_index(buf, views, engine, low: int = 0) -> None:
    cfg = engine.config
    width = schema.BY_NAME[buf].width
    bounds, what = {"M": (cfg.num_obs, "modality"), "F": (cfg.num_controls, "factor")}[width]
    _check_indices(views.packed[buf], bounds, what, low)


def _rule_count(buf, views, engine) -> None:
    arr = views.packed[buf]
    if (arr < 0).any():
        a = int(np.argmax(arr < 0))
        raise ValueError(f"must be >= 0; agent {a} has {int(arr[a])}")


def _rule_obs_window(buf, views, engine) -> None:
    for m, w in enumerate(getattr(views, buf)):  # (N, H, O_m); an empty slot is all zeros
        _distributions(w.reshape(-1, w.shape[-1]), f"modality {m} (agent x slot rows)", zeros_ok=True)


def _rule_act_window(buf, views, engine) -> None:
    cfg = engine.config
    arr = views.packed[buf].reshape(cfg.n_agents, -1, cfg.num_factors)  # (N, H - 1, F)
    _check_indices(arr.reshape(-1, cfg.num_factors), cfg.num_controls, "(agent x slot), factor", -1)


def _rule_qs_window(buf, views, engine) -> None:
    for f, w in enumerate(getattr(views, buf)):  # (N, H, S_f)
        _distributions(w.reshape(-1, w.shape[-1]), f"factor {f} (agent x slot rows)")


def _rule_vfe(buf, views, engine) -> None:
    arr = views.packed[buf]  # NaN: not computed by the fused step
    if np.isinf(arr).any():
        raise ValueError(f"must be finite (or NaN: not computed); agent {_first(np.isinf(arr))[0]} is inf")


_RULES = {"model": _rule_model, "finite": _rule_finite, "belief": _rule_belief,
          "policy_posterior": _rule_policy_posterior, "index": _rule_index,
          "index_or_none": lambda buf, views, engine: _rule_index(buf, views, engine, low=-1),
          "count": _rule_count, "obs_window": _rule_obs_window, "act_window": _rule_act_window,
          "qs_window": _rule_qs_window, "vfe": _rule_vfe}
for _b in schema.BUFFERS:  # every buffer a checkpoint can hold has a rule implemented here
    if _b.group not in ("scratch", "tables") and _b.valid not in (*_RULES, "rate"):
        raise ImportError(f"fa_gpu.runtime.checkpoint: no rule {_b.valid!r} for buffer {_b.name}")
