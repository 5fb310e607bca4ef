"""NumPy backend: the reference algorithm run as is. Also the base class of the other backends,
which override ``step`` (the fused kernel) and inherit the per-method calls."""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from .. import reference as ref
from ..state import Config, Params, State


def cohort(p: Params, s: State, cfg: Config, lo: int, hi: int):
    """Views of agents ``lo..hi-1``: per-agent arrays sliced, shared ones as they are. Writes
    through them land in the engine's buffers; random draws keep the agents' global indices."""
    sl = slice(lo, hi)
    cut = lambda name, arrs: None if arrs is None else [
        a[sl] if per else a for a, per in zip(arrs, p.per_agent.get(name, [False] * len(arrs)))]
    p2 = dataclasses.replace(
        p, **{k: cut(k, getattr(p, k)) for k in ("A", "B", "C", "D", "pA", "pB", "pD", "logA", "H_A", "wA", "wB")},
        E=p.E[sl] if p.per_agent["E"][0] else p.E, gamma=p.gamma[sl], alpha=p.alpha[sl],
        lr_pA=p.lr_pA[sl], lr_pB=p.lr_pB[sl], lr_pD=p.lr_pD[sl])
    s2 = State(prior=[x[sl] for x in s.prior], qs=[x[sl] for x in s.qs], qs_prev=[x[sl] for x in s.qs_prev],
               obs=s.obs[sl], q_pi=s.q_pi[sl], neg_efe=s.neg_efe[sl], actions=s.actions[sl],
               prev_actions=s.prev_actions[sl], t=s.t[sl], packed={k: v[sl] for k, v in s.packed.items()})
    return p2, s2, dataclasses.replace(cfg, n_agents=hi - lo, agent0=cfg.agent0 + lo)


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
        """Scratch rows a fused step for n agents needs (none: the reference allocates as it goes)."""
        return 0

    def scratch_bytes(self, cfg: Config, layout) -> int:
        """Bytes of step scratch the engine's memory estimate counts."""
        return self.work_rows(cfg.n_agents) * layout.scratch_size * cfg.dtype.itemsize

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
    def infer_states(self, p: Params, s: State, cfg: Config) -> None:
        xp = self.xp
        ll = ref.log_likelihoods(p.logA, s.obs, cfg.A_dependencies, xp)
        qs = ref.infer_states(ll, s.prior, cfg.A_dependencies, cfg.num_iter, xp)
        for dst, src in zip(s.qs, qs):
            dst[...] = src

    def infer_policies(self, p: Params, s: State, cfg: Config) -> None:
        xp = self.xp
        G = ref.neg_efe(
            s.qs, p.A, p.B, p.C, cfg.policies, cfg.A_dependencies, cfg.B_dependencies,
            H_A=p.H_A, use_utility=cfg.use_utility, use_states_info_gain=cfg.use_states_info_gain,
            wA=p.wA, wB=p.wB, xp=xp)
        s.neg_efe[...] = G
        s.q_pi[...] = ref.policy_posterior(G, p.E, p.gamma, xp)

    def infer_parameters(self, p: Params, s: State, cfg: Config) -> None:
        xp = self.xp
        if cfg.learn_A:
            A = ref.learn_A(p.pA, s.obs, s.qs, cfg.A_dependencies, p.lr_pA, xp=xp)
            for m, a in enumerate(A):
                p.A[m][...] = a
            self.refresh_A(p, cfg)
        if cfg.learn_B:
            B = ref.learn_B(p.pB, p.B, s.qs, s.qs_prev, s.prev_actions, cfg.B_dependencies, p.lr_pB, xp)
            for f, b in enumerate(B):
                p.B[f][...] = b
            self.refresh_B(p, cfg)
        if cfg.learn_D:
            D = ref.learn_D(p.pD, p.D, s.qs, p.lr_pD, s.t == 0, xp)
            for f, d in enumerate(D):
                p.D[f][...] = d

    def sample_action(self, p: Params, s: State, cfg: Config) -> None:
        xp = self.xp
        s.actions[...] = ref.sample_action(
            s.q_pi, cfg.policies, cfg.num_controls, action_selection=cfg.action_selection,
            sampling_mode=cfg.sampling_mode, alpha=p.alpha, seed=cfg.seed,
            agent_ids=xp.arange(cfg.agent0, cfg.agent0 + cfg.n_agents), steps=s.t, xp=xp)

    def update_empirical_prior(self, p: Params, s: State, cfg: Config, actions) -> None:
        pred = ref.expected_state(s.qs, p.B, actions, cfg.B_dependencies, self.xp)
        for f in range(cfg.num_factors):
            s.prior[f][...] = pred[f]
            s.qs_prev[f][...] = s.qs[f]
        s.prev_actions[...] = actions
        s.t += 1

    def step(self, p: Params, s: State, cfg: Config, lo: int = 0, hi: int | None = None) -> None:
        """One whole step in pymdp's order (obs already in ``s.obs``) for agents ``lo..hi-1``."""
        hi = cfg.n_agents if hi is None else hi
        if (lo, hi) != (0, cfg.n_agents):
            p, s, cfg = cohort(p, s, cfg, lo, hi)
        self.infer_states(p, s, cfg)
        self.infer_policies(p, s, cfg)
        if cfg.learn_A or cfg.learn_B or cfg.learn_D:
            self.infer_parameters(p, s, cfg)
        self.sample_action(p, s, cfg)
        self.update_empirical_prior(p, s, cfg, s.actions)

    # -- derived parameters ----------------------------------------------------------------
    def refresh_A(self, p: Params, cfg: Config) -> None:
        """Recompute logA, H_A (and wA) from A (and pA)."""
        xp = self.xp
        for m, a in enumerate(p.A):
            axis = 1 if p.per_agent["A"][m] else 0
            p.logA[m][...] = ref.log_stable(a, xp)
            p.H_A[m][...] = ref.conditional_entropy(a, axis, xp)
            if p.wA is not None:
                p.wA[m][...] = ref.dirichlet_weights(p.pA[m], axis, xp)

    def refresh_B(self, p: Params, cfg: Config) -> None:
        """Recompute wB from pB."""
        if p.wB is not None:
            for f, pb in enumerate(p.pB):
                p.wB[f][...] = ref.dirichlet_weights(pb, 1 if p.per_agent["pB"][f] else 0, self.xp)
