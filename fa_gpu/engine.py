"""`Engine`: N agents sharing one generative model, stepped together on one backend."""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import threading

import numpy as np

from . import backends, devices, layout, schema
from .backends.cuda import PATHS as CUDA_PATHS
from .model import GenerativeModel, _tol, agent_indices, check_actions, float_dtype, positive_int
from .state import Config

_ALGOS = ("fpi", "mmp", "vmp")
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
    """A scalar or an ``(n,)`` array -> 0-d or ``(n,)`` array of ``dtype``, finite and >= 0 in
    ``dtype`` (a precision, an action precision or a learning rate below 0 turns the model's
    meaning around; 1e39 is inf in float32). A scalar stays 0-d: it is broadcast into the
    engine's buffer, never materialized N times here."""
    if isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) == bool:
        raise TypeError(f"{name} must be a number or an array of {n} numbers, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of {n} numbers, got {value!r}") from None
    if arr.shape not in ((), (n,)):
        raise ValueError(f"{name} must be a scalar or have shape ({n},) (one per agent); got {arr.shape}")
    with np.errstate(over="ignore"):  # an overflow is reported below, naming the agent
        out = arr.astype(dtype)
    for bad, rule in ((~np.isfinite(out), "be finite"), (out < 0, "be >= 0")):
        if bad.any():
            i = int(np.argmax(bad.reshape(-1)))
            got = arr.reshape(-1)[i]
            why = f" (it overflows to inf in {np.dtype(dtype)})" if np.isfinite(got) and rule == "be finite" else ""
            raise ValueError(f"{name} must {rule}; " + (f"agent {i} has " if arr.ndim else "got ")
                             + f"{got}{why}")
    return out


