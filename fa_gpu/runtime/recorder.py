"""Asynchronous trajectory recorder: per-step agent arrays -> a chunked, compressed Zarr v3 store.

Layout of the Zarr v3 group at ``path`` (T steps, N agents, F factors, M modalities):

- ``actions``: ``(T, N, F)`` int64 and ``obs``: ``(T, N, M)`` int64;
- ``qs_{f}``: ``(T, N, S_f)`` in the recorder's float ``dtype``, one per factor, only with
  ``record_beliefs``;
- group attributes: ``format`` (:data:`STORE_FORMAT`, the mark ``overwrite=True`` looks for), ``n_agents``, ``num_modalities``, ``num_factors``, ``num_states``,
  ``record_beliefs``, ``chunk_steps``, ``dtype``, ``fa_gpu_version``, the caller's ``attrs``,
  ``steps_written`` (steps whose data is on disk: after a crash trust only these rows) and
  ``complete`` (true once ``close()`` succeeded; a ``with`` block left by an exception flushes
  what was recorded but leaves it false).

It is plain Zarr (zarr, xarray, dask read it directly); ``read_store`` is a convenience.
"Durably written" means handed to the OS by an atomic file replace (zarr's ``LocalStore``), so it
survives the process being killed; zarr does not fsync, so a power cut may lose more.
"""
from __future__ import annotations

import json
import operator
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr

from .. import __version__
from .topology import pool_sizes

__all__ = ["Recorder", "read_store", "STORE_FORMAT"]

#: value of the ``format`` attribute of every store a Recorder writes
STORE_FORMAT = "fa_gpu-trajectories"

