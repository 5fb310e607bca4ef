"""`Engine`: N agents sharing one generative model, stepped together on one backend."""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import threading

import numpy as np

from . import backends, layout, schema
from .backends.cuda import PATHS as CUDA_PATHS
from .model import GenerativeModel, check_actions, float_dtype
from .state import Config

_ALGOS = ("fpi",)
_SELECTIONS = ("deterministic", "stochastic")
_MODES = ("full", "marginal")
_INLINE_BELOW = 1024  # step_async runs smaller steps inline on CPU backends


@functools.lru_cache(maxsize=1)
def _step_executor():
    """One worker thread for asynchronous CPU steps (the kernel itself is multi-threaded)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fa_gpu-step")


class PendingStep:
    """A step started by :meth:`Engine.step_async`."""

    def __init__(self, engine: "Engine", wait, lo: int, hi: int, error=None):
        """``wait()`` blocks until the step has ended (raising its error); ``error()``, when
        given, returns the error the step itself raised once it has ended (else None)."""
        self._engine, self._wait, self._error, self._done = engine, wait, error, False
        self._lo, self._hi = lo, hi
        self._lock = threading.Lock()  # several threads may wait; the epoch moves once
        self.thread = threading.get_ident()  # the thread that started the step

    def done(self) -> bool:
        return self._done

    def result(self) -> np.ndarray:
        """Wait for the step; its agents' actions ``(hi - lo, F)`` int64 on the host. Safe from
        any thread. A KeyboardInterrupt that arrives meanwhile is delivered once the step has
        finished (the worker thread or the device goes on writing whatever this thread does)."""
        if not self._done:
            with self._lock:
                if not self._done:
                    self._finish()
        self._engine._check_usable()
        return self._engine._backend.to_host(self._engine._buffers.actions[self._lo:self._hi])

    def _finish(self) -> None:
        eng, interrupt = self._engine, None
        try:
            while True:
                try:
                    self._wait()
                    break
                except KeyboardInterrupt as exc:
                    if self._error is not None and self._error() is exc:
                        raise  # the step's own error, not an interrupt of this thread
                    interrupt = exc  # keep waiting: marking the step done now would tear the state
        except BaseException as exc:
            eng._tear(exc)  # the step failed halfway
            raise
        finally:
            eng._epoch += 1
            if eng._pending is self:
                eng._pending = None
            self._done = True  # last: a thread that sees it may start the next step at once
        if interrupt is not None:
            raise interrupt


def _per_agent_scalar(value, name: str, n: int, dtype) -> np.ndarray:
    """A scalar or an ``(n,)`` array -> finite 0-d or ``(n,)`` array of ``dtype`` (a scalar stays
    0-d: it is broadcast into the engine's buffer, never materialized N times here)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of {n} numbers, got {value!r}") from None
    if arr.shape not in ((), (n,)):
        raise ValueError(f"{name} must be a scalar or have shape ({n},) (one per agent); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        flat = arr.reshape(-1)
        bad = int(np.argmin(np.isfinite(flat)))
        raise ValueError(f"{name} must be finite; " + (f"agent {bad} has " if arr.ndim else "got ")
                         + f"{flat[bad]}")
    return arr.astype(dtype)


def _choice(value, name, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


class Engine:
    """Many active-inference agents on contiguous arrays, with pymdp 1.0.4's numbers.

    Parameters
    ----------
    model : GenerativeModel
        Shared by all agents (arrays without an agent axis are stored once).
    n_agents : int
        N, the number of agents.
    backend : {"numpy", "numba", "cuda", "auto"}
        Where the arrays live and the step runs. ``FA_GPU_BACKEND`` overrides it.
    dtype : {"float32", "float64"}
        Floating type of beliefs and parameters.
    seed : int
        Key of the counter-based generator used for stochastic action selection.
    gamma, alpha : float or ``(N,)`` array
        Policy precision and action precision (per agent when an array).
    inference_algo : "fpi"
        State inference by fixed-point iteration (pymdp's default).
    num_iter : int
        FPI sweeps when there are several factors.
    use_utility, use_states_info_gain, use_param_info_gain : bool
        Terms of the negative expected free energy.
    action_selection : {"deterministic", "stochastic"}
    sampling_mode : {"full", "marginal"}
        Select a whole policy, or each factor's action from its marginal.
    learn_A, learn_B, learn_D : bool
        Dirichlet learning of A, B, D (needs ``pA``/``pB``/``pD`` in the model). A learned array
        becomes per-agent.
    lr_pA, lr_pB, lr_pD : float or ``(N,)`` array
        Learning rates.
    num_threads : int, optional
        numba backend: threads (default: usable physical cores, or ``FA_GPU_NUM_THREADS``).
    device : int, optional
        cuda backend: CUDA device index (default: the one with the most free memory).
    cuda_path : {"auto", "fused", "batched"}
        cuda backend: one fused kernel per step, or the reference on CuPy with the shared model's
        contractions as matrix products (cuBLAS) for large models. ``auto`` picks ``batched``
        for a shared model (A and B without an agent axis) with a factor of 128+ states.
        :attr:`step_path` tells which runs.

    Per-agent state is readable as host copies: ``qs``, ``prior`` (lists of ``(N, S_f)``),
    ``q_pi``, ``neg_efe`` ``(N, P)``, ``actions`` ``(N, F)`` int64, ``t`` ``(N,)`` int64.
    """

    def __init__(self, model: GenerativeModel, n_agents: int, backend: str = "numpy",
                 dtype="float32", seed: int = 0, gamma=1.0, alpha=1.0, inference_algo: str = "fpi",
                 num_iter: int = 16, use_utility: bool = True, use_states_info_gain: bool = True,
                 use_param_info_gain: bool = False, action_selection: str = "deterministic",
                 sampling_mode: str = "full", learn_A: bool = False, learn_B: bool = False,
                 learn_D: bool = False, lr_pA=1.0, lr_pB=1.0, lr_pD=1.0, *,
                 num_threads: int | None = None, device: int | None = None,
                 cuda_path: str = "auto"):
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a fa_gpu.GenerativeModel, got {type(model).__name__}")
        if isinstance(n_agents, bool) or not isinstance(n_agents, (int, np.integer)) or n_agents < 1:
            raise ValueError(f"n_agents must be a positive integer, got {n_agents!r}")
        n = int(n_agents)
        if model.batch_size is not None and model.batch_size != n:
            raise ValueError(f"the model has per-agent arrays for {model.batch_size} agents, "
                             f"but n_agents={n}")
        dt = float_dtype(dtype)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        _choice(inference_algo, "inference_algo", _ALGOS)
        _choice(action_selection, "action_selection", _SELECTIONS)
        _choice(sampling_mode, "sampling_mode", _MODES)
        _choice(cuda_path, "cuda_path", CUDA_PATHS)
        if isinstance(num_iter, bool) or not isinstance(num_iter, (int, np.integer)) or num_iter < 1:
            raise ValueError(f"num_iter must be a positive integer, got {num_iter!r}")
        for flag, counts in (("learn_A", "pA"), ("learn_B", "pB"), ("learn_D", "pD")):
            if locals()[flag] and getattr(model, counts) is None:
                raise ValueError(f"{flag}=True needs Dirichlet counts {counts} in the model")
        if use_param_info_gain and model.pA is None and model.pB is None:
            raise ValueError("use_param_info_gain=True needs pA or pB in the model")

        self.model = model
        self.config = Config(
            n_agents=n, dtype=dt, seed=int(seed), num_obs=tuple(model.num_obs),
            num_states=tuple(model.num_states), num_controls=tuple(model.num_controls),
            A_dependencies=tuple(tuple(d) for d in model.A_dependencies),
            B_dependencies=tuple(tuple(d) for d in model.B_dependencies),
            policies=model.policies.copy(), inference_algo=inference_algo, num_iter=int(num_iter),
            use_utility=bool(use_utility), use_states_info_gain=bool(use_states_info_gain),
            use_param_info_gain=bool(use_param_info_gain), action_selection=action_selection,
            sampling_mode=sampling_mode, learn_A=bool(learn_A), learn_B=bool(learn_B),
            learn_D=bool(learn_D), has_pA=model.pA is not None, has_pB=model.pB is not None,
            has_pD=model.pD is not None)
        rates = {k: _per_agent_scalar(v, k, n, dt) for k, v in
                 (("gamma", gamma), ("alpha", alpha), ("lr_pA", lr_pA), ("lr_pB", lr_pB), ("lr_pD", lr_pD))}
        self._backend, self.backend_skipped = backends.resolve(backend, num_threads=num_threads,
                                                               device=device, cuda_path=cuda_path)
        self.layout = layout.build_layout(model, B_onehot_ok=not learn_B)
        per = self._per_agent
        self._backend.prepare(self.config, self.layout, shared_model=not (per["A"] or per["B"]))
        self._spec = schema.shapes(self.config, self.layout, per, self._backend.work_rows(n),
                                   self._backend.pads_work, self._backend.scratch_size(self.layout))
        self._backend.check_memory(self.estimate_bytes())
        with self._backend.on_stream():  # allocate on the engine's device (cuda)
            packed = schema.allocate(self._backend, self._spec, self.config, self.layout)
            self._buffers = schema.Bound(packed, self._spec, self.config, self.layout)
            self._fill(model, rates)
        # bumped before and after every write of the per-agent state (a step, a single method,
        # reset): odd = being written. See snapshot.
        self._epoch = 0
        self._pending = None  # the PendingStep of an unfinished step_async
        # Held while a thread starts a step or writes the state: steps from several threads
        # run one after the other, never interleaved (a step_async's kernel runs after release,
        # and the next writer waits for it first).
        self._lock = threading.Lock()
        self._torn = None  # why the state is half-written (then every use raises), or None
        self._obs_hi = np.asarray(self.config.num_obs, dtype=np.int64)
        self._inline = (self._backend.xp is np and not hasattr(self._backend, "step_async")
                        and self.config.n_agents < _INLINE_BELOW)
        self.reset()
        self._epoch = 0  # a new engine: no state has been written that a reader could have seen

    # -- construction ----------------------------------------------------------------------
    @functools.cached_property
    def _per_agent(self) -> dict:
        """Which parameter groups ("A", "B", "C", "D", "E") get one row per agent: given so, or
        learned (then their counts, and they, become per-agent)."""
        m, cfg = self.model, self.config
        M, F = cfg.num_modalities, cfg.num_factors
        shared = lambda name, k: all(m.is_shared(f"{name}[{i}]") for i in range(k))
        per = {"A": not shared("A", M) or cfg.learn_A, "B": not shared("B", F) or cfg.learn_B,
               "C": not shared("C", M), "D": not shared("D", F) or cfg.learn_D,
               "E": not m.is_shared("E")}
        for group, counts, k in (("A", "pA", M), ("B", "pB", F), ("D", "pD", F)):
            if getattr(m, counts) is not None:
                per[group] = per[group] or not shared(counts, k)
        return per

    def _fill(self, model, rates: dict) -> None:
        """Copy the model and the per-agent rates into the freshly allocated buffers (through
        their pymdp-layout views), then derive log A, H[A] and the Dirichlet weights."""
        b, be, dt = self._buffers, self._backend, self.config.dtype
        for name in ("A", "B", "C", "D", "pA", "pB", "pD"):
            for view, arr in zip(getattr(b, name) or (), getattr(model, name) or ()):
                view[...] = be.asarray(np.asarray(arr, dtype=dt))
        b.E[...] = be.asarray(np.asarray(model.E, dtype=dt))
        for name, value in rates.items():
            getattr(b, name)[...] = be.asarray(value)
        be.refresh_A(b, self.config)
        be.refresh_B(b, self.config)

    def estimate_bytes(self) -> int:
        """Bytes this engine allocates on its backend: every buffer of :mod:`fa_gpu.schema`
        (model, counts, state, layout tables, the fused step's scratch) plus the largest
        temporaries a step of its step path allocates (numpy, cuda batched: the reference's).
        Checked against the backend's free memory before anything is allocated."""
        return self._spec.nbytes() + self._backend.temp_bytes(self.config, self.layout)

    # -- input checks ----------------------------------------------------------------------
    def _check_obs(self, obs, n: int | None = None) -> np.ndarray:
        cfg = self.config
        n, M = cfg.n_agents if n is None else n, cfg.num_modalities
        if type(obs) is np.ndarray and obs.shape == (n, M) and obs.dtype.kind in "iu":
            arr = obs  # the common case, kept to a few microseconds for small N
        elif isinstance(obs, (list, tuple)):
            cols = [np.asarray(o) for o in obs]
            if len(cols) != M:
                raise ValueError(f"obs must hold one array per modality ({M}), got {len(cols)}")
            for m, c in enumerate(cols):
                if c.shape != (n,):
                    raise ValueError(f"obs[{m}] must have shape ({n},) (one outcome per agent); got {c.shape}")
            arr = np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=np.int64)
        else:
            arr = np.asarray(obs)
            if arr.shape != (n, M):
                raise ValueError(f"obs must have shape (n_agents, num_modalities) = ({n}, {M}); got {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"obs must be integer outcome indices, got dtype {arr.dtype}")
        if not self._obs_in_range(arr):
            bad = (arr < 0) | (arr >= self._obs_hi)
            a, m = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"obs for agent {a}, modality {m} is {int(arr[a, m])}, outside "
                             f"[0, {cfg.num_obs[m]})")
        return arr

    def _obs_in_range(self, arr) -> bool:
        if arr.size <= 64:  # NumPy reductions cost microseconds each on tiny arrays
            hi = self.config.num_obs
            return all(0 <= v < h for row in arr.tolist() for v, h in zip(row, hi))
        return bool(arr.min() >= 0 and (arr < self._obs_hi).all())

    # -- the step --------------------------------------------------------------------------
    def infer_states(self, obs) -> list:
        """Posterior over states given outcomes ``obs`` (int ``(N, M)`` or M arrays ``(N,)``)
        and the current empirical prior. Returns ``qs``: list of ``(N, S_f)`` host arrays."""
        self.wait()
        obs = self._check_obs(obs)
        with self._writing():
            self._buffers.obs[...] = self._backend.asarray(obs, dtype=np.int64)
            self._backend.infer_states(self._buffers, self.config)
        return self.qs

    def infer_policies(self):
        """Returns ``(q_pi, neg_efe)``, each ``(N, P)``, for the current ``qs``."""
        self.wait()
        with self._writing():
            self._backend.infer_policies(self._buffers, self.config)
        return self.q_pi, self.neg_efe

    def infer_parameters(self) -> None:
        """Dirichlet learning from the last ``obs``, ``qs`` and the previous step's beliefs and
        action (those enabled by ``learn_A``/``learn_B``/``learn_D``). ``step`` calls it."""
        self.wait()
        with self._writing():
            self._backend.infer_parameters(self._buffers, self.config)

    def sample_action(self) -> np.ndarray:
        """Actions ``(N, F)`` int64 from ``q_pi`` (uncontrolled factors get 0)."""
        self.wait()
        with self._writing():
            self._backend.sample_action(self._buffers, self.config)
        return self.actions

    def update_empirical_prior(self, actions) -> list:
        """Prior for the next step: ``B[f][..., actions[:, f]]`` applied to ``qs``. Advances ``t``.
        Returns the new prior (list of ``(N, S_f)``)."""
        self.wait()
        actions = check_actions(actions, self.config.num_controls, self.config.n_agents)
        with self._writing():
            act = self._backend.asarray(actions, dtype=np.int64)
            self._backend.update_empirical_prior(self._buffers, self.config, act)
        return self.prior

    def step(self, obs, agents=None) -> np.ndarray:
        """One full step in pymdp's order: infer_states, infer_policies, infer_parameters (when
        learning), sample_action, update_empirical_prior. Returns actions ``(N, F)`` int64.
        ``agents=(lo, hi)`` steps only that cohort (obs and actions ``(hi - lo, ...)``).

        Thread-safe: steps from several threads are serialized, each whole. An exception or
        KeyboardInterrupt that stops a step running on the calling thread midway leaves the
        engine unusable (every later use raises RuntimeError); see ``step_async`` for steps on
        the worker thread, which an interrupt waits for."""
        if agents is None and self._inline:
            # the common small-N CPU case without the async machinery: ~3 us less per step
            obs = self._check_obs(obs)
            with self._lock:
                if self._pending is not None or self._torn is not None:
                    self.wait()
                self._epoch += 1  # as _writing(), whose generator would cost ~3 us here
                try:
                    self._buffers.obs[...] = obs
                    self._backend.step(self._buffers, self.config)
                except BaseException as exc:
                    self._tear(exc)
                    raise
                finally:
                    self._epoch += 1
                return self._buffers.actions.copy()
        return self.step_async(obs, agents).result()

    def step_async(self, obs, agents=None) -> "PendingStep":
        """Start one step and return at once, so host work overlaps it; ``.result()`` waits and
        returns the actions. cuda: the kernel is queued on the engine's stream; numpy/numba: the
        step runs on a worker thread (Numba kernels release the GIL). Starting another step, or
        reading state, waits for this one first.

        ``agents=(lo, hi)``: step only agents ``lo..hi-1`` (a cohort), with obs ``(hi - lo, M)``.
        Cohorts give exactly the numbers of whole steps (draws are keyed by global agent index),
        so one cohort's host work can overlap the other cohort's kernel.
        """
        lo, hi = self._cohort(agents)
        obs = self._check_obs(obs, hi - lo)
        with self._lock:
            self.wait()
            self._epoch += 1  # odd while the state is being written (see snapshot)
            try:
                args = (self._buffers, self.config, lo, hi)
                launch = getattr(self._backend, "step_async", None)
                if launch is not None:  # cuda: queued on the engine's stream, obs copy included
                    with self._backend.on_stream():
                        self._buffers.obs[lo:hi] = self._backend.asarray(obs, dtype=np.int64)
                        launch(*args)
                    pending = PendingStep(self, self._backend.synchronize, lo, hi)
                elif hi - lo < _INLINE_BELOW and agents is None:  # a thread hop costs more than the step
                    self._buffers.obs[lo:hi] = obs
                    self._backend.step(*args)
                    pending = PendingStep(self, lambda: None, lo, hi)
                else:
                    self._buffers.obs[lo:hi] = obs
                    fut = _step_executor().submit(self._backend.step, *args)
                    pending = PendingStep(self, fut.result, lo, hi,
                                          lambda: fut.exception() if fut.done() else None)
            except BaseException as exc:
                # obs (at least) is written: the state mixes two steps (and a step just queued
                # may still be writing), so the engine is marked unusable
                self._tear(exc)
                self._epoch += 1
                raise
            self._pending = pending
        return pending

    @contextlib.contextmanager
    def _writing(self):
        """A write of the per-agent state, under the engine's lock after any step in flight:
        the epoch is odd meanwhile (see ``snapshot``), device work goes to the engine's stream,
        and it has finished when the block ends. An exception inside tears the state."""
        with self._lock:
            self.wait()
            self._epoch += 1
            try:
                with self._backend.on_stream():
                    yield
                    self._backend.synchronize()
            except BaseException as exc:
                self._tear(exc)
                raise
            finally:
                self._epoch += 1

    def _tear(self, exc: BaseException) -> None:
        self._torn = (f"this engine is unusable: a write of its state stopped halfway "
                      f"({type(exc).__name__}: {exc}); load a checkpoint or build a new engine")

    def _check_usable(self) -> None:
        """RuntimeError when an interrupted write left the state half-written."""
        if self._torn is not None:
            raise RuntimeError(self._torn)

    def _cohort(self, agents) -> tuple[int, int]:
        n = self.config.n_agents
        if agents is None:
            return 0, n
        try:
            lo, hi = (int(a) for a in agents)
        except (TypeError, ValueError):
            raise TypeError(f"agents must be None or a (lo, hi) pair of ints, got {agents!r}") from None
        if not 0 <= lo < hi <= n:
            raise ValueError(f"agents=(lo, hi) must satisfy 0 <= lo < hi <= {n}; got ({lo}, {hi})")
        return lo, hi

    def wait(self) -> None:
        """Block until a step started by :meth:`step_async` has finished (from any thread).
        RuntimeError when the engine is unusable (an interrupted write, see ``step``)."""
        self._check_usable()
        pending = self._pending
        if pending is not None:
            pending.result()

    # -- runtime: simulation loop, consistent reads, checkpoints ----------------------------
    def snapshot(self) -> dict:
        """A consistent host copy of every per-agent array for one step, safe from any thread
        while another thread steps the engine (a sequence lock: copy, and copy again if a step
        ran meanwhile; the stepping thread never waits). Keys: qs, prior (lists of (N, S_f)),
        q_pi, neg_efe (N, P), actions (N, F), obs (N, M), t (N,), and ``step_epoch``."""
        from .runtime.snapshot import take_snapshot
        return take_snapshot(self)

    def run(self, env, steps: int, **kwargs):
        """The simulation loop: see :func:`fa_gpu.runtime.loop.run` for the options."""
        from .runtime.loop import run
        return run(self, env, steps, **kwargs)

    def save(self, path) -> None:
        """Write the whole engine (model, counts, beliefs, RNG keys, step) atomically to ``path``."""
        from .runtime.checkpoint import save
        save(self, path)

    @classmethod
    def load(cls, path, backend: str | None = None, **options) -> "Engine":
        """An engine restored from :meth:`save`; it continues bit-identically. ``options``:
        ``num_threads``, ``device``, ``cuda_path`` (where it runs; not saved)."""
        from .runtime.checkpoint import load
        return load(path, backend=backend, **options)

    def reset(self, agents=None) -> None:
        """Back to the initial prior D (and ``t = 0``, no previous action) for all agents, or for
        ``agents`` (int indices or a boolean mask of length N). Learned parameters are kept."""
        self.wait()
        cfg, b = self.config, self._buffers
        if agents is None:
            idx = slice(None)
        else:
            a = np.asarray(agents)
            if a.dtype == bool:
                if a.shape != (cfg.n_agents,):
                    raise ValueError(f"a boolean agents mask must have shape ({cfg.n_agents},); got {a.shape}")
                a = np.flatnonzero(a)
            if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1:
                raise TypeError("agents must be None, a 1-D array of agent indices, or a boolean mask")
            if a.size and (a.min() < 0 or a.max() >= cfg.n_agents):
                raise ValueError(f"agents indices must be in [0, {cfg.n_agents}); got {int(a.min())}..{int(a.max())}")
            idx = self._backend.asarray(a, dtype=np.int64)
        with self._writing():
            for f in range(cfg.num_factors):
                d = b.D[f][idx] if b.per_agent["D"] else b.D[f]
                for arr in (b.prior, b.qs, b.qs_prev):
                    arr[f][idx] = d
            b.prev_actions[idx] = -1
            b.t[idx] = 0
            b.q_pi[idx] = 0
            b.neg_efe[idx] = 0

    # -- read-only views -------------------------------------------------------------------
    def _host(self, x):
        self.wait()  # other threads read with snapshot(), which never waits
        h = self._backend.to_host(x)
        h.flags.writeable = False
        return h

    @property
    def backend(self) -> str:
        """Name of the backend running this engine."""
        return self._backend.name

    @property
    def step_path(self) -> str:
        """How a step runs: ``"reference"`` (numpy), ``"fused"`` (numba, or the fused cuda
        kernel) or ``"batched"`` (cuda, matrix products; see ``cuda_path``)."""
        return self._backend.path

    @property
    def n_agents(self) -> int:
        return self.config.n_agents

    qs = property(lambda self: [self._host(x) for x in self._buffers.qs], doc="Posterior, F x (N, S_f).")
    prior = property(lambda self: [self._host(x) for x in self._buffers.prior],
                     doc="Empirical prior for the next step, F x (N, S_f).")
    q_pi = property(lambda self: self._host(self._buffers.q_pi), doc="Policy posterior (N, P).")
    neg_efe = property(lambda self: self._host(self._buffers.neg_efe), doc="Negative EFE (N, P).")
    actions = property(lambda self: self._host(self._buffers.actions), doc="Last actions (N, F) int64.")
    t = property(lambda self: self._host(self._buffers.t), doc="Steps since each agent's reset, (N,) int64.")
    A = property(lambda self: [self._host(x) for x in self._buffers.A], doc="Current A (shared or per-agent).")
    B = property(lambda self: [self._host(x) for x in self._buffers.B], doc="Current B (shared or per-agent).")
    D = property(lambda self: [self._host(x) for x in self._buffers.D], doc="Current D (shared or per-agent).")
    pA = property(lambda self: None if self._buffers.pA is None else [self._host(x) for x in self._buffers.pA])
    pB = property(lambda self: None if self._buffers.pB is None else [self._host(x) for x in self._buffers.pB])
    pD = property(lambda self: None if self._buffers.pD is None else [self._host(x) for x in self._buffers.pD])

    # zero-copy backend arrays (CuPy on cuda: __cuda_array_interface__), valid until the next step
    actions_device = property(lambda self: self._buffers.actions, doc="Last actions (N, F) int64, on the backend.")
    obs_device = property(lambda self: self._buffers.obs, doc="Last observations (N, M) int64, on the backend.")
    q_pi_device = property(lambda self: self._buffers.q_pi, doc="Policy posterior (N, P), on the backend.")
    qs_device = property(lambda self: self._buffers.packed["qs"],
                         doc="Posterior of all factors side by side, (N, sum S_f), on the backend.")

    def __repr__(self) -> str:
        return f"Engine(n_agents={self.n_agents}, backend={self.backend!r}, dtype={self.config.dtype}, {self.model!r})"
