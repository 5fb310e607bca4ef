"""The static configuration of an engine. Its buffers (model, state, scratch) are described by
:mod:`fa_gpu.schema` and held in a :class:`fa_gpu.schema.Bound`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
    has_pD: bool
    agent_offset: int = 0  # global index of the first agent (a shard, or a cohort of an engine)
    inference_horizon: int | None = None  # window of mmp/vmp (None for fpi)
    categorical_obs: bool = False  # observations are distributions (N, O_m) per modality

    @property
    def sequence(self) -> bool:
        """Sequence inference (mmp, vmp) over a window of past steps."""
        return self.inference_algo in ("mmp", "vmp")

    @property
    def window(self) -> int:
        """Steps of the observation window: the inference horizon (mmp, vmp), else 1."""
        return self.inference_horizon if self.sequence else 1

    @property
    def num_factors(self) -> int:
        return len(self.num_states)

    @property
    def num_modalities(self) -> int:
        return len(self.num_obs)

    @property
    def num_policies(self) -> int:
        return int(self.policies.shape[0])

    def cohort(self, lo: int, hi: int) -> "Config":
        """The configuration of agents ``lo..hi-1`` of this engine (random draws keep their
        global indices through ``agent_offset``)."""
        return dataclasses.replace(self, n_agents=hi - lo, agent_offset=self.agent_offset + lo)
