"""Plain containers for what an engine holds: the static configuration, the model parameters as
backend arrays, and the per-agent state. Backends read and write these; they hold no logic."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Config:
    """Static settings of one engine (host values, never per-agent)."""

    n_agents: int
    dtype: np.dtype
    seed: int
    num_obs: tuple
    num_states: tuple
    num_controls: tuple
    A_dependencies: tuple
    B_dependencies: tuple
    policies: np.ndarray  # int64 (P, T, F), host
    inference_algo: str
    num_iter: int
    use_utility: bool
    use_states_info_gain: bool
    use_param_info_gain: bool
    action_selection: str
    sampling_mode: str
    learn_A: bool
    learn_B: bool
    learn_D: bool
    has_pA: bool
    has_pB: bool
    agent0: int = 0  # global index of the first agent (a cohort of a larger engine)

    @property
    def num_factors(self) -> int:
        return len(self.num_states)

    @property
    def num_modalities(self) -> int:
        return len(self.num_obs)

    @property
    def num_policies(self) -> int:
        return int(self.policies.shape[0])


@dataclass
class Params:
    """Model parameters as backend arrays. Each list entry is shared (no agent axis) or per-agent
    (leading N axis); ``per_agent[name][i]`` says which. Derived arrays (``logA``, ``H_A``, ``wA``,
    ``wB``) are kept in step with their sources by the backend."""

    A: list
    B: list
    C: list
    D: list
    E: Any
    pA: list | None
    pB: list | None
    pD: list | None
    logA: list
    H_A: list
    wA: list | None
    wB: list | None
    gamma: Any  # (N,)
    alpha: Any  # (N,)
    lr_pA: Any  # (N,)
    lr_pB: Any  # (N,)
    lr_pD: Any  # (N,)
    per_agent: dict = field(default_factory=dict)  # name -> list[bool]
    packed: dict = field(default_factory=dict)  # name -> (R, L) buffer the views above live in
    tables: dict = field(default_factory=dict)  # integer layout tables (backend arrays)
    scratch_size: int = 0  # per-thread scratch of a fused step (elements)
    kernel_args: Any = None  # cached argument tuple of the fused kernels (same buffers every step)


@dataclass
class State:
    """Per-agent state, every array with the agent as its leading axis. The belief lists are
    views into ``packed`` buffers."""

    prior: list  # F x (N, S_f) empirical prior for the next inference
    qs: list  # F x (N, S_f) posterior
    qs_prev: list  # F x (N, S_f) posterior of the previous step (for B learning)
    obs: Any  # (N, M) int64, last observation
    q_pi: Any  # (N, P)
    neg_efe: Any  # (N, P)
    actions: Any  # (N, F) int64, last sampled actions
    prev_actions: Any  # (N, F) int64, action taken before this step (-1: none yet)
    t: Any  # (N,) int64, steps since reset
    packed: dict = field(default_factory=dict)  # prior/qs/qs_prev -> (N, S_tot) buffer
