"""NumPy backend: the reference algorithm run as is. Also the base class of the other backends,
which override ``step`` (the fused kernel) and inherit the per-method calls.

Every method takes the engine's buffers ``b`` (a :class:`fa_gpu.schema.Bound`: ``b.A[m]``,
``b.qs[f]``, ``b.q_pi`` ... in pymdp's layout) and its :class:`fa_gpu.state.Config`.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .. import reference as ref
from ..state import Config

#: live temporaries of the largest size during a reference step (measured with tracemalloc on
#: the numpy backend: peak 8.0 KB per agent on the 400-state grid in float32, 5x its 1.6 KB largest)
_LIVE = 6


def reference_temp_bytes(cfg: Config, layout) -> int:
    """Bytes per agent a reference step needs at its peak: ``_LIVE`` times its largest per-agent
    temporary, which is one of: all modalities' log-likelihoods (sum J_m), a shared A or B
    contracted with its first dependency (O_m J_m / S_first, S_f J_f / S_first), the float64
    policy arrays (2 P), or, when learning, a whole A or B (twice, in float64, with parameter
    information gain). Checked against tracemalloc peaks on every random test model."""
    S, sz = cfg.num_states, layout.sizes
    joint = lambda deps: int(np.prod([S[d] for d in deps]))
    learned = max(sz["A"] if cfg.learn_A else 0, sz["B"] if cfg.learn_B else 0)
    largest = max(
        sz["H"],
        max(o * joint(deps) // S[deps[0]] for o, deps in zip(cfg.num_obs, cfg.A_dependencies)),
        max(S[f] * joint(deps) // S[deps[0]] for f, deps in enumerate(cfg.B_dependencies)),
        2 * cfg.num_policies,
        learned * (2 if cfg.use_param_info_gain else 1))
    return _LIVE * largest * cfg.dtype.itemsize


class NumpyBackend:
    """Runs every method with :mod:`fa_gpu.reference` on ``xp`` arrays (NumPy here). Shared model
    arrays go in as they are (no agent axis): their contractions are matrix products."""

    name = "numpy"
    xp = np

    # -- memory ----------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        """Host array -> backend array (a copy)."""
        return self.xp.array(x, dtype=dtype)

    def to_host(self, x) -> np.ndarray:
        """Backend array -> host NumPy copy."""
        return np.array(x)

    def synchronize(self) -> None:
        """Wait for queued work (no-op on the CPU)."""

    def work_rows(self, n: int) -> int:
        """Scratch rows (``schema`` buffer ``work``) a fused step for n agents needs: none, the
        reference allocates as it goes (see :meth:`temp_bytes`)."""
        return 0

    #: pad each scratch row past a cache line (rows belong to different threads)
    pads_work = True
    #: per-agent buffers row-major (one agent's values together; ``schema.allocate``)
    agent_innermost = False
    #: the fused window sweep's tiles may hold each lane's transition matrices
    #: (``Layout.window_sel_rows``): worth it across a tile's many lanes
    lane_matrices = True

    def scratch_size(self, layout) -> int:
        """Elements of one scratch row: the one-agent-per-thread kernel's."""
        return layout.scratch_size

    def empty_work(self, shape, dtype):
        """The ``work`` buffer, uninitialized, in the memory order the kernel wants."""
        return self.xp.empty(shape, dtype=dtype)

    def temp_bytes(self, cfg: Config, layout) -> int:
        """Bytes a step allocates while it runs (beyond the schema's buffers): the reference's
        temporaries for all agents."""
        return cfg.n_agents * reference_temp_bytes(cfg, layout)

    def check_memory(self, needed: int) -> None:
        """MemoryError naming both figures when ``needed`` bytes exceed the host memory this
        process can still allocate (MemAvailable, or the cgroup limit when lower)."""
        from ..runtime.topology import host_memory_available

        free, source = host_memory_available()
        if free is not None and needed > free:
            gib = 2.0 ** 30
            raise MemoryError(f"the engine needs {needed / gib:.2f} GiB of host memory, {free / gib:.2f} "
                              f"GiB are available ({source}); use fewer agents or dtype='float32'")

    def on_stream(self):
        """Context for device work that must be ordered with the step (nothing on the CPU)."""
        return contextlib.nullcontext()

    # -- set-up ----------------------------------------------------------------------------
    #: how a step runs (``Engine.step_path``)
    path = "reference"

    def prepare(self, cfg: Config, layout, shared_model: bool) -> None:
        """Called once by the Engine, before it allocates: ``shared_model`` says A and B have no
        agent axis. Backends with a choice of step path make it here."""

    # -- the step, one method at a time ----------------------------------------------------
    def infer_states(self, b, cfg: Config) -> None:
        """State inference from ``b.obs`` (indices) or, with ``categorical_obs``, the newest slot
        of ``b.obs_window`` (written by the Engine); writes ``qs``, ``vfe`` (and ``qs_window``)."""
        xp = self.xp
        if cfg.sequence:
            return self._infer_sequence(b, cfg)
        if cfg.categorical_obs:
            ll = ref.obs_log_likelihoods(b.logA, [w[:, -1] for w in b.obs_window], cfg.A_dependencies, xp)
        else:
            ll = ref.log_likelihoods(b.logA, b.obs, cfg.A_dependencies, xp)
        qs = ref.infer_states(ll, b.prior, cfg.A_dependencies, cfg.num_iter, xp)
        for dst, src in zip(b.qs, qs):
            dst[...] = src
        b.vfe[...] = ref.free_energy([q[:, None] for q in qs], b.prior, [x[:, None] for x in ll],
                                     None, cfg.A_dependencies, cfg.B_dependencies, xp)

    def _infer_sequence(self, b, cfg: Config) -> None:
        """mmp / vmp over each agent's window: its last ``min(t + 1, H)`` steps, prior D at the
        window's start. Agents are grouped by window length (at most H + 1 groups: a first step
        is its own group, pymdp's vmp leaves the prior out there)."""
        xp, H, F = self.xp, cfg.window, cfg.num_factors
        if not cfg.categorical_obs:  # index observations enter the window as one-hot rows
            for m, w in enumerate(b.obs_window):
                w[:, -1] = (b.obs[:, m][:, None] == xp.arange(w.shape[2])[None, :]).astype(w.dtype)
        acts = b.act_window.reshape(cfg.n_agents, H - 1, F) if H > 1 else None
        key = np.where(self.to_host(b.t) == 0, 0, np.minimum(self.to_host(b.t) + 1, H))
        for k in np.unique(key):
            T = max(int(k), 1)
            idx = slice(None) if (key == k).all() else xp.asarray(np.flatnonzero(key == k))
            sub = lambda x, per=True: x[idx] if per else x
            logA = [sub(a, b.per_agent["A"]) for a in b.logA]
            ll = ref.obs_log_likelihoods(logA, [sub(w)[:, H - T:] for w in b.obs_window], cfg.A_dependencies, xp)
            B = [sub(x, b.per_agent["B"]) for x in b.B]
            a = sub(acts)[:, H - T:] if T > 1 else xp.zeros((ll[0].shape[0], 0, F), dtype=np.int64)
            Bs = ref.select_transitions(B, a, cfg.B_dependencies, xp)
            prior = [sub(p) for p in b.prior]
            qs = ref.infer_sequence(cfg.inference_algo, ll, prior, Bs, cfg.A_dependencies,
                                    cfg.B_dependencies, cfg.num_iter,
                                    use_prior=cfg.inference_algo == "mmp" or k > 0, xp=xp)
            for f, q in enumerate(qs):
                b.qs_window[f][idx, H - T:] = q
                b.qs[f][idx] = q[:, -1]
            b.vfe[idx] = ref.free_energy(qs, prior, ll, Bs, cfg.A_dependencies, cfg.B_dependencies, xp)

    def infer_policies(self, b, cfg: Config) -> None:
        xp = self.xp
        G = ref.neg_efe(
            b.qs, b.A, b.B, b.C, cfg.policies, cfg.A_dependencies, cfg.B_dependencies,
            H_A=b.H_A, use_utility=cfg.use_utility, use_states_info_gain=cfg.use_states_info_gain,
            wA=b.wA, wB=b.wB, xp=xp)
        b.neg_efe[...] = G
        b.q_pi[...] = ref.policy_posterior(G, b.E, b.gamma, xp)

    def infer_parameters(self, b, cfg: Config) -> None:
        xp = self.xp
        if cfg.learn_A:
            obs = [w[:, -1] for w in b.obs_window] if cfg.categorical_obs else b.obs
            A = ref.learn_A(b.pA, obs, b.qs, cfg.A_dependencies, b.lr_pA, xp=xp)
            for m, a in enumerate(A):
                b.A[m][...] = a
            self.refresh_A(b, cfg)
        if cfg.learn_B:
            B = ref.learn_B(b.pB, b.B, b.qs, b.qs_prev, b.prev_actions, cfg.B_dependencies, b.lr_pB, xp)
            for f, new in enumerate(B):
                b.B[f][...] = new
            self.refresh_B(b, cfg)
        if cfg.learn_D:
            D = ref.learn_D(b.pD, b.D, b.qs, b.lr_pD, b.t == 0, xp)
            for f, d in enumerate(D):
                b.D[f][...] = d

    def sample_action(self, b, cfg: Config) -> None:
        xp = self.xp
        b.actions[...] = ref.sample_action(
            b.q_pi, cfg.policies, cfg.num_controls, action_selection=cfg.action_selection,
            sampling_mode=cfg.sampling_mode, alpha=b.alpha, seed=cfg.seed,
            agent_ids=xp.arange(cfg.agent_offset, cfg.agent_offset + cfg.n_agents), steps=b.t, xp=xp)

    def update_empirical_prior(self, b, cfg: Config, actions) -> None:
        """The next step's prior (mmp, vmp: D, as pymdp); the windows move one step left, the
        action joins the action window."""
        if cfg.sequence:
            for w in b.obs_window:
                w[:, :-1] = w[:, 1:].copy()
            if cfg.window > 1:
                acts = b.act_window.reshape(cfg.n_agents, cfg.window - 1, cfg.num_factors)
                acts[:, :-1] = acts[:, 1:].copy()
                acts[:, -1] = actions
            pred = [d if d.ndim == 2 else self.xp.broadcast_to(d, p.shape) for d, p in zip(b.D, b.prior)]
        else:
            pred = ref.expected_state(b.qs, b.B, actions, cfg.B_dependencies, self.xp)
        for f in range(cfg.num_factors):
            b.prior[f][...] = pred[f]
            b.qs_prev[f][...] = b.qs[f]
        b.prev_actions[...] = actions
        b.t += 1

    def step(self, b, cfg: Config, lo: int = 0, hi: int | None = None) -> None:
        """One whole step in pymdp's order (obs already in ``b.obs``) for agents ``lo..hi-1``:
        a cohort sees only its rows, and its random draws keep the agents' global indices."""
        hi = cfg.n_agents if hi is None else hi
        if (lo, hi) != (0, cfg.n_agents):
            b, cfg = b.cohort(lo, hi), cfg.cohort(lo, hi)
        self.infer_states(b, cfg)
        self.infer_policies(b, cfg)
        if cfg.learn_A or cfg.learn_B or cfg.learn_D:
            self.infer_parameters(b, cfg)
        self.sample_action(b, cfg)
        self.update_empirical_prior(b, cfg, b.actions)

    # -- derived parameters ----------------------------------------------------------------
    def refresh_A(self, b, cfg: Config) -> None:
        """Recompute logA, H_A (and wA) from A (and pA)."""
        xp = self.xp
        axis = 1 if b.per_agent["A"] else 0
        for m, a in enumerate(b.A):
            b.logA[m][...] = ref.log_stable(a, xp)
            b.H_A[m][...] = ref.conditional_entropy(a, axis, xp)
            if b.wA is not None:
                b.wA[m][...] = ref.dirichlet_weights(b.pA[m], axis, xp)

    def refresh_B(self, b, cfg: Config) -> None:
        """Recompute wB from pB."""
        if b.wB is not None:
            axis = 1 if b.per_agent["B"] else 0
            for f, pb in enumerate(b.pB):
                b.wB[f][...] = ref.dirichlet_weights(pb, axis, self.xp)