# Uncompressed bytes per zarr chunk: large enough to compress well and keep the file count low,
# small enough that reading a few agents does not decode the whole population.
_CHUNK_BYTES = 4 << 20
_RESERVED = frozenset({"format", "n_agents", "num_modalities", "num_factors", "num_states", "record_beliefs",
                       "chunk_steps", "dtype", "fa_gpu_version", "steps_written", "complete"})


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Recorder:
    """Record ``actions``, ``obs`` and optionally beliefs ``qs`` of N agents, one step at a time.

    ``record()`` copies the step into a host buffer of ``chunk_steps`` steps; a full buffer is
    written by a thread pool of ``io_threads`` (default: ``topology.pool_sizes().io_threads``)
    while the simulation goes on. At most ``max_pending`` chunks are in flight; beyond that
    ``record()`` blocks. A failed write is re-raised (as ``RuntimeError`` from the original) by
    the next ``record``/``flush``/``close``. Call it from one thread; inputs are host (NumPy)
    arrays. ``resume=True`` continues an existing store of the same shapes (after a crash: see
    :meth:`rewind`). ``overwrite=False`` refuses a ``path`` that already holds data; ``overwrite=True``
    replaces only a store a Recorder wrote (its ``format`` attribute says so) or an empty
    directory, and refuses (FileExistsError, leaving it untouched) anything else.
    """

    def __init__(self, path, n_agents, *, num_modalities, num_factors, num_states=None,
                 record_beliefs=False, chunk_steps=64, max_pending=8, io_threads=None,
                 dtype="float32", overwrite=False, attrs=None, resume=False):
        n = _positive("n_agents", n_agents)
        num_modalities = _positive("num_modalities", num_modalities)
        num_factors = _positive("num_factors", num_factors)
        self._chunk_steps = _positive("chunk_steps", chunk_steps)
        self._max_pending = _positive("max_pending", max_pending)
        io_threads = pool_sizes().io_threads if io_threads is None else _positive("io_threads", io_threads)
        float_dtype = np.dtype(dtype)
        if float_dtype.kind != "f":
            raise ValueError(f"dtype must be a floating dtype such as 'float32', got {float_dtype}")
        if num_states is not None:
            num_states = [_positive(f"num_states[{i}]", s) for i, s in enumerate(num_states)]
            if len(num_states) != num_factors:
                raise ValueError(f"num_states must have num_factors={num_factors} entries, "
                                 f"got {len(num_states)}")
        if record_beliefs and num_states is None:
            raise ValueError("record_beliefs=True needs num_states (one state count per factor)")
        user = dict(attrs or {})
        if _RESERVED & user.keys():
            raise ValueError(f"attrs may not set reserved keys {sorted(_RESERVED & user.keys())}")
        meta = dict(user, format=STORE_FORMAT, n_agents=n, num_modalities=num_modalities, num_factors=num_factors,
                    num_states=num_states, record_beliefs=bool(record_beliefs),
                    chunk_steps=self._chunk_steps, dtype=float_dtype.name,
                    fa_gpu_version=__version__, steps_written=0, complete=False)
        try:
            json.dumps(meta)
        except TypeError as exc:
            raise ValueError(f"attrs must be JSON-serializable: {exc}") from None

        # name -> (message label, row shape, dtype kind, storage dtype, last axis name)
        self._specs = {"actions": ("actions", (n, num_factors), "i", np.dtype(np.int64), "factor"),
                       "obs": ("obs", (n, num_modalities), "i", np.dtype(np.int64), "modality")}
        if record_beliefs:
            self._specs.update({f"qs_{f}": (f"qs[{f}]", (n, s), "f", float_dtype, f"state_{f}")
                                for f, s in enumerate(num_states)})
        if resume and overwrite:
            raise ValueError("resume=True continues an existing store; it cannot also overwrite it")
        if resume:
            self._group, self._arrays = self._reopen(path, meta)
        else:
            if overwrite:
                _check_replaceable(path)
            try:
                self._group = zarr.open_group(path, mode="w" if overwrite else "w-", zarr_format=3,
                                              attributes=meta)
            except FileExistsError as exc:
                raise FileExistsError(f"{path} already holds data; pass overwrite=True to replace "
                                      f"it (or resume=True to continue it)") from exc
            self._arrays = {}
            for name, (_, (_, width), _, dt, axis) in self._specs.items():
                agents = max(1, min(n, _CHUNK_BYTES // (self._chunk_steps * width * dt.itemsize)))
                self._arrays[name] = self._group.create_array(
                    name, shape=(0, n, width), chunks=(self._chunk_steps, agents, width), dtype=dt,
                    dimension_names=("step", "agent", axis))

        self._num_factors = num_factors
        self._beliefs = bool(record_beliefs)
        self._steps = 0       # steps recorded
        self._t0 = 0          # first step held in self._buf (a multiple of chunk_steps)
        self._handed = 0      # steps handed to the writers so far
        self._written = 0     # steps durably written, mirrors the steps_written attribute
        self._done = []       # finished (t0, t1) ranges not yet joined to the written prefix
        self._pending = 0
        self._error = None
        self._closed = False
        self._free = []       # recycled step buffers, so memory stays at max_pending + 1 chunks
        self._buf = self._new_buffer()
        self._cond = threading.Condition()
        self._meta_lock = threading.Lock()
        # More threads than chunks in flight would only ever sit idle.
        self._pool = ThreadPoolExecutor(min(io_threads, self._max_pending),
                                        thread_name_prefix="fa_gpu-recorder")
        if resume:
            self._written = int(self._group.attrs["steps_written"])
            self.rewind(self._written)

    def _reopen(self, path, meta):
        """(group, arrays) of an existing store this recorder continues: a Recorder's store
        (its ``format``) made for the same shapes, chunking and dtype, with sane attributes."""
        try:
            group = zarr.open_group(path, mode="r+", zarr_format=3)
        except (FileNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"resume=True: {path} is not a readable Zarr v3 store ({exc})") from None
        attrs = group.attrs.asdict()
        if attrs.get("format") != STORE_FORMAT:
            raise ValueError(f"resume=True: {path} is not a store written by fa_gpu.Recorder")
        for key in ("n_agents", "num_modalities", "num_factors", "num_states", "record_beliefs",
                    "chunk_steps", "dtype"):
            if attrs.get(key) != meta[key]:
                raise ValueError(f"resume=True: {path} was recorded with {key}={attrs.get(key)!r}, "
                                 f"this recorder has {key}={meta[key]!r}")
        written = attrs.get("steps_written")
        if isinstance(written, bool) or not isinstance(written, int) or written < 0:
            raise ValueError(f"resume=True: {path} has a bad steps_written attribute {written!r}")
        arrays = {}
        for name, (_, row, _, dt, _) in self._specs.items():
            arr = group.get(name)
            if arr is None or not hasattr(arr, "dtype") or arr.dtype != dt or \
                    tuple(arr.shape[1:]) != row or arr.shape[0] < written:
                raise ValueError(f"resume=True: {path}/{name} is missing or not ({written}+, "
                                 f"{row[0]}, {row[1]}) {dt}")
            arrays[name] = arr
        return group, arrays

    def rewind(self, step) -> None:
        """Continue recording at ``step`` (at most the steps durably written): rows from ``step``
        on will be written again, and until then ``steps_written`` says ``step``. A resumed run
        rewinds to the step its checkpoint was taken at, so the store holds each step once."""
        self._check_usable()
        step = operator.index(step)
        self.flush()
        if not 0 <= step <= self._written:
            raise ValueError(f"can rewind to a step in [0, {self._written}] (steps durably "
                             f"written), not {step}")
        t0 = step - step % self._chunk_steps
        for name, buf in self._buf.items():  # the chunk's earlier rows are rewritten with it
            buf[: step - t0] = self._arrays[name][t0:step]
        self._steps = self._handed = step
        self._t0 = t0
        with self._meta_lock:
            self._written = step
            self._done = []
            self._group.update_attributes({"steps_written": step, "complete": False})

    @property
    def steps_written(self) -> int:
        """Steps whose data is durably written (the ``steps_written`` attribute)."""
        return self._written

    @property
    def pending(self) -> int:
        """Chunks handed to the writer threads and not yet finished (at most ``max_pending``)."""
        return self._pending

    @property
    def made_for(self) -> dict:
        """The shapes this recorder takes: ``n_agents``, ``num_modalities``, ``num_factors``,
        ``num_states`` (list or None) and ``record_beliefs`` (``Engine.run`` checks them
        against the engine before its first step)."""
        attrs = self._group.attrs
        return {k: attrs[k] for k in ("n_agents", "num_modalities", "num_factors", "num_states",
                                      "record_beliefs")}

    def record(self, step, actions, obs, qs=None) -> None:
        """Buffer one step; ``step`` must equal the number of steps recorded so far.

        ``actions``: ``(N, F)`` integer, ``obs``: ``(N, M)`` integer, ``qs``: sequence of F
        ``(N, S_f)`` float arrays (required with ``record_beliefs``, ignored without). The data
        are copied, so the caller may reuse its arrays at once. Blocks while ``max_pending``
        chunks are in flight.
        """
        self._check_usable()
        step = operator.index(step)
        if step != self._steps:
            raise ValueError(f"steps must be recorded in order: expected step {self._steps}, got {step}")
        inputs = {"actions": actions, "obs": obs}
        if self._beliefs:
            if qs is None or len(qs) != self._num_factors:
                got = "None" if qs is None else f"{len(qs)} arrays"
                raise ValueError(f"qs must be a sequence of {self._num_factors} arrays "
                                 f"(one per factor), got {got}")
            inputs.update({f"qs_{f}": q for f, q in enumerate(qs)})
        # Validate every input before copying any, so a rejected step leaves the buffer untouched.
        checked = {name: self._validate(name, x) for name, x in inputs.items()}
        row = step - self._t0
        for name, x in checked.items():
            self._buf[name][row] = x
        self._steps += 1
        if self._steps - self._t0 == self._chunk_steps:
            self._hand_over(recycle=True)

    def flush(self) -> None:
        """Write any partly filled chunk too, and wait until every recorded step is written."""
        self._check_usable()
        if self._steps > self._handed:
            # The buffer stays in use: when its chunk fills up it is written again whole.
            self._hand_over(recycle=False)
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0)
        self._raise_if_failed()

    def close(self, complete: bool = True) -> None:
        """Flush, set the ``complete`` attribute (unless ``complete`` is False: the run did not
        finish) and stop the writer threads (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
            if complete:
                self._group.update_attributes({"complete": True})
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close; when the block raised, the steps recorded are flushed but the store is not
        marked complete, and a failure to flush them is added to the block's exception as a
        note instead of replacing it."""
        if exc_type is None:
            self.close()
            return
        try:
            self.close(complete=False)
        except Exception as err:  # the block's exception is the one to see
            if exc is not None:
                exc.add_note(f"closing the recorder also failed: {err!r}")

    @staticmethod
    def open(path) -> dict:
        """Same as ``read_store(path)``."""
        return read_store(path)

    def _validate(self, name, x) -> np.ndarray:
        label, shape, kind, _, axis = self._specs[name]
        x = np.asarray(x)
        if x.shape != shape:
            raise ValueError(f"{label} must have shape {shape} (agent, {axis}), got {x.shape}")
        if (kind == "i" and not np.issubdtype(x.dtype, np.integer)) or (
                kind == "f" and not np.issubdtype(x.dtype, np.floating)):
            what = "an integer" if kind == "i" else "a floating"
            raise ValueError(f"{label} must have {what} dtype, got {x.dtype}")
        return x

    def _new_buffer(self) -> dict:
        return {name: np.empty((self._chunk_steps,) + shape, dtype=dt)
                for name, (_, shape, _, dt, _) in self._specs.items()}

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("this Recorder is closed")
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"recorder write failed in a background thread: {self._error!r}") \
                from self._error

    def _hand_over(self, recycle: bool) -> None:
        t0, t1 = self._t0, self._steps
        with self._cond:
            # Backpressure: stall the simulation rather than queue unbounded memory.
            self._cond.wait_for(lambda: self._pending < self._max_pending or self._error is not None)
        self._raise_if_failed()
        for arr in self._arrays.values():
            if arr.shape[0] < t1:
                # Only this thread resizes, and before the write is queued, so no writer addresses
                # rows beyond the shape it sees; growing never deletes chunks.
                arr.resize((t1,) + arr.shape[1:])
        # Chunks start at multiples of chunk_steps, so concurrent writes never share a zarr chunk.
        data = {name: buf[: t1 - t0] for name, buf in self._buf.items()}
        with self._cond:
            self._pending += 1
        self._pool.submit(self._run, t0, t1, data, self._buf if recycle else None)
        self._handed = t1
        if recycle:
            self._t0 = t1
            with self._cond:
                self._buf = self._free.pop() if self._free else self._new_buffer()

    def _run(self, t0, t1, data, buffer) -> None:
        try:
            self._write_chunk(t0, data)
            with self._meta_lock:
                # Writes finish out of order; steps_written may only cover a gap-free prefix.
                self._done.append((t0, t1))
                self._done.sort()
                before = self._written
                while self._done and self._done[0][0] <= self._written:
                    self._written = max(self._written, self._done.pop(0)[1])
                if self._written != before:
                    self._group.update_attributes({"steps_written": self._written})
        except BaseException as exc:  # re-raised in the caller's thread by _raise_if_failed
            with self._cond:
                self._error = self._error or exc
        finally:
            with self._cond:
                if buffer is not None:
                    self._free.append(buffer)
                self._pending -= 1
                self._cond.notify_all()

    def _write_chunk(self, t0, data) -> None:
        """Write ``data[name]`` (``(n, N, width)`` each) to rows ``t0 : t0 + n``; I/O thread."""
        for name, block in data.items():
            self._arrays[name][t0: t0 + len(block)] = block


