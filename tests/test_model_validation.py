"""Every validation rule of GenerativeModel and Engine, each with its message."""
from __future__ import annotations

import numpy as np
import pytest

import fa_gpu
from randmodels import CASES, make_model_arrays


def base(case_idx=14, seed=7):
    """Keyword arguments of a valid 2-factor model with B_dependencies (random arrays)."""
    return make_model_arrays(CASES[case_idx], seed)


def with_(kw, **changes):
    out = dict(kw)
    out.update(changes)
    return out


def test_valid_model_attributes():
    kw = base()
    m = fa_gpu.GenerativeModel(**kw)
    assert m.num_states == [3, 2] and m.num_obs == [3, 2] and m.num_controls == [2, 2]
    assert m.num_policies == 4 and m.policy_len == 1 and m.batch_size is None
    assert m.policies.shape == (4, 1, 2) and m.policies.dtype == np.int64
    assert m.B_dependencies == [[0], [0, 1]]


def test_defaults_match_pymdp():
    kw = base()
    m = fa_gpu.GenerativeModel(A=kw["A"], B=kw["B"], B_dependencies=kw["B_dependencies"])
    for c, o in zip(m.C, m.num_obs):
        np.testing.assert_array_equal(c, np.full(o, 1.0 / o))
    for d, s in zip(m.D, m.num_states):
        np.testing.assert_array_equal(d, np.full(s, 1.0 / s))
    np.testing.assert_array_equal(m.E, np.full(4, 0.25))
    assert m.A_dependencies == [[0, 1], [0, 1]]


