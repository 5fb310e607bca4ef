"""The argument list of a fused step kernel (``kernels.agent.agent_step`` order), shared by the
CPU and CUDA backends."""
from __future__ import annotations

import numpy as np

from ..kernels import columns as col


def options(cfg) -> np.ndarray:
    """int64 ``opts`` vector of a config (see ``kernels.columns.OPT_*``)."""
    o = np.zeros(col.N_OPTS, dtype=np.int64)
    o[col.OPT_NUM_ITER] = cfg.num_iter
    o[col.OPT_UTILITY] = cfg.use_utility
    o[col.OPT_STATE_INFO] = cfg.use_states_info_gain
    o[col.OPT_WA] = cfg.use_param_info_gain and cfg.has_pA
    o[col.OPT_WB] = cfg.use_param_info_gain and cfg.has_pB
    o[col.OPT_STOCHASTIC] = cfg.action_selection == "stochastic"
    o[col.OPT_MARGINAL] = cfg.sampling_mode == "marginal"
    o[col.OPT_LEARN_A], o[col.OPT_LEARN_B], o[col.OPT_LEARN_D] = cfg.learn_A, cfg.learn_B, cfg.learn_D
    return o


def kernel_args(p, s, cfg) -> tuple:
    """Everything after (n_chunks, scratch_size) for ``kernels.cpu`` / ``kernels.cuda``."""
    k, t = p.packed, p.tables
    return (s.obs, s.packed["qs"], s.packed["prior"], s.packed["qs_prev"], s.q_pi, s.neg_efe,
            s.actions, s.prev_actions, s.t, p.gamma, p.alpha, k["lr"],
            k["A"], k["logA"], k["H_A"], k["C"], k["B"], k["D"], k["E"],
            k["pA"], k["pB"], k["pD"], k["wA"], k["wB"],
            t["A_meta"], t["A_deps"], t["B_meta"], t["B_deps"], t["B_next"], t["S_off"],
            t["policies"], t["branch"], t["opts"], np.uint64(cfg.seed))


def cached_kernel_args(p, s, cfg) -> tuple:
    """:func:`kernel_args`, built once per engine: the buffers are the same every step."""
    if p.kernel_args is None:
        p.kernel_args = kernel_args(p, s, cfg)
    return p.kernel_args
