"""`Engine`: N agents sharing one generative model, stepped together on one backend."""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import threading

import numpy as np

from . import backends, layout
from .backends import kernel_args
from .backends.cuda import PATHS as CUDA_PATHS
from .model import GenerativeModel, check_actions, float_dtype
from .state import Config, Params, State

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

    def __init__(self, engine: "Engine", wait, lo: int, hi: int):
        self._engine, self._wait, self._done = engine, wait, False
        self._lo, self._hi = lo, hi
        self._lock = threading.Lock()  # several threads may wait; the epoch moves once
        self.thread = threading.get_ident()  # the thread that started the step

    def done(self) -> bool:
        return self._done

    def result(self) -> np.ndarray:
        """Wait for the step; its agents' actions ``(hi - lo, F)`` int64 on the host. Safe from
        any thread."""
        if not self._done:
            with self._lock:
                if not self._done:
                    try:
                        self._wait()
                    finally:
                        self._done = True
                        self._engine._epoch += 1
                        self._engine._pending = None
        return self._engine._backend.to_host(self._engine._state.actions[self._lo:self._hi])


def _per_agent_scalar(value, name: str, n: int, dtype) -> np.ndarray:
    """A scalar or an ``(n,)`` array -> finite ``(n,)`` array of ``dtype``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of {n} numbers, got {value!r}") from None
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},) (one per agent); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; agent {int(np.argmin(np.isfinite(arr)))} has "
                         f"{arr[np.argmin(np.isfinite(arr))]}")
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
            learn_D=bool(learn_D), has_pA=model.pA is not None, has_pB=model.pB is not None)
        self._backend, self.backend_skipped = backends.resolve(backend, num_threads=num_threads,
                                                               device=device, cuda_path=cuda_path)
        self.layout = layout.build_layout(model, B_onehot_ok=not learn_B)
        self._backend.prepare(self.config, self.layout,
                              shared_model=not (self._per_agent["A"] or self._per_agent["B"]))
        check = getattr(self._backend, "check_memory", None)
        if check is not None:
            check(self.estimate_bytes())
        with self._backend.on_stream():  # allocate on the engine's device (cuda)
            self._params = self._build_params(model, gamma, alpha, lr_pA, lr_pB, lr_pD)
            self._state = self._build_state()
        # bumped before and after every write of the per-agent state (a step, a single method,
        # reset): odd = being written. See snapshot.
        self._epoch = 0
        self._pending = None  # the PendingStep of an unfinished step_async
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

    def _build_params(self, model, gamma, alpha, lr_pA, lr_pB, lr_pD) -> Params:
        """Packed parameter buffers (see :mod:`fa_gpu.layout`) plus pymdp-layout views."""
        cfg, be, lay = self.config, self._backend, self.layout
        n, dt, xp = cfg.n_agents, cfg.dtype, self._backend.xp
        S = cfg.num_states
        a_shapes = [(o, *[S[d] for d in deps]) for o, deps in zip(cfg.num_obs, cfg.A_dependencies)]
        h_shapes = [sh[1:] for sh in a_shapes]
        b_shapes = [(S[f], *[S[d] for d in deps], u)
                    for f, (deps, u) in enumerate(zip(cfg.B_dependencies, cfg.num_controls))]
        A_off, H_off, C_off = (lay.A_meta[:, c] for c in (layout.A_OFF, layout.H_OFF, layout.C_OFF))
        B_off, S_off = lay.B_meta[:, layout.B_OFF], lay.S_off[:-1]
        per = self._per_agent
        packed, views = {}, {}

        def put(name, group, arrays, shapes, offsets, width, action_first=False):
            packed[name], views[name] = layout.pack(xp, arrays, shapes, offsets, width, n, per[group],
                                                    dt, action_first)

        sz = lay.sizes
        put("A", "A", model.A, a_shapes, A_off, sz["A"])
        put("logA", "A", None, a_shapes, A_off, sz["A"])
        put("H_A", "A", None, h_shapes, H_off, sz["H"])
        put("C", "C", model.C, [(o,) for o in cfg.num_obs], C_off, sz["C"])
        put("B", "B", model.B, b_shapes, B_off, sz["B"], action_first=True)
        put("D", "D", model.D, [(s,) for s in S], S_off, sz["S"])
        put("E", "E", [model.E], [(cfg.num_policies,)], [0], sz["E"])
        info = cfg.use_param_info_gain
        for counts, group, shapes, offs, width, af in (("pA", "A", a_shapes, A_off, sz["A"], False),
                                                       ("pB", "B", b_shapes, B_off, sz["B"], True),
                                                       ("pD", "D", [(s,) for s in S], S_off, sz["S"], False)):
            arrays = getattr(model, counts)
            if arrays is not None:
                put(counts, group, arrays, shapes, offs, width, af)
                if info and counts != "pD":
                    put("w" + counts[1], group, None, shapes, offs, width, af)
        lr = np.stack([_per_agent_scalar(v, k, n, dt) for k, v in
                       (("lr_pA", lr_pA), ("lr_pB", lr_pB), ("lr_pD", lr_pD))], axis=1)
        packed["lr"] = be.asarray(lr, dtype=dt)  # (N, 3)
        for absent in ("pA", "pB", "pD", "wA", "wB"):  # kernels take an argument either way
            packed.setdefault(absent, xp.zeros((1, 1), dtype=dt))
        flags = {name: [per[g]] * len(views[name]) for name, g in
                 (("A", "A"), ("logA", "A"), ("H_A", "A"), ("pA", "A"), ("wA", "A"), ("C", "C"),
                  ("B", "B"), ("pB", "B"), ("wB", "B"), ("D", "D"), ("pD", "D"), ("E", "E"))
                 if name in views}
        tables = {k: be.asarray(getattr(lay, k), dtype=np.int64)
                  for k in ("A_meta", "A_deps", "B_meta", "B_deps", "B_next", "S_off", "branch")}
        tables["policies"] = be.asarray(lay.policies.reshape(cfg.num_policies, -1), dtype=np.int64)
        tables["opts"] = be.asarray(kernel_args.options(cfg), dtype=np.int64)
        p = Params(A=views["A"], B=views["B"], C=views["C"], D=views["D"], E=views["E"][0],
                   pA=views.get("pA"), pB=views.get("pB"), pD=views.get("pD"), logA=views["logA"],
                   H_A=views["H_A"], wA=views.get("wA"), wB=views.get("wB"), per_agent=flags,
                   packed=packed, tables=tables, scratch_size=lay.scratch_size,
                   gamma=be.asarray(_per_agent_scalar(gamma, "gamma", n, dt)),
                   alpha=be.asarray(_per_agent_scalar(alpha, "alpha", n, dt)),
                   lr_pA=packed["lr"][:, 0], lr_pB=packed["lr"][:, 1], lr_pD=packed["lr"][:, 2])
        be.refresh_A(p, cfg)
        be.refresh_B(p, cfg)
        return p

    def _build_state(self) -> State:
        cfg, xp, lay = self.config, self._backend.xp, self.layout
        n, dt = cfg.n_agents, cfg.dtype
        shapes, offs = [(s,) for s in cfg.num_states], lay.S_off[:-1]
        packed, views = {}, {}
        for name in ("prior", "qs", "qs_prev"):
            packed[name], views[name] = layout.pack(xp, None, shapes, offs, lay.sizes["S"], n, True, dt)
        return State(
            **views, packed=packed,
            obs=xp.zeros((n, cfg.num_modalities), dtype=np.int64),
            q_pi=xp.zeros((n, cfg.num_policies), dtype=dt),
            neg_efe=xp.zeros((n, cfg.num_policies), dtype=dt),
            actions=xp.zeros((n, cfg.num_factors), dtype=np.int64),
            prev_actions=xp.full((n, cfg.num_factors), -1, dtype=np.int64),
            t=xp.zeros(n, dtype=np.int64))

    def estimate_bytes(self) -> int:
        """Bytes this engine allocates on its backend (model, counts, state, and the step's scratch
        or, on the cuda batched path, its largest temporaries): checked against the device's
        free memory before anything is allocated."""
        cfg, lay, per = self.config, self.layout, self._per_agent
        n, item = cfg.n_agents, cfg.dtype.itemsize
        sz = lay.sizes
        rows = lambda group: n if per[group] else 1
        a_bufs = 3 + cfg.has_pA + (cfg.use_param_info_gain and cfg.has_pA)
        b_bufs = 1 + cfg.has_pB + (cfg.use_param_info_gain and cfg.has_pB)
        params = (rows("A") * (a_bufs * sz["A"] + sz["H"]) + rows("B") * b_bufs * sz["B"]
                  + rows("D") * 2 * sz["S"] + rows("C") * sz["C"] + rows("E") * sz["E"]
                  + 5 * n) * item
        state = n * (3 * sz["S"] + 2 * sz["E"]) * item + n * (cfg.num_modalities + 2 * cfg.num_factors + 1) * 8
        return int(params + state + self._backend.scratch_bytes(cfg, lay))

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
            self._state.obs[...] = self._backend.asarray(obs, dtype=np.int64)
            self._backend.infer_states(self._params, self._state, self.config)
        return self.qs

    def infer_policies(self):
        """Returns ``(q_pi, neg_efe)``, each ``(N, P)``, for the current ``qs``."""
        self.wait()
        with self._writing():
            self._backend.infer_policies(self._params, self._state, self.config)
        return self.q_pi, self.neg_efe

    def infer_parameters(self) -> None:
        """Dirichlet learning from the last ``obs``, ``qs`` and the previous step's beliefs and
        action (those enabled by ``learn_A``/``learn_B``/``learn_D``). ``step`` calls it."""
        self.wait()
        with self._writing():
            self._backend.infer_parameters(self._params, self._state, self.config)

    def sample_action(self) -> np.ndarray:
        """Actions ``(N, F)`` int64 from ``q_pi`` (uncontrolled factors get 0)."""
        self.wait()
        with self._writing():
            self._backend.sample_action(self._params, self._state, self.config)
        return self.actions

    def update_empirical_prior(self, actions) -> list:
        """Prior for the next step: ``B[f][..., actions[:, f]]`` applied to ``qs``. Advances ``t``.
        Returns the new prior (list of ``(N, S_f)``)."""
        self.wait()
        actions = check_actions(actions, self.config.num_controls, self.config.n_agents)
        with self._writing():
            act = self._backend.asarray(actions, dtype=np.int64)
            self._backend.update_empirical_prior(self._params, self._state, self.config, act)
        return self.prior

    def step(self, obs, agents=None) -> np.ndarray:
        """One full step in pymdp's order: infer_states, infer_policies, infer_parameters (when
        learning), sample_action, update_empirical_prior. Returns actions ``(N, F)`` int64.
        ``agents=(lo, hi)`` steps only that cohort (obs and actions ``(hi - lo, ...)``)."""
        if agents is None and self._pending is None and self._inline:
            # the common small-N CPU case without the async machinery: ~3 us less per step
            obs = self._check_obs(obs)
            self._epoch += 1  # as _writing(), whose generator would cost ~3 us here
            try:
                self._state.obs[...] = obs
                self._backend.step(self._params, self._state, self.config)
            finally:
                self._epoch += 1
            return self._state.actions.copy()
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
        self.wait()
        lo, hi = self._cohort(agents)
        obs = self._check_obs(obs, hi - lo)
        self._epoch += 1  # odd while the state is being written (see snapshot)
        try:
            args = (self._params, self._state, self.config, lo, hi)
            launch = getattr(self._backend, "step_async", None)
            if launch is not None:  # cuda: queued on the engine's stream, obs copy included
                with self._backend.on_stream():
                    self._state.obs[lo:hi] = self._backend.asarray(obs, dtype=np.int64)
                    launch(*args)
                pending = PendingStep(self, self._backend.synchronize, lo, hi)
            elif hi - lo < _INLINE_BELOW and agents is None:  # a thread hop costs more than the step
                self._state.obs[lo:hi] = obs
                self._backend.step(*args)
                pending = PendingStep(self, lambda: None, lo, hi)
            else:
                self._state.obs[lo:hi] = obs
                fut = _step_executor().submit(self._backend.step, *args)
                pending = PendingStep(self, fut.result, lo, hi)
        except BaseException:
            self._epoch += 1
            raise
        self._pending = pending
        return pending

    @contextlib.contextmanager
    def _writing(self):
        """A write of the per-agent state: the epoch is odd meanwhile (see ``snapshot``), device
        work goes to the engine's stream, and it has finished when the block ends."""
        self._epoch += 1
        try:
            with self._backend.on_stream():
                yield
                self._backend.synchronize()
        finally:
            self._epoch += 1

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
        """Block until a step started by :meth:`step_async` has finished."""
        if self._pending is not None:
            self._pending.result()

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
        cfg, s, p = self.config, self._state, self._params
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
                d = p.D[f][idx] if p.per_agent["D"][f] else p.D[f]
                for arr in (s.prior, s.qs, s.qs_prev):
                    arr[f][idx] = d
            s.prev_actions[idx] = -1
            s.t[idx] = 0
            s.q_pi[idx] = 0
            s.neg_efe[idx] = 0

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

    qs = property(lambda self: [self._host(x) for x in self._state.qs], doc="Posterior, F x (N, S_f).")
    prior = property(lambda self: [self._host(x) for x in self._state.prior],
                     doc="Empirical prior for the next step, F x (N, S_f).")
    q_pi = property(lambda self: self._host(self._state.q_pi), doc="Policy posterior (N, P).")
    neg_efe = property(lambda self: self._host(self._state.neg_efe), doc="Negative EFE (N, P).")
    actions = property(lambda self: self._host(self._state.actions), doc="Last actions (N, F) int64.")
    t = property(lambda self: self._host(self._state.t), doc="Steps since each agent's reset, (N,) int64.")
    A = property(lambda self: [self._host(x) for x in self._params.A], doc="Current A (shared or per-agent).")
    B = property(lambda self: [self._host(x) for x in self._params.B], doc="Current B (shared or per-agent).")
    D = property(lambda self: [self._host(x) for x in self._params.D], doc="Current D (shared or per-agent).")
    pA = property(lambda self: None if self._params.pA is None else [self._host(x) for x in self._params.pA])
    pB = property(lambda self: None if self._params.pB is None else [self._host(x) for x in self._params.pB])
    pD = property(lambda self: None if self._params.pD is None else [self._host(x) for x in self._params.pD])

    # zero-copy backend arrays (CuPy on cuda: __cuda_array_interface__), valid until the next step
    actions_device = property(lambda self: self._state.actions, doc="Last actions (N, F) int64, on the backend.")
    obs_device = property(lambda self: self._state.obs, doc="Last observations (N, M) int64, on the backend.")
    q_pi_device = property(lambda self: self._state.q_pi, doc="Policy posterior (N, P), on the backend.")
    qs_device = property(lambda self: self._state.packed["qs"],
                         doc="Posterior of all factors side by side, (N, sum S_f), on the backend.")

    def __repr__(self) -> str:
        return f"Engine(n_agents={self.n_agents}, backend={self.backend!r}, dtype={self.config.dtype}, {self.model!r})"