def test_policy_order_matches_pymdp_product():
    pols = fa_gpu.construct_policies([2, 3], policy_len=2)
    assert pols.shape == (36, 2, 2)
    # last factor of the last time step varies fastest
    np.testing.assert_array_equal(pols[0], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(pols[1], [[0, 0], [0, 1]])
    np.testing.assert_array_equal(pols[3], [[0, 0], [1, 0]])
    np.testing.assert_array_equal(pols[6], [[0, 1], [0, 0]])
    np.testing.assert_array_equal(pols[-1], [[1, 2], [1, 2]])


def test_per_agent_arrays_and_batch_size():
    kw = base()
    A0 = np.stack([kw["A"][0]] * 6)
    m = fa_gpu.GenerativeModel(**with_(kw, A=[A0, kw["A"][1]]))
    assert m.batch_size == 6 and not m.is_shared("A[0]") and m.is_shared("A[1]")
    with pytest.raises(ValueError, match="per-agent arrays disagree"):
        fa_gpu.GenerativeModel(**with_(kw, A=[A0, np.stack([kw["A"][1]] * 5)]))
    with pytest.raises(ValueError, match=r"model has per-agent arrays for 6 agents, but n_agents=4"):
        fa_gpu.Engine(m, 4)


@pytest.mark.parametrize("mutate, exc, pattern", [
    (lambda k: k["A"][1].__setitem__((0, 2, 1), k["A"][1][0, 2, 1] + 0.3),
     ValueError, r"A\[1\] columns must sum to 1; column \(2, 1\) sums to 1\.3"),
    (lambda k: k["B"][1].__setitem__((slice(None), 1, 0, 1), k["B"][1][:, 1, 0, 1] * 0.8),
     ValueError, r"B\[1\] columns must sum to 1; column \(1, 0, 1\) sums to 0\.8"),
    (lambda k: k["A"][0].__setitem__((0, 0, 0), -0.1), ValueError, r"A\[0\] must be non-negative; entry \(0, 0, 0\)"),
    (lambda k: k["A"][0].__setitem__((1, 1, 1), np.nan), ValueError, r"A\[0\] must be finite; entry \(1, 1, 1\) is nan"),
    (lambda k: k["C"][1].__setitem__(0, np.inf), ValueError, r"C\[1\] must be finite; entry \(0,\) is inf"),
    (lambda k: k["D"][0].__setitem__(0, k["D"][0][0] + 0.5), ValueError, r"D\[0\] entries must sum to 1; it sums to 1\.5"),
])
def test_value_rules(mutate, exc, pattern):
    kw = base()
    mutate(kw)
    with pytest.raises(exc, match=pattern):
        fa_gpu.GenerativeModel(**kw)


def test_shape_rules():
    kw = base()
    with pytest.raises(ValueError, match=r"A\[0\] trailing axes must be the states of factors \[0, 1\], \(3, 2\)"):
        fa_gpu.GenerativeModel(**with_(kw, A=[kw["A"][0][:, :2], kw["A"][1]]))
    with pytest.raises(ValueError, match=r"A\[1\] must have 3 axes \(or 4 with a leading agent axis\)"):
        fa_gpu.GenerativeModel(**with_(kw, A=[kw["A"][0], kw["A"][1][..., 0]]))
    with pytest.raises(ValueError, match=r"B\[1\] must have shape \(S_f, \*S_deps, U\) = \(2, 3, 2, 'U'\)"):
        fa_gpu.GenerativeModel(**with_(kw, B=[kw["B"][0], kw["B"][1][:, :2]]))
    with pytest.raises(ValueError, match=r"B_dependencies\[1\] must contain factor 1 itself"):
        fa_gpu.GenerativeModel(**with_(kw, B_dependencies=[[0], [0]]))
    with pytest.raises(ValueError, match=r"A_dependencies must have 2 entries, got 1"):
        fa_gpu.GenerativeModel(**with_(kw, A_dependencies=[[0, 1]]))
    with pytest.raises(ValueError, match=r"A_dependencies\[0\] = \[0, 0\] repeats a factor"):
        fa_gpu.GenerativeModel(**with_(kw, A_dependencies=[[0, 0], [0, 1]]))
    with pytest.raises(ValueError, match=r"C\[0\] must have length 3 on its last axis; got shape \(4,\)"):
        fa_gpu.GenerativeModel(**with_(kw, C=[np.zeros(4), kw["C"][1]]))
    with pytest.raises(ValueError, match=r"D must have one entry per factor \(2 factors\), got 1"):
        fa_gpu.GenerativeModel(**with_(kw, D=kw["D"][:1]))
    with pytest.raises(ValueError, match=r"E must have length 4 on its last axis"):
        fa_gpu.GenerativeModel(**with_(kw, E=np.full(3, 1 / 3)))
    with pytest.raises(ValueError, match=r"E entries must sum to 1; it sums to 0\.8"):
        fa_gpu.GenerativeModel(**with_(kw, E=np.full(4, 0.2)))


def test_type_rules():
    kw = base()
    with pytest.raises(TypeError, match=r"A must be a list of arrays \(one per modality/factor\), got a single array"):
        fa_gpu.GenerativeModel(**with_(kw, A=kw["A"][0]))
    with pytest.raises(TypeError, match=r"A\[0\] must be an array of numbers, got dtype <U1"):
        fa_gpu.GenerativeModel(**with_(kw, A=[np.array(["a"]), kw["A"][1]]))
    with pytest.raises(TypeError, match=r"policies must be integers"):
        fa_gpu.GenerativeModel(**with_(kw, policies=np.zeros((2, 1, 2))))


def test_policy_and_control_rules():
    kw = base()
    pols = np.array([[[0, 1]], [[1, 2]]])
    with pytest.raises(ValueError, match=r"policies\[1, 0, 1\] = 2 is outside the 2 actions of factor 1"):
        fa_gpu.GenerativeModel(**with_(kw, policies=pols))
    with pytest.raises(ValueError, match=r"policies must have shape \(P, policy_len, 2\)"):
        fa_gpu.GenerativeModel(**with_(kw, policies=np.zeros((3, 2), dtype=int)))
    m = fa_gpu.GenerativeModel(**with_(kw, policies=np.array([[[0, 1], [1, 0]]])))
    assert m.num_policies == 1 and m.policy_len == 2
    with pytest.raises(ValueError, match=r"policy_len must be a positive integer, got 0"):
        fa_gpu.GenerativeModel(**with_(kw, policy_len=0))
    with pytest.raises(ValueError, match=r"control_fac_idx\[0\] = 5 is outside the factor indices \[0, 2\)"):
        fa_gpu.GenerativeModel(**with_(kw, control_fac_idx=[5]))
    kw13 = make_model_arrays(CASES[13], 3)  # factor 1 has one action
    with pytest.raises(ValueError, match=r"control_fac_idx names factor 1, but B\[1\] has 1 action"):
        fa_gpu.GenerativeModel(**with_(kw13, control_fac_idx=[0, 1]))


def test_count_rules():
    kw = base()
    pA = [a * 2 for a in kw["A"]]
    pA[0][1, 0, 0] = -1.0
    with pytest.raises(ValueError, match=r"Dirichlet counts pA\[0\] must be non-negative; entry \(1, 0, 0\) is -1"):
        fa_gpu.GenerativeModel(**with_(kw, pA=pA))
    pB = [b * 2 for b in kw["B"]]
    pB[0][:, 2, 1] = 0.0
    with pytest.raises(ValueError, match=r"Dirichlet counts pB\[0\] must be positive in every column; column \(2, 1\) sums to 0"):
        fa_gpu.GenerativeModel(**with_(kw, pB=pB))
    with pytest.raises(ValueError, match=r"pD\[1\] must have the shape of D\[1\], \(2,\); got \(3,\)"):
        fa_gpu.GenerativeModel(**with_(kw, pD=[np.ones(3), np.ones(3)]))
    with pytest.raises(ValueError, match=r"pA must have one entry per modality \(2 modalities\), got 1"):
        fa_gpu.GenerativeModel(**with_(kw, pA=pA[:1]))
    # zero entries are allowed (as pymdp): only a column total of zero is an error
    ok = [a * 2 for a in kw["A"]]
    ok[0][0, 0, 0] = 0.0
    fa_gpu.GenerativeModel(**with_(kw, pA=ok))


def test_float32_tolerance():
    kw = base()
    A32 = [a.astype(np.float32) for a in kw["A"]]
    fa_gpu.GenerativeModel(**with_(kw, A=A32))  # float32 rounding is accepted
    A32[0][0, 0, 0] += np.float32(1e-3)
    with pytest.raises(ValueError, match=r"A\[0\] columns must sum to 1; column \(0, 0\)"):
        fa_gpu.GenerativeModel(**with_(kw, A=A32))


def test_engine_argument_rules():
    m = fa_gpu.GenerativeModel(**base())
    with pytest.raises(TypeError, match="model must be a fa_gpu.GenerativeModel, got dict"):
        fa_gpu.Engine({}, 4)
    with pytest.raises(ValueError, match="n_agents must be a positive integer, got 0"):
        fa_gpu.Engine(m, 0)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64', got float16"):
        fa_gpu.Engine(m, 4, dtype="float16")
    with pytest.raises(ValueError, match=r"inference_algo must be one of 'fpi', 'mmp', 'vmp'; got 'ovf'"):
        fa_gpu.Engine(m, 4, inference_algo="ovf")
    with pytest.raises(ValueError, match=r"action_selection must be one of 'deterministic', 'stochastic'; got 'greedy'"):
        fa_gpu.Engine(m, 4, action_selection="greedy")
    with pytest.raises(ValueError, match=r"sampling_mode must be one of 'full', 'marginal'; got 'joint'"):
        fa_gpu.Engine(m, 4, sampling_mode="joint")
    with pytest.raises(ValueError, match=r"gamma must be a scalar or have shape \(4,\) \(one per agent\); got \(3,\)"):
        fa_gpu.Engine(m, 4, gamma=np.ones(3))
    with pytest.raises(ValueError, match=r"alpha must be finite; agent 2 has nan"):
        fa_gpu.Engine(m, 4, alpha=np.array([1.0, 1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"learn_A=True needs Dirichlet counts pA in the model"):
        fa_gpu.Engine(m, 4, learn_A=True)
    with pytest.raises(ValueError, match=r"use_param_info_gain=True needs pA or pB in the model"):
        fa_gpu.Engine(m, 4, use_param_info_gain=True)
    with pytest.raises(ValueError, match=r"num_iter must be a positive integer, got 0"):
        fa_gpu.Engine(m, 4, num_iter=0)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got -1"):
        fa_gpu.Engine(m, 4, seed=-1)
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'cuda', 'numba', 'numpy'; got 'tpu'"):
        fa_gpu.Engine(m, 4, backend="tpu")


def test_obs_and_action_rules():
    m = fa_gpu.GenerativeModel(**base())
    e = fa_gpu.Engine(m, 4, backend="numpy")
    with pytest.raises(ValueError, match=r"obs for agent 2, modality 1 is 2, outside \[0, 2\)"):
        e.infer_states(np.array([[0, 0], [1, 1], [2, 2], [0, 1]]))
    with pytest.raises(ValueError, match=r"obs for agent 0, modality 0 is -1, outside \[0, 3\)"):
        e.step(np.array([[-1, 0], [1, 1], [2, 0], [0, 1]]))
    with pytest.raises(ValueError, match=r"obs must have shape \(n_agents, num_modalities\) = \(4, 2\); got \(4, 3\)"):
        e.step(np.zeros((4, 3), dtype=int))
    with pytest.raises(ValueError, match=r"obs\[1\] must have shape \(4,\) \(one outcome per agent\); got \(3,\)"):
        e.step([np.zeros(4, dtype=int), np.zeros(3, dtype=int)])
    with pytest.raises(ValueError, match=r"obs must be an \(4, 2\) integer array \(n_agents, num_modalities\) or a list of 2 integer arrays of shape \(4,\) \(one per modality\); got a list of 1 entries"):
        e.step([np.zeros(4, dtype=int)])
    with pytest.raises(TypeError, match=r"obs must be integer outcome indices, got dtype float64"):
        e.step(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"action for agent 3, factor 1 is 2, outside \[0, 2\)"):
        e.update_empirical_prior(np.array([[0, 0], [1, 1], [0, 0], [1, 2]]))
    with pytest.raises(ValueError, match=r"agents indices must be in \[0, 4\)"):
        e.reset([0, 4])
    with pytest.raises(ValueError, match=r"a boolean agents mask must have shape \(4,\)"):
        e.reset(np.array([True, False]))
    # a list of per-modality arrays is accepted and equals the (N, M) form
    o = np.array([[0, 1], [2, 0], [1, 1], [0, 0]])
    e2 = fa_gpu.Engine(m, 4, backend="numpy")
    np.testing.assert_array_equal(e.step(o), e2.step([o[:, 0], o[:, 1]]))
