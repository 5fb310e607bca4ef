"""Random generative models and the case list shared by the cross-validation and backend tests.

Every array is random (Dirichlet columns, Gaussian preferences): no zeros-only or identity-only
models, so a wrong axis or a missing term changes the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import fa_gpu


@dataclass
class Case:
    name: str
    num_states: list
    num_obs: list
    num_controls: list
    A_deps: list | None = None
    B_deps: list | None = None
    policy_len: int = 1
    E: bool = False  # non-uniform E
    per_agent_gamma: bool = False
    kw: dict = field(default_factory=dict)  # Engine keyword arguments
    counts: tuple = ()  # which of "pA", "pB", "pD" to include


def _cols(rng, shape, conc=1.0):
    """Random array whose axis 0 columns sum to 1 (float64)."""
    x = rng.gamma(conc, size=shape) + 1e-3
    return x / x.sum(axis=0, keepdims=True)


def make_model_arrays(case: Case, seed: int):
    """Dict of GenerativeModel keyword arguments for ``case``."""
    rng = np.random.default_rng(seed)
    F, M = len(case.num_states), len(case.num_obs)
    A_deps = case.A_deps or [list(range(F))] * M
    B_deps = case.B_deps or [[f] for f in range(F)]
    S = case.num_states
    A = [_cols(rng, (case.num_obs[m], *[S[d] for d in A_deps[m]]), 0.7) for m in range(M)]
    B = [_cols(rng, (S[f], *[S[d] for d in B_deps[f]], case.num_controls[f]), 0.5) for f in range(F)]
    C = [rng.normal(0, 1.5, size=o) for o in case.num_obs]
    D = [_cols(rng, (s,), 2.0) for s in S]
    out = dict(A=A, B=B, C=C, D=D, A_dependencies=A_deps, B_dependencies=B_deps,
               policy_len=case.policy_len)
    P = int(np.prod(case.num_controls)) ** case.policy_len
    if case.E:
        out["E"] = _cols(rng, (P,), 1.0)
    if "pA" in case.counts:
        out["pA"] = [a * rng.uniform(0.5, 4.0) + rng.uniform(0.05, 0.5, size=a.shape) for a in A]
    if "pB" in case.counts:
        out["pB"] = [b * rng.uniform(0.5, 4.0) + rng.uniform(0.05, 0.5, size=b.shape) for b in B]
    if "pD" in case.counts:
        out["pD"] = [d * 3.0 + 0.2 for d in D]
    return out


def engine_kwargs(case: Case, n: int, seed: int):
    rng = np.random.default_rng(seed + 1)
    kw = dict(case.kw)
    if case.per_agent_gamma:
        kw["gamma"] = rng.uniform(0.5, 4.0, size=n)
        kw["alpha"] = rng.uniform(0.5, 8.0, size=n)
    return kw


def random_obs(case: Case, n: int, steps: int, seed: int) -> np.ndarray:
    """int64 ``(steps, n, M)``: different outcomes for different agents."""
    rng = np.random.default_rng(seed + 2)
    return np.stack([rng.integers(0, o, size=(steps, n)) for o in case.num_obs], axis=-1)


CASES = [
    Case("1f1m", [4], [3], [3]),
    Case("1f1m_len2", [5], [4], [3], policy_len=2),
    Case("1f1m_len3", [3], [3], [2], policy_len=3),
    Case("1f2m", [4], [3, 5], [4]),
    Case("1f3m_E", [3], [2, 3, 4], [3], E=True),
    Case("1f2m_gamma", [5], [4, 2], [3], per_agent_gamma=True),
    Case("1f_noutil", [4], [4], [3], kw=dict(use_utility=False)),
    Case("1f_noinfo", [4], [4], [3], kw=dict(use_states_info_gain=False)),
    Case("1f_marginal", [4], [3], [3], kw=dict(sampling_mode="marginal")),
    Case("2f1m", [3, 2], [4], [3, 2]),
    Case("2f2m_len2", [3, 3], [3, 2], [2, 2], policy_len=2),
    Case("2f2m_Adeps", [4, 3], [3, 4], [2, 3], A_deps=[[0], [1]]),
    Case("2f3m_Adeps", [3, 4], [2, 3, 3], [3, 2], A_deps=[[0, 1], [1], [0]]),
    Case("2f_uncontrolled", [3, 4], [3, 3], [3, 1], A_deps=[[0, 1], [1]]),
    Case("2f_Bdeps", [3, 2], [3, 2], [2, 2], B_deps=[[0], [0, 1]]),
    Case("2f_Bdeps_rev", [2, 3], [4], [2, 3], B_deps=[[1, 0], [1]]),
    Case("2f_marginal", [3, 3], [3, 3], [3, 2], A_deps=[[0], [0, 1]], kw=dict(sampling_mode="marginal")),
    Case("2f_E_gamma", [3, 2], [3, 2], [2, 2], E=True, per_agent_gamma=True),
    Case("2f_len3", [2, 2], [3], [2, 2], policy_len=3),
    Case("3f1m", [2, 3, 2], [4], [2, 2, 1]),
    Case("3f2m_Adeps", [3, 2, 2], [3, 4], [3, 2, 2], A_deps=[[0, 2], [1, 2]]),
    Case("3f3m_Bdeps", [2, 3, 2], [2, 3, 2], [2, 3, 1], A_deps=[[0], [1], [0, 1, 2]], B_deps=[[0], [1], [2, 0]]),
    Case("3f_len2_E", [2, 2, 2], [3, 2], [2, 2, 2], policy_len=2, E=True),
    Case("3f_noinfo_marg", [2, 3, 2], [3, 3], [2, 1, 2], kw=dict(use_states_info_gain=False, sampling_mode="marginal")),
    Case("learnA_1f", [4], [3, 2], [3], kw=dict(learn_A=True), counts=("pA",)),
    Case("learnB_1f", [4], [4], [3], kw=dict(learn_B=True), counts=("pB",)),
    Case("learnAB_2f", [3, 2], [3, 3], [3, 2], A_deps=[[0], [0, 1]], kw=dict(learn_A=True, learn_B=True),
         counts=("pA", "pB")),
    Case("learnAB_lr", [3, 3], [4], [2, 3], kw=dict(learn_A=True, learn_B=True, lr_pA=0.7, lr_pB=1.9),
         counts=("pA", "pB"), per_agent_gamma=True),
    Case("learnB_Bdeps", [3, 2], [3, 2], [2, 2], B_deps=[[0, 1], [1]], kw=dict(learn_B=True), counts=("pB",)),
    Case("learnA_len2", [3], [3], [2], policy_len=2, kw=dict(learn_A=True), counts=("pA",)),
    Case("paraminfo_A", [4], [3, 3], [3], kw=dict(use_param_info_gain=True), counts=("pA",)),
    Case("paraminfo_AB", [3, 2], [3, 2], [2, 2], kw=dict(use_param_info_gain=True), counts=("pA", "pB")),
    Case("paraminfo_learn", [3, 2], [3], [3, 2], policy_len=2, B_deps=[[0], [0, 1]],
         kw=dict(use_param_info_gain=True, learn_A=True, learn_B=True), counts=("pA", "pB")),
    Case("3f_len2_learn_marg", [2, 2, 3], [2, 3], [2, 1, 2], policy_len=2, A_deps=[[0, 1], [2]],
         kw=dict(learn_A=True, learn_B=True, sampling_mode="marginal"), counts=("pA", "pB"), E=True),
    Case("2f_numiter3", [3, 3], [3, 4], [2, 3], A_deps=[[0, 1], [0, 1]], kw=dict(num_iter=3)),
]


def build(case: Case, n: int, seed: int, backend="numpy", dtype="float64", **extra):
    """(GenerativeModel, Engine) for ``case``; ``seed`` keys both the model and the engine's RNG."""
    model = fa_gpu.GenerativeModel(**make_model_arrays(case, seed))
    kw = engine_kwargs(case, n, seed)
    kw.update(extra)
    return model, fa_gpu.Engine(model, n, backend=backend, dtype=dtype, seed=seed, **kw)