def check_world(env, model) -> None:
    """ValueError unless ``env`` declares (as every :mod:`fa_gpu.envs` world does) the
    ``num_obs`` and ``num_controls`` of ``model`` (a GenerativeModel or an engine's Config); an
    environment that declares neither is not checked."""
    for attr in ("num_obs", "num_controls"):
        theirs = getattr(env, attr, None)
        if theirs is not None and [int(x) for x in theirs] != [int(x) for x in getattr(model, attr)]:
            raise ValueError(f"{type(env).__name__} has {attr} {[int(x) for x in theirs]}, the "
                             f"engine's model has {attr} {[int(x) for x in getattr(model, attr)]}: "
                             "this environment is not the world this model describes")


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
    backend : {"auto", "numpy", "numba", "cuda"}
        Where the arrays live and the step runs. ``"auto"`` (the default) takes the first that
        can run of cuda > numba > numpy; :attr:`backend` names the one chosen and
        ``backend_skipped`` (dict) says why each one before it was passed over.
        ``FA_GPU_BACKEND`` overrides it. ``"numpy"`` is the readable reference.
    dtype : {"float32", "float64"}
        Floating type of beliefs and parameters.
    seed : int
        Key of the counter-based generator used for stochastic action selection.
    gamma, alpha : float or ``(N,)`` array
        Policy precision and action precision (per agent when an array).
    inference_algo : {"fpi", "mmp", "vmp"}
        State inference: fixed-point iteration on the current step (pymdp's default), or
        marginal / variational message passing over a window of the last ``inference_horizon``
        observations and the actions between them, from the prior D at the window's start
        (pymdp's sequence methods; ``prior`` is D). Policies are evaluated from the newest
        step's posterior (``qs``); ``qs_window`` holds the whole window.
    inference_horizon : int, optional
        Steps in the window of mmp/vmp (required for them: the window lives in fixed buffers;
        pymdp's None keeps the whole history). Ignored by fpi.
    num_iter : int
        FPI sweeps when there are several factors; mmp/vmp sweeps over the window.
    categorical_obs : bool
        Observations are distributions: ``infer_states`` / ``step`` take a list of M arrays
        ``(N, O_m)`` whose rows sum to 1 (pymdp's ``categorical_obs``); ``obs`` then holds each
        modality's most probable outcome.
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
    agent_offset : int
        Global index of this engine's agent 0 when it holds a slice of a larger population (a
        shard): random draws are keyed by (seed, agent_offset + n, step, draw), so the slices of
        a population draw what one engine of all its agents would.

    Per-agent state is readable as host copies: ``qs``, ``prior`` (lists of ``(N, S_f)``),
    ``q_pi``, ``neg_efe`` ``(N, P)``, ``actions`` ``(N, F)`` int64, ``t`` ``(N,)`` int64,
    ``qs_window`` (list of ``(N, T, S_f)``), ``vfe`` ``(N,)``.

    Backends: mmp, vmp and categorical observations run in the fused kernels' window sweep
    (``kernels.window``, which also computes ``vfe``): numba's CPU kernel, and cuda's fused
    kernel (one thread per agent; its batched path runs the reference on CuPy). The fused fpi
    step from index observations does not compute the free energy (``vfe`` is NaN after it;
    ``infer_states`` alone computes it on every backend).
    """

    @classmethod
    def from_pymdp(cls, agent, n_agents: int | None = None, backend: str = "auto", dtype=None,
                   **overrides) -> "Engine":
        """An engine with a pymdp 1.0 ``Agent``'s model and options, so it gives that agent's
        numbers.

        Carried over: the arrays (:meth:`GenerativeModel.from_pymdp`: arrays equal across pymdp's
        batch are shared, others per-agent), ``gamma``, ``alpha`` (per-agent when they differ),
        ``num_iter``, ``inference_algo``, ``inference_horizon``, ``categorical_obs``,
        ``use_utility``, ``use_states_info_gain``, ``use_param_info_gain``,
        ``action_selection``, ``sampling_mode``, ``learn_A``, ``learn_B``; ``n_agents`` defaults
        to ``agent.batch_size`` and ``dtype`` to the agent's float dtype. ``overrides`` are any
        other :class:`Engine` arguments (``seed``, ``lr_pA``, ``lr_pB``: pymdp takes learning
        rates per ``infer_parameters`` call, default 1.0) and win over the agent's. Options fa_gpu
        cannot honour (``use_inductive``, ``learn_C``, ``learn_D``, ``learn_E``,
        ``learning_mode`` other than ``"online"``, ``B_action_dependencies``, ``preprocess_fn``,
        an ``inference_algo`` other than fpi, mmp, vmp) raise ``ValueError`` naming each (see
        :mod:`fa_gpu.interop`).
        """
        from . import interop

        opts = interop.engine_options(agent, n_agents)
        if dtype is not None:
            opts["dtype"] = dtype
        opts.update(overrides)
        n = opts.pop("n_agents")
        return cls(GenerativeModel.from_pymdp(agent), n, backend=backend, **opts)

    def __init__(self, model: GenerativeModel, n_agents: int, backend: str = "auto",
                 dtype="float32", seed: int = 0, gamma=1.0, alpha=1.0, inference_algo: str = "fpi",
                 num_iter: int = 16, use_utility: bool = True, use_states_info_gain: bool = True,
                 use_param_info_gain: bool = False, action_selection: str = "deterministic",
                 sampling_mode: str = "full", learn_A: bool = False, learn_B: bool = False,
                 learn_D: bool = False, lr_pA=1.0, lr_pB=1.0, lr_pD=1.0, *,
                 num_threads: int | None = None, device: int | None = None,
                 cuda_path: str = "auto", agent_offset: int = 0, inference_horizon: int | None = None,
                 categorical_obs: bool = False):
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a fa_gpu.GenerativeModel, got {type(model).__name__}")
        n = positive_int(n_agents, "n_agents")
        if model.batch_size is not None and model.batch_size != n:
            raise ValueError(f"the model has per-agent arrays for {model.batch_size} agents, "
                             f"but n_agents={n}")
        dt = float_dtype(dtype)
        model.validate(dt)  # the rules again in the precision the buffers will hold
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        if (isinstance(agent_offset, bool) or not isinstance(agent_offset, (int, np.integer))
                or not 0 <= agent_offset <= 2**62 - n):
            raise ValueError(f"agent_offset must be an integer in [0, 2**62 - n_agents], got {agent_offset!r}")
        _choice(inference_algo, "inference_algo", _ALGOS)
        _choice(action_selection, "action_selection", _SELECTIONS)
        _choice(sampling_mode, "sampling_mode", _MODES)
        _choice(cuda_path, "cuda_path", CUDA_PATHS)
        positive_int(num_iter, "num_iter")
        if inference_horizon is not None and (isinstance(inference_horizon, (bool, np.bool_)) or not isinstance(
                inference_horizon, (int, np.integer)) or inference_horizon < 1):
            raise ValueError(f"inference_horizon must be None or a positive integer, got {inference_horizon!r}")
        if inference_algo != "fpi" and inference_horizon is None:
            raise ValueError(f"inference_algo={inference_algo!r} needs an inference_horizon (the window "
                             "of past steps lives in fixed buffers; pymdp's None keeps the whole history)")
        if not isinstance(categorical_obs, (bool, np.bool_)):
            raise TypeError(f"categorical_obs must be a bool, got {categorical_obs!r}")
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
            has_pD=model.pD is not None, agent_offset=int(agent_offset),
            inference_horizon=None if inference_algo == "fpi" or inference_horizon is None else int(inference_horizon),
            categorical_obs=bool(categorical_obs))
        rates = {k: _per_agent_scalar(v, k, n, dt) for k, v in
                 (("gamma", gamma), ("alpha", alpha), ("lr_pA", lr_pA), ("lr_pB", lr_pB), ("lr_pD", lr_pD))}
        self._backend, self.backend_skipped = backends.resolve(backend, num_threads=num_threads,
                                                               device=device, cuda_path=cuda_path)
        cfg, per = self.config, self._per_agent
        self.layout = layout.build_layout(model, B_onehot_ok=not learn_B, A_plans_ok=not per["A"],
                                          itemsize=cfg.dtype.itemsize,
                                          window=cfg.window if cfg.sequence or cfg.categorical_obs else 0,
                                          lane_matrices=self._backend.lane_matrices)
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
    def _check_obs(self, obs, n: int | None = None):
        """Index observations ``(n, M)`` int, or with ``categorical_obs`` the list of M
        distributions ``(n, O_m)`` in the engine's dtype. Device arrays (a CuPy world's) are
        checked on a host copy (``devices.to_host``)."""
        if self.config.categorical_obs:
            return self._check_obs_dist(obs, self.config.n_agents if n is None else n)
        cfg = self.config
        n, M = cfg.n_agents if n is None else n, cfg.num_modalities
        if type(obs) is np.ndarray and obs.shape == (n, M) and obs.dtype.kind in "iu":
            arr = obs  # the common case, kept to a few microseconds for small N
        elif isinstance(obs, (list, tuple)):
            cols = [devices.to_host(o) for o in obs]
            layouts = (f"obs must be an ({n}, {M}) integer array (n_agents, num_modalities) or a "
                       f"list of {M} integer arrays of shape ({n},) (one per modality)")
            if len(cols) != M:
                raise ValueError(f"{layouts}; got a list of {len(cols)} entries")
            for m, c in enumerate(cols):
                if c.shape != (n,):
                    raise ValueError(f"obs[{m}] must have shape ({n},) (one outcome per agent); got "
                                     f"{c.shape}. {layouts}")
            arr = np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=np.int64)
        else:
            arr = devices.to_host(obs)
            if arr.shape != (n, M):
                raise ValueError(f"obs must have shape (n_agents, num_modalities) = ({n}, {M}); got "
                                 f"{arr.shape} (or pass a list of {M} arrays of shape ({n},))")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"obs must be integer outcome indices, got dtype {arr.dtype}")
        if not self._obs_in_range(arr):
            bad = (arr < 0) | (arr >= self._obs_hi)
            a, m = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"obs for agent {a}, modality {m} is {int(arr[a, m])}, outside "
                             f"[0, {cfg.num_obs[m]})")
        return arr

    def _check_obs_dist(self, obs, n: int) -> list:
        cfg, dt = self.config, self.config.dtype
        if not isinstance(obs, (list, tuple)) or len(obs) != cfg.num_modalities:
            raise ValueError(f"obs must be a list of {cfg.num_modalities} arrays (n_agents, num_obs[m]) "
                             "of probabilities (categorical_obs=True)")
        out = []
        for m, o in enumerate(obs):
            a = devices.to_host(o)
            if a.dtype.kind not in "fiu":
                raise TypeError(f"obs[{m}] must hold real probabilities, got dtype {a.dtype}")
            a = a.astype(dt)
            if a.shape != (n, cfg.num_obs[m]):
                raise ValueError(f"obs[{m}] must have shape ({n}, {cfg.num_obs[m]}) (a distribution "
                                 f"over the outcomes per agent); got {a.shape}")
            bad = ~np.isfinite(a) | (a < 0)
            if bad.any():
                i, j = (int(x) for x in np.argwhere(bad)[0])
                raise ValueError(f"obs[{m}] must be finite and >= 0; agent {i}, outcome {j} is {a[i, j]}")
            sums = a.sum(axis=1, dtype=np.float64)
            off = np.abs(sums - 1.0) > _tol(dt)
            if off.any():
                i = int(np.argmax(off))
                raise ValueError(f"obs[{m}] rows must sum to 1; agent {i}'s sums to {sums[i]}")
            out.append(a)
        return out

    def _put_obs(self, obs, lo: int, hi: int) -> None:
        """Write checked observations of agents ``lo..hi-1`` into the buffers: indices into
        ``obs``; distributions into the newest slot of ``obs_window`` and their first most
        probable outcome into ``obs``."""
        b, be = self._buffers, self._backend
        if not self.config.categorical_obs:
            b.obs[lo:hi] = be.asarray(obs, dtype=np.int64) if be.xp is not np else obs
            return
        for w, o in zip(b.obs_window, obs):
            w[lo:hi, -1] = be.asarray(o)
        b.obs[lo:hi] = be.asarray(np.stack([o.argmax(axis=1) for o in obs], axis=1), dtype=np.int64)

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
            self._put_obs(obs, 0, self.config.n_agents)
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
                    self._put_obs(obs, 0, self.config.n_agents)
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
                        self._put_obs(obs, lo, hi)
                        launch(*args)
                    pending = PendingStep(self, self._backend.synchronize, lo, hi)
                elif hi - lo < _INLINE_BELOW and agents is None:  # a thread hop costs more than the step
                    self._put_obs(obs, lo, hi)
                    self._backend.step(*args)
                    pending = PendingStep(self, lambda: None, lo, hi)
                else:
                    self._put_obs(obs, lo, hi)
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
        """The simulation loop: see :func:`fa_gpu.runtime.loop.run` for the options.

        Before the first step, an ``env`` that declares ``num_obs`` (M outcome counts) and
        ``num_controls`` (F action counts), as every :mod:`fa_gpu.envs` world does, must declare
        the model's; a ``recorder`` must be made for this engine's ``n_agents``,
        ``num_modalities`` and ``num_factors`` (and ``num_states`` when it records beliefs).
        A mismatch is a ValueError naming both sides."""
        self._check_run(env, kwargs.get("recorder"))
        from .runtime.loop import run
        return run(self, env, steps, **kwargs)

    def _check_run(self, env, recorder) -> None:
        cfg = self.config
        check_world(env, cfg)
        made = getattr(recorder, "made_for", None)
        if made is None:
            return
        for key, mine in (("n_agents", cfg.n_agents), ("num_modalities", cfg.num_modalities),
                          ("num_factors", cfg.num_factors)):
            if made[key] != mine:
                raise ValueError(f"the recorder was made for {key}={made[key]}, this engine has "
                                 f"{key}={mine}")
        if made["record_beliefs"] and list(made["num_states"]) != list(cfg.num_states):
            raise ValueError(f"the recorder was made for beliefs over num_states="
                             f"{list(made['num_states'])}, this engine has num_states="
                             f"{list(cfg.num_states)}")

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
        ``agents`` (int indices or a boolean mask of length N; an empty list resets no one and
        changes nothing). Learned parameters are kept."""
        self.wait()
        cfg, b = self.config, self._buffers
        if agents is None:
            idx = slice(None)
        else:
            a = agent_indices(agents, cfg.n_agents)
            if a.size == 0:
                return
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
            b.vfe[idx] = 0
            if b.obs_window is not None:
                for w in b.obs_window:
                    w[idx] = 0
            if b.qs_window is not None:  # slots before a window's start hold D
                b.act_window[idx] = -1
                for f, w in enumerate(b.qs_window):
                    d = b.D[f][idx] if b.per_agent["D"] else b.D[f]
                    w[idx] = d[..., None, :]

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
    vfe = property(lambda self: self._host(self._buffers.vfe),
                   doc="Variational free energy of the last posterior (pymdp's calc_vfe), (N,).")

    @property
    def qs_window(self) -> list:
        """Posterior over the window, F x ``(N, T, S_f)``, newest step last (T: mmp/vmp the
        ``inference_horizon``, steps before an agent's first since reset hold D; fpi: 1, ``qs``)."""
        if self._buffers.qs_window is None:
            return [q[:, None] for q in self.qs]
        return [self._host(x) for x in self._buffers.qs_window]
    gamma = property(lambda self: self._host(self._buffers.gamma), doc="Policy precision per agent, (N,).")
    alpha = property(lambda self: self._host(self._buffers.alpha), doc="Action precision per agent, (N,).")
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

    def recorder(self, path, beliefs: bool = False, **options):
        """A :class:`fa_gpu.Recorder` at ``path`` sized for this engine: N agents, its
        modalities, factors and state counts, beliefs ``qs`` in its dtype when ``beliefs``.
        ``options`` go to the Recorder (``chunk_steps``, ``max_pending``, ``io_threads``,
        ``overwrite``, ``attrs``). Pass it to :meth:`run` as ``recorder=`` and close it (or use
        it as a context manager)."""
        from .runtime.recorder import Recorder
        cfg = self.config
        return Recorder(path, cfg.n_agents, num_modalities=cfg.num_modalities,
                        num_factors=cfg.num_factors, num_states=list(cfg.num_states),
                        record_beliefs=beliefs, dtype=cfg.dtype, **options)