def _check_replaceable(path) -> None:
    """FileExistsError unless ``path`` is absent, an empty directory or a Recorder's store: what
    ``overwrite=True`` may delete."""
    if not isinstance(path, (str, os.PathLike)) or "://" in os.fspath(path):
        raise ValueError(f"overwrite=True needs a local directory path, got {path!r}")
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory; overwrite=True replaces "
                              f"only a store written by fa_gpu.Recorder")
    if not os.listdir(path):
        return
    try:
        with open(os.path.join(path, "zarr.json"), "rb") as f:
            meta = json.load(f)
        ours = meta["node_type"] == "group" and meta["attributes"]["format"] == STORE_FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        ours = False
    if not ours:
        raise FileExistsError(f"{path} is not a store written by fa_gpu.Recorder (no format="
                              f"{STORE_FORMAT!r} attribute); overwrite=True replaces only those")


def read_store(path) -> dict:
    """Read a recorder store, truncated to the steps known to be completely written.

    Returns ``{"actions": (T, N, F) int64, "obs": (T, N, M) int64, "qs_{f}": (T, N, S_f) float
    (with beliefs), "steps_written": T, "attrs": dict}`` with NumPy arrays. Safe on a store whose
    writer crashed or is still running.
    """
    group = zarr.open_group(path, mode="r", zarr_format=3)
    # Attributes first: arrays are resized before their rows are written, so every array
    # opened afterwards has at least steps_written rows.
    attrs = group.attrs.asdict()
    t = int(attrs["steps_written"])
    names = ["actions", "obs"]
    if attrs.get("record_beliefs"):
        names += [f"qs_{f}" for f in range(attrs["num_factors"])]
    out = {name: group[name][:t] for name in names}
    out.update(steps_written=t, attrs=attrs)
    return out