# -- sequence inference (mmp, vmp, categorical observations): tests/test_sequence.py, the cuda
# simulator's window check and benchmarks/gpu_check.py
#: 1-3 factors, A and B dependencies (a factor with three parents), both algorithms, horizons
#: 1-4, learning of A, B and D (per-agent parameters), categorical observations, parameter
#: information gain, stochastic selection
SEQ = [
    (Case("mmp_1f_H3", [4], [3, 2], [3]), dict(inference_algo="mmp", inference_horizon=3)),
    (Case("vmp_1f_H1_len2", [3], [4], [2], policy_len=2), dict(inference_algo="vmp", inference_horizon=1)),
    (Case("vmp_2f_Bdeps_H2", [3, 2], [3, 2], [3, 2], A_deps=[[0], [0, 1]], B_deps=[[0, 1], [1]]),
     dict(inference_algo="vmp", inference_horizon=2)),
    (Case("mmp_2f_Bdeps_H4", [2, 3], [4], [2, 3], B_deps=[[1, 0], [1]]),
     dict(inference_algo="mmp", inference_horizon=4, sampling_mode="marginal")),
    (Case("mmp_3f_H3", [2, 3, 2], [3, 2], [2, 3, 1], A_deps=[[0, 2], [1, 2]], B_deps=[[0], [1], [2, 0]]),
     dict(inference_algo="mmp", inference_horizon=3, num_iter=5)),
    (Case("vmp_3f_3parents_H4", [2, 2, 3], [2, 3], [2, 1, 2], A_deps=[[0, 1], [2]], B_deps=[[0, 1, 2], [1], [2]]),
     dict(inference_algo="vmp", inference_horizon=4, num_iter=4)),
    (Case("mmp_3parents_H3", [2, 2, 3], [3], [2, 2, 2], B_deps=[[0, 1, 2], [1], [2, 1]]),
     dict(inference_algo="mmp", inference_horizon=3, num_iter=3)),
    (Case("mmp_learnABD_H3", [3, 2], [3, 3], [3, 2], A_deps=[[0], [0, 1]], counts=("pA", "pB", "pD"),
          kw=dict(learn_A=True, learn_B=True, learn_D=True, lr_pB=0.6)),
     dict(inference_algo="mmp", inference_horizon=3)),
    (Case("vmp_learnAB_cat_H2", [3], [3, 2], [3], counts=("pA", "pB"), kw=dict(learn_A=True, learn_B=True, lr_pA=0.7)),
     dict(inference_algo="vmp", inference_horizon=2, categorical_obs=True)),
    (Case("vmp_info_stoch_H3", [3, 2], [3, 2], [2, 2], counts=("pA", "pB"), per_agent_gamma=True,
          kw=dict(use_param_info_gain=True)), dict(inference_algo="vmp", inference_horizon=3,
                                                    action_selection="stochastic")),
    (Case("fpi_cat_learnA_2f", [3, 2], [3, 2], [2, 2], counts=("pA",), kw=dict(learn_A=True)),
     dict(categorical_obs=True)),
]
SEQ_IDS = [c.name for c, _ in SEQ]


def build_seq(case, n, seed, backend, per_agent, dtype="float64", **kw):
    """The Engine of ``case``; ``per_agent``: every agent its own random A, B, C, D (and counts)."""
    arrs = make_model_arrays(case, seed)
    if per_agent:
        own = [make_model_arrays(case, seed + 1 + i) for i in range(n)]
        for k in ("A", "B", "C", "D", "pA", "pB", "pD"):
            if k in arrs:
                arrs[k] = [np.stack([o[k][i] for o in own]) for i in range(len(arrs[k]))]
    model = fa_gpu.GenerativeModel(**arrs)
    kw = {**engine_kwargs(case, n, seed), **kw}
    return fa_gpu.Engine(model, n, backend=backend, dtype=dtype, seed=seed, **kw)


def inputs(case, kw, seed, n, steps):
    """Per step: index obs (n, M), or M random distributions (n, O_m) with categorical_obs."""
    if not kw.get("categorical_obs"):
        return list(random_obs(case, n, steps, seed))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        xs = [rng.gamma(0.8, size=(n, o)) + 1e-3 for o in case.num_obs]
        out.append([x / x.sum(axis=1, keepdims=True) for x in xs])
    return out


def random_seq(seed: int, max_n: int = 80):
    """A random small sequence-inference setup: ``(case, kw, n, per_agent)``. 1-3 factors (2-3
    states, 1-3 actions), 1-3 modalities (2-4 outcomes), random A/B dependencies, policy_len
    1-2, counts and learning of A/B/D, parameter information gain, E and per-agent gamma on or
    off; mmp or vmp (horizon 1-5, num_iter 1-5, categorical observations or not) or fpi from
    categorical observations; deterministic or stochastic, full or marginal; 1..max_n agents,
    per-agent models or shared."""
    r = np.random.default_rng(seed)
    F, M = int(r.integers(1, 4)), int(r.integers(1, 4))
    S = [int(x) for x in r.integers(2, 4, F)]
    U = [int(x) for x in r.integers(1, 4, F)]
    T = int(r.integers(1, 3))
    if T == 2:  # at most 64 policies
        U = [min(u, 2) for u in U]
    A_deps = [sorted(r.permutation(F)[:r.integers(1, F + 1)].tolist()) for _ in range(M)]
    B_deps = []
    for f in range(F):
        others = [g for g in r.permutation(F).tolist() if g != f][:r.integers(0, F)]
        B_deps.append(r.permutation(others + [f]).tolist())
    counts = tuple(c for c in ("pA", "pB", "pD") if r.random() < 0.5)
    learn = dict(learn_A="pA" in counts and r.random() < 0.7, learn_B="pB" in counts and r.random() < 0.7,
                 learn_D="pD" in counts and r.random() < 0.7,
                 use_param_info_gain=bool({"pA", "pB"} & set(counts)) and r.random() < 0.5)
    case = Case(f"seq{seed}", S, [int(x) for x in r.integers(2, 5, M)], U, A_deps=A_deps, B_deps=B_deps,
                policy_len=T, E=bool(r.random() < 0.5), per_agent_gamma=bool(r.random() < 0.5), kw=learn,
                counts=counts)
    kw = dict(action_selection=("deterministic", "stochastic")[int(r.integers(0, 2))],
              sampling_mode=("full", "marginal")[int(r.integers(0, 2))], categorical_obs=True)
    algo = ("mmp", "vmp", "fpi")[int(r.integers(0, 3))]
    if algo != "fpi":
        kw.update(inference_algo=algo, inference_horizon=int(r.integers(1, 6)),
                  num_iter=int(r.integers(1, 6)), categorical_obs=bool(r.random() < 0.4))
    return case, kw, int(r.integers(1, max_n + 1)), bool(r.random() < 0.3)