class ShardedStore:
    """A :class:`Recorder`-layout store written by several processes, each its own agents.

    For :class:`fa_gpu.distributed.ShardedEngine`: the driver makes the store
    (:meth:`create`: the group, its attributes and empty ``actions`` / ``obs`` arrays, as a
    Recorder would, without beliefs) with ``chunk_agents`` agents per chunk; every shard, whose
    agent range starts on a multiple of ``chunk_agents``, opens it by path and writes its rows
    (:meth:`write`), so no two writers ever touch one chunk. Only the driver resizes
    (:meth:`resize`, before any shard writes the new rows) and moves ``steps_written``
    (:meth:`mark_written`, once every shard has written those steps), so :func:`read_store`
    reads it like any Recorder store, also while it is written.
    """

    def __init__(self, path):
        """Open the store a :meth:`create` made (a shard, or the driver again)."""
        self.path = os.fspath(path)
        self._group = zarr.open_group(self.path, mode="r+", zarr_format=3)
        attrs = self._group.attrs
        if attrs.get("format") != STORE_FORMAT or attrs.get("record_beliefs"):
            raise ValueError(f"{self.path} is not a fa_gpu trajectory store without beliefs")
        self._arrays = {name: self._group[name] for name in ("actions", "obs")}

    @classmethod
    def create(cls, path, n_agents, chunk_agents, *, num_modalities, num_factors, num_states=None,
               chunk_steps=64, dtype="float32", overwrite=False, attrs=None) -> "ShardedStore":
        """Make the store: ``actions`` ``(0, N, F)`` and ``obs`` ``(0, N, M)`` int64 in chunks of
        ``(chunk_steps, chunk_agents, width)``, a Recorder's attributes (``record_beliefs``
        false, ``dtype`` and ``num_states`` for the record). ``overwrite`` as for Recorder."""
        n = _positive("n_agents", n_agents)
        chunk_agents = _positive("chunk_agents", chunk_agents)
        # A Recorder with no writer threads makes the group and attributes exactly as usual.
        rec = Recorder(path, n, num_modalities=num_modalities, num_factors=num_factors,
                       num_states=num_states, chunk_steps=chunk_steps, dtype=dtype,
                       overwrite=overwrite, attrs=attrs, io_threads=1, max_pending=1)
        rec._pool.shutdown(wait=True)
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        for name, width, axis in (("actions", num_factors, "factor"), ("obs", num_modalities, "modality")):
            group.create_array(name, shape=(0, n, width), chunks=(chunk_steps, min(chunk_agents, n), width),
                               dtype=np.int64, dimension_names=("step", "agent", axis), overwrite=True)
        return cls(path)

    @property
    def steps_written(self) -> int:
        return int(self._group.attrs["steps_written"])

    @property
    def made_for(self) -> dict:
        """As :attr:`Recorder.made_for`."""
        attrs = self._group.attrs
        return {k: attrs[k] for k in ("n_agents", "num_modalities", "num_factors", "num_states",
                                      "record_beliefs")}

    def resize(self, steps: int) -> None:
        """Driver: room for ``steps`` rows (grows only; before shards write them)."""
        for arr in self._arrays.values():
            if arr.shape[0] < steps:
                arr.resize((steps,) + arr.shape[1:])

    def write(self, t0: int, lo: int, actions: np.ndarray, obs: np.ndarray) -> None:
        """Shard: rows ``t0 : t0 + len(actions)`` of agents ``lo : lo + actions.shape[1]``
        (``actions`` ``(T, n, F)``, ``obs`` ``(T, n, M)`` int)."""
        hi = lo + actions.shape[1]
        self._arrays["actions"][t0: t0 + len(actions), lo:hi] = actions
        self._arrays["obs"][t0: t0 + len(obs), lo:hi] = obs

    def mark_written(self, steps: int) -> None:
        """Driver: every shard has written rows ``0 .. steps - 1``."""
        self._group.update_attributes({"steps_written": int(steps)})

    def close(self) -> None:
        """Driver: mark the store ``complete``."""
        self._group.update_attributes({"complete": True})

    def __enter__(self) -> "ShardedStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Mark the store complete, unless the block raised (the run did not finish)."""
        if exc_type is None:
            self.close()
