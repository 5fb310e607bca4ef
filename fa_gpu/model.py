"""`GenerativeModel`: a pymdp 1.0 generative model, validated once, shared by all agents.

Arrays follow pymdp 1.0's layout. Each array is either *shared* (no batch axis: one copy for all
agents) or *per-agent* (a leading axis of length N):

==========  =====================================  ===================================
array       shared shape                           meaning
==========  =====================================  ===================================
``A[m]``    ``(O_m, S_d0, S_d1, ...)``             p(o_m | s_deps), deps = A_dependencies[m]
``B[f]``    ``(S_f, S_d0, S_d1, ..., U_f)``        p(s_f' | s_deps, u_f), deps = B_dependencies[f]
``C[m]``    ``(O_m,)``                             log preferences over outcomes
``D[f]``    ``(S_f,)``                             initial state prior
``E``       ``(P,)``                               prior over policies
``pA[m]``   as ``A[m]``                            Dirichlet counts over A[m]
``pB[f]``   as ``B[f]``                            Dirichlet counts over B[f]
``pD[f]``   as ``D[f]``                            Dirichlet counts over D[f]
==========  =====================================  ===================================

Validation happens on construction: every rule that fails raises a ``ValueError`` (or
``TypeError`` for non-numeric input) naming the array, the index and the rule. Nothing is
silently renormalized or clipped.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["GenerativeModel", "construct_policies", "check_values", "index_list", "RULES"]


#: default bound on the number of policies a model may enumerate (``max_policies=``)
MAX_POLICIES = 1_000_000


def construct_policies(num_controls: Sequence[int], policy_len: int = 1,
                       max_policies: int | None = MAX_POLICIES) -> np.ndarray:
    """All policies in pymdp's order: the product over (time, factor), last factor fastest.

    Returns an int64 array ``(P, policy_len, F)`` with ``P = prod(num_controls) ** policy_len``.
    Raises ValueError naming P, before enumerating anything, when P exceeds ``max_policies``
    (None: no bound).
    """
    policy_len = positive_int(policy_len, "policy_len")
    if max_policies is not None:
        max_policies = positive_int(max_policies, "max_policies")
    per_step = math.prod(positive_int(u, f"num_controls[{f}]") for f, u in enumerate(num_controls))
    what = f"{' x '.join(map(str, num_controls))} actions over policy_len={policy_len}"
    if (per_step.bit_length() - 1) * policy_len > 256:  # not worth writing out: no memory holds it
        raise ValueError(f"{what} make more than 2**256 policies; shorten the horizon or pass an "
                         "explicit policies= array")
    count = per_step ** policy_len
    if max_policies is not None and count > max_policies:
        raise ValueError(
            f"{what} make {count:,} policies, above max_policies={max_policies:,}; shorten the "
            "horizon, pass an explicit policies= array, or raise max_policies")
    digits = [int(u) for u in num_controls] * policy_len
    # the table, and the two (P,) temporaries of one column's digits
    check_host_memory(count * (len(digits) + 2) * 8, f"enumerating {count:,} policies")
    # mixed-radix counting, last (time, factor) digit fastest: itertools.product's order
    pols = np.empty((count, len(digits)), dtype=np.int64)
    stride = count
    for k, u in enumerate(digits):
        stride //= u
        pols[:, k] = (np.arange(count, dtype=np.int64) // stride) % u
    return pols.reshape(count, int(policy_len), len(num_controls))


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1, else a ValueError naming ``name`` (bools and integral floats
    such as 2.0 are not integers here)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


#: host allocations below this many bytes are not checked against the free memory
_CHECK_ABOVE = 64 << 20


def check_host_memory(needed: int, what: str) -> None:
    """MemoryError naming both figures when ``needed`` bytes (for ``what``) exceed the host
    memory this process can still allocate; called before a large host allocation, so a huge
    request is an error instead of the process being killed."""
    if needed < _CHECK_ABOVE:
        return
    from .runtime.topology import host_memory_available  # stdlib only; /proc and /sys reads

    free, source = host_memory_available()
    if free is not None and needed > free:
        gib = 2.0 ** 30
        raise MemoryError(f"{what} needs {needed / gib:.2f} GiB of host memory, {free / gib:.2f} GiB "
                          f"are available ({source})")


def float_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)`` when it is float32 or float64, else a TypeError/ValueError naming it."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dt}")
    return dt


def agent_indices(agents, n: int) -> np.ndarray:
    """``agents`` (int indices, or a boolean mask of length ``n``) as int64 indices ``(k,)`` in
    ``[0, n)``; an empty list gives an empty array. TypeError/ValueError otherwise."""
    a = np.asarray(agents)
    if a.size == 0 and a.ndim == 1 and a.dtype != bool:  # [] is float64 to NumPy
        return np.zeros(0, dtype=np.int64)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"a boolean agents mask must have shape ({n},); got {a.shape}")
        a = np.flatnonzero(a)
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1:
        raise TypeError("agents must be None, a 1-D array of agent indices, or a boolean mask")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"agents indices must be in [0, {n}); got {int(a.min())}..{int(a.max())}")
    return a.astype(np.int64)


def check_actions(actions, num_controls, n: int, n_name: str = "n_agents") -> np.ndarray:
    """``actions`` as an int64 ``(n, F)`` array with ``0 <= actions[:, f] < num_controls[f]``,
    else a TypeError/ValueError naming the first bad agent and factor. ``n_name`` names the
    first axis in the shape message."""
    arr = np.asarray(actions)
    F = len(num_controls)
    if arr.shape != (n, F):
        raise ValueError(f"actions must have shape ({n_name}, num_factors) = ({n}, {F}); got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"actions must be integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= np.asarray(num_controls))
    if bad.any():
        a, f = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"action for agent {a}, factor {f} is {int(arr[a, f])}, outside "
                         f"[0, {num_controls[f]})")
    return arr.astype(np.int64, copy=False)


def _tol(dtype: np.dtype) -> float:
    """Normalization tolerance for values rounded to ``dtype``: about ten float16 ulps of 1, and
    1e-4 / 1e-8 for float32 / float64 (room for columns normalized in that precision)."""
    size = np.dtype(dtype).itemsize
    return 1e-2 if size <= 2 else 1e-4 if size <= 4 else 1e-8


def _as_array(x, name: str) -> np.ndarray:
    """A new float array holding ``x`` (integers and bools become float64): never the caller's
    own memory, so editing it afterwards cannot reach the model."""
    try:
        arr = np.array(x)  # always a copy
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be an array of numbers ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def _first(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(mask)[0])


#: the value rule of each model array, by its name without the index
RULES = {"A": "distribution", "B": "distribution", "D": "distribution", "E": "distribution",
         "C": "preferences", "pA": "counts", "pB": "counts", "pD": "counts"}


def check_values(arr, name: str, core: int, rule: str, dtype=None) -> np.ndarray:
    """Check one model array under its value rule, in the precision ``dtype`` it will be used in.

    ``arr``: real array ``(..., *core_axes)``: its last ``core`` axes are one array (leading axes,
    such as an agent axis, are batches of it); the first core axis is the distribution's.
    ``name``: how messages name it (``"A[1]"``). ``rule`` (see :data:`RULES`):

    - ``"distribution"`` (A, B, D, E): finite, non-negative, summing to 1 over the first core
      axis within the tolerance of the coarser of ``arr``'s dtype and ``dtype`` (1e-2 float16,
      1e-4 float32, 1e-8 float64; sums taken in float64);
    - ``"preferences"`` (C): finite;
    - ``"counts"`` (pA, pB, pD): finite, non-negative, no positive entry that underflows to 0 in
      ``dtype``, a positive total in every column.

    ``dtype``: the float dtype the values are cast to first (default: ``arr``'s own), so a value
    that overflows to inf there is an error naming it. Returns the values in ``dtype`` (a new
    array when ``arr`` is not already of ``dtype``). Raises ValueError (TypeError for non-numeric
    input) naming ``name``, the entry or column and the rule.
    """
    if rule not in RULES.values():
        raise ValueError(f"rule must be one of {sorted(set(RULES.values()))}; got {rule!r}")
    src = arr if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" else _as_array(arr, name)
    dt = src.dtype if dtype is None else np.dtype(dtype)
    with np.errstate(over="ignore", under="ignore"):  # reported below as errors, naming the entry
        vals = src.astype(dt, copy=False)
    finite = np.isfinite(vals)
    if not finite.all():
        idx = _first(~finite)
        if np.isfinite(src[idx]):
            raise ValueError(f"{name} entry {idx} is {src[idx]:.6g}, which overflows to {vals[idx]} "
                             f"in {dt}; every value must be finite in the engine's dtype")
        raise ValueError(f"{name} must be finite; entry {idx} is {src[idx]}")
    if rule == "preferences":
        return vals
    what = "Dirichlet counts " if rule == "counts" else ""
    if np.any(vals < 0):
        idx = _first(vals < 0)
        raise ValueError(f"{what}{name} must be non-negative; entry {idx} is {vals[idx]}")
    axis = vals.ndim - core
    sums = vals.sum(axis=axis, dtype=np.float64)
    if rule == "counts":
        lost = (src > 0) & (vals == 0)
        if lost.any():
            idx = _first(lost)
            raise ValueError(f"{what}{name} entry {idx} is {src[idx]:.6g}, which underflows to 0 in "
                             f"{dt}; counts must be representable in the engine's dtype")
        if np.any(sums <= 0):
            raise ValueError(f"{what}{name} must be positive in every column; column "
                             f"{_first(sums <= 0)} sums to 0")
        return vals
    bad = np.abs(sums - 1.0) > max(_tol(src.dtype), _tol(dt))
    if bad.any():
        col = _first(bad)
        kind = "columns" if core > 1 else "entries"
        raise ValueError(f"{name} {kind} must sum to 1; "
                         f"{'column ' + str(col) if col else 'it'} sums to {float(sums[col]):.6g}")
    return vals


def index_list(values, name: str, hi: int, what: str = "factor") -> list:
    """``values`` as a list of distinct ints in ``[0, hi)``, else a ValueError naming ``name``,
    the entry and the rule (bools and non-integral numbers such as 0.7 are not indices)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray, range)):
        raise ValueError(f"{name} must be a list of {what} indices, got {values!r}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name}[{i}] = {v!r} is not a {what} index (an integer in [0, {hi}))")
        if not 0 <= v < hi:
            raise ValueError(f"{name}[{i}] = {int(v)} is outside the {what} indices [0, {hi})")
        if int(v) in out:
            raise ValueError(f"{name} = {[int(x) for x in values]} repeats a {what} ({int(v)})")
        out.append(int(v))
    return out


def _as_list(x, name: str) -> list:
    if isinstance(x, np.ndarray) and x.dtype != object:
        raise TypeError(f"{name} must be a list of arrays (one per modality/factor), got a single array")
    if not isinstance(x, (list, tuple, np.ndarray)):
        raise TypeError(f"{name} must be a list of arrays, got {type(x).__name__}")
    return list(x)


class GenerativeModel:
    """A pymdp 1.0 generative model for a population of agents.

    Parameters
    ----------
    A : list of M arrays ``(O_m, *S_deps)`` or ``(N, O_m, *S_deps)``
        Observation likelihoods; columns (axis ``O_m``) sum to 1.
    B : list of F arrays ``(S_f, *S_deps, U_f)`` or ``(N, S_f, *S_deps, U_f)``
        Transition likelihoods; columns (axis ``S_f``) sum to 1.
    C : list of M arrays ``(O_m,)`` or ``(N, O_m)``, optional
        Log preferences. Default (as pymdp 1.0): ``1 / O_m`` everywhere.
    D : list of F arrays ``(S_f,)`` or ``(N, S_f)``, optional
        Initial state priors, each summing to 1. Default uniform.
    E : array ``(P,)`` or ``(N, P)``, optional
        Prior over policies, summing to 1. Default uniform.
    pA, pB, pD : lists like A, B, D, optional
        Dirichlet counts (non-negative, every column with a positive total) for learning and
        parameter information gain.
    A_dependencies : list of M lists of factor indices, optional
        Factors each modality depends on (axis order of ``A[m]``). Default: all factors.
    B_dependencies : list of F lists of factor indices, optional
        Factors each factor's transition depends on; must contain f. Default ``[[f]]``.
    control_fac_idx : list of int, optional
        Controllable factors; default the factors with more than one action.
    policy_len : int
        Planning horizon used to enumerate policies when ``policies`` is None.
    policies : int array ``(P, T, F)``, optional
        Explicit policy set; overrides ``policy_len`` (which becomes ``T``).
    max_policies : int or None
        Largest policy set accepted (default :data:`MAX_POLICIES`, one million; None: no bound).
        A larger enumeration, or explicit set, is a ValueError naming its size, raised before
        anything is enumerated.

    Attributes
    ----------
    num_obs, num_states, num_controls : list of int
    num_modalities, num_factors, num_policies, policy_len : int
    policies : int64 array ``(P, policy_len, F)``
    batch_size : int or None
        N when any array has a per-agent axis, else None.
    """

    def __init__(self, A, B, C=None, D=None, E=None, pA=None, pB=None, pD=None,
                 A_dependencies=None, B_dependencies=None, control_fac_idx=None,
                 policy_len: int = 1, policies=None, max_policies: int | None = MAX_POLICIES):
        A = [_as_array(a, f"A[{m}]") for m, a in enumerate(_as_list(A, "A"))]
        B = [_as_array(b, f"B[{f}]") for f, b in enumerate(_as_list(B, "B"))]
        if not A:
            raise ValueError("A must hold at least one modality")
        if not B:
            raise ValueError("B must hold at least one factor")
        self.num_modalities, self.num_factors = len(A), len(B)
        F, M = self.num_factors, self.num_modalities
        self._batch: dict[str, int] = {}
        self._checked: set = set()  # dtypes validate() has passed
        if max_policies is not None:
            max_policies = positive_int(max_policies, "max_policies")

        self.B_dependencies = self._deps(B_dependencies, "B_dependencies", F, [[f] for f in range(F)])
        self.A_dependencies = self._deps(A_dependencies, "A_dependencies", M, [list(range(F))] * M)
        for f, deps in enumerate(self.B_dependencies):
            if f not in deps:
                raise ValueError(f"B_dependencies[{f}] must contain factor {f} itself, got {deps}")

        # num_states comes from B: the axis of factor f inside B[f]
        self.num_states = []
        for f, b in enumerate(B):
            core = len(self.B_dependencies[f]) + 2
            self._check_ndim(b, f"B[{f}]", core)
            self.num_states.append(int(b.shape[b.ndim - core + 1 + self.B_dependencies[f].index(f)]))
        for f, b in enumerate(B):
            deps = self.B_dependencies[f]
            expect = (self.num_states[f], *[self.num_states[d] for d in deps])
            got = b.shape[b.ndim - len(deps) - 2:-1]
            if got != expect:
                raise ValueError(f"B[{f}] must have shape (S_f, *S_deps, U) = {expect + ('U',)} for "
                                 f"B_dependencies[{f}]={deps}; got {b.shape}")
        self.num_controls = [int(b.shape[-1]) for b in B]
        for m, a in enumerate(A):
            deps = self.A_dependencies[m]
            self._check_ndim(a, f"A[{m}]", len(deps) + 1)
            expect = tuple(self.num_states[d] for d in deps)
            if a.shape[a.ndim - len(deps):] != expect:
                raise ValueError(f"A[{m}] trailing axes must be the states of factors {deps}, {expect}; "
                                 f"got shape {a.shape}")
        self.num_obs = [int(a.shape[a.ndim - len(self.A_dependencies[m]) - 1]) for m, a in enumerate(A)]

        for m, a in enumerate(A):
            check_values(a, f"A[{m}]", len(self.A_dependencies[m]) + 1, "distribution")
        for f, b in enumerate(B):
            check_values(b, f"B[{f}]", len(self.B_dependencies[f]) + 2, "distribution")

        # control factors and policies
        if control_fac_idx is None:
            self.control_fac_idx = [f for f in range(F) if self.num_controls[f] > 1]
        else:
            self.control_fac_idx = index_list(control_fac_idx, "control_fac_idx", F)
            for i in self.control_fac_idx:
                if self.num_controls[i] < 2:
                    raise ValueError(f"control_fac_idx names factor {i}, but B[{i}] has "
                                     f"{self.num_controls[i]} action(s); a controllable factor needs >= 2")
        if policies is None:
            self.policies = construct_policies(self.num_controls, policy_len, max_policies)
        else:
            pol = np.asarray(policies)
            if not np.issubdtype(pol.dtype, np.integer):
                raise TypeError(f"policies must be integers, got dtype {pol.dtype}")
            if pol.ndim != 3 or pol.shape[2] != F or pol.shape[0] < 1 or pol.shape[1] < 1:
                raise ValueError(f"policies must have shape (P, policy_len, {F}); got {pol.shape}")
            if max_policies is not None and pol.shape[0] > max_policies:
                raise ValueError(f"policies holds {pol.shape[0]:,} policies, above "
                                 f"max_policies={max_policies:,}; raise max_policies to use them")
            for f in range(F):
                bad = np.argwhere((pol[:, :, f] < 0) | (pol[:, :, f] >= self.num_controls[f]))
                if len(bad):
                    p, t = bad[0]
                    raise ValueError(f"policies[{p}, {t}, {f}] = {pol[p, t, f]} is outside the "
                                     f"{self.num_controls[f]} actions of factor {f}")
            self.policies = pol.astype(np.int64)
        self.num_policies, self.policy_len = int(self.policies.shape[0]), int(self.policies.shape[1])

        # preferences and priors
        C = ([np.full(o, 1.0 / o) for o in self.num_obs] if C is None
             else [_as_array(c, f"C[{m}]") for m, c in enumerate(_as_list(C, "C"))])
        self._check_len(C, "C", M, "modalities")
        for m, c in enumerate(C):
            self._check_vector(c, f"C[{m}]", self.num_obs[m])
            check_values(c, f"C[{m}]", 1, "preferences")
        D = ([np.full(s, 1.0 / s) for s in self.num_states] if D is None
             else [_as_array(d, f"D[{f}]") for f, d in enumerate(_as_list(D, "D"))])
        self._check_len(D, "D", F, "factors")
        for f, d in enumerate(D):
            self._check_vector(d, f"D[{f}]", self.num_states[f])
            check_values(d, f"D[{f}]", 1, "distribution")
        E = np.full(self.num_policies, 1.0 / self.num_policies) if E is None else _as_array(E, "E")
        self._check_vector(E, "E", self.num_policies)
        check_values(E, "E", 1, "distribution")

        # Dirichlet counts
        pA = self._counts(pA, "pA", A, M)
        pB = self._counts(pB, "pB", B, F)
        pD = self._counts(pD, "pD", D, F)

        # private read-only copies (see _as_array): an engine built later sees what was checked
        for arr in (*A, *B, *C, *D, E, *(pA or ()), *(pB or ()), *(pD or ()), self.policies):
            arr.flags.writeable = False
        self.A, self.B, self.C, self.D, self.E = A, B, C, D, E
        self.pA, self.pB, self.pD = pA, pB, pD
        sizes = set(self._batch.values())
        if len(sizes) > 1:
            raise ValueError(f"per-agent arrays disagree on the number of agents: {self._batch}")
        self.batch_size = sizes.pop() if sizes else None

    # -- validation helpers ------------------------------------------------------------------
    def _deps(self, deps, name, n, default):
        if deps is None:
            return [list(d) for d in default]
        if isinstance(deps, (str, bytes)) or not isinstance(deps, (list, tuple, np.ndarray)):
            raise ValueError(f"{name} must be a list of {n} lists of factor indices, got {deps!r}")
        if len(deps) != n:
            raise ValueError(f"{name} must have {n} entries, got {len(deps)}")
        out = [index_list(d, f"{name}[{i}]", self.num_factors) for i, d in enumerate(deps)]
        for i, d in enumerate(out):
            if not d:
                raise ValueError(f"{name}[{i}] is empty; each entry needs at least one factor")
        return out

    def _check_ndim(self, arr, name, core):
        if arr.ndim == core + 1:
            self._batch[name] = arr.shape[0]
        elif arr.ndim != core:
            raise ValueError(f"{name} must have {core} axes (or {core + 1} with a leading agent axis); "
                             f"got shape {arr.shape}")

    def _check_vector(self, arr, name, size):
        self._check_ndim(arr, name, 1)
        if arr.shape[-1] != size:
            raise ValueError(f"{name} must have length {size} on its last axis; got shape {arr.shape}")

    @staticmethod
    def _check_len(lst, name, n, what):
        if len(lst) != n:
            one = {"modalities": "modality", "factors": "factor"}[what]
            raise ValueError(f"{name} must have one entry per {one} ({n} {what}), got {len(lst)}")

    def _counts(self, counts, name, like, n):
        if counts is None:
            return None
        counts = [_as_array(c, f"{name}[{i}]") for i, c in enumerate(_as_list(counts, name))]
        self._check_len(counts, name, n, "modalities" if name == "pA" else "factors")
        for i, (c, ref) in enumerate(zip(counts, like)):
            core = ref.ndim - (1 if f"{name[1:]}[{i}]" in self._batch else 0)
            nm = f"{name}[{i}]"
            self._check_ndim(c, nm, core)
            if c.shape[c.ndim - core:] != ref.shape[ref.ndim - core:]:
                raise ValueError(f"{nm} must have the shape of {name[1:]}[{i}], "
                                 f"{ref.shape[ref.ndim - core:]}; got {c.shape}")
            check_values(c, nm, core, "counts")
        return counts

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def from_pymdp(cls, agent) -> "GenerativeModel":
        """Build from a pymdp 1.0 ``Agent``.

        pymdp stores every array with a batch axis; arrays identical across the batch become
        shared here, others stay per-agent. Dependencies, control factors and policies carry over.
        """
        def unbatch(arrs):
            if arrs is None:
                return None
            out = []
            for x in arrs:
                x = np.asarray(x)
                out.append(x[0] if np.all(x == x[:1]) else x)
            return out

        return cls(
            A=unbatch(agent.A), B=unbatch(agent.B), C=unbatch(agent.C), D=unbatch(agent.D),
            E=unbatch([agent.E])[0], pA=unbatch(agent.pA), pB=unbatch(agent.pB),
            A_dependencies=agent.A_dependencies, B_dependencies=agent.B_dependencies,
            control_fac_idx=agent.control_fac_idx,
            policies=np.asarray(agent.policies.policy_arr), max_policies=None,  # pymdp made them
        )

    def is_shared(self, name: str) -> bool:
        """True when array ``name`` (e.g. ``"A[0]"``, ``"E"``) has no per-agent axis."""
        return name not in self._batch

    # -- the rules, reusable on arrays from elsewhere (engine dtypes, checkpoints) -------------
    def core_shape(self, name: str) -> tuple:
        """Shape of array ``name`` without an agent axis: ``"A[m]"`` ``(O_m, *S_deps)``,
        ``"B[f]"`` ``(S_f, *S_deps, U_f)``, ``"C[m]"`` ``(O_m,)``, ``"D[f]"`` ``(S_f,)``, ``"E"``
        ``(P,)``, ``"pA[m]"``/``"pB[f]"``/``"pD[f]"`` as A, B, D. ValueError for another name."""
        base, i = self._parse(name)
        S = self.num_states
        if base in ("A", "pA"):
            return (self.num_obs[i], *[S[d] for d in self.A_dependencies[i]])
        if base in ("B", "pB"):
            return (S[i], *[S[d] for d in self.B_dependencies[i]], self.num_controls[i])
        if base == "C":
            return (self.num_obs[i],)
        if base in ("D", "pD"):
            return (S[i],)
        return (self.num_policies,)

    def check_array(self, name: str, arr, dtype=None, n_agents: int | None = None) -> np.ndarray:
        """Check ``arr`` as this model's array ``name`` (``"A[0]"``, ``"pB[1]"``, ``"E"``...):
        shape :meth:`core_shape` (or ``(n_agents, *core_shape)`` when ``n_agents`` is given: a
        per-agent copy) and the value rule of :func:`check_values` in ``dtype`` (default: its
        own). Returns the values as a new ``dtype`` array; ValueError/TypeError naming ``name``."""
        base, _ = self._parse(name)
        core = self.core_shape(name)
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
            arr = _as_array(arr, name)
        shapes = [core] if n_agents is None else [core, (n_agents, *core)]
        if arr.shape not in shapes:
            raise ValueError(f"{name} must have shape {' or '.join(map(str, shapes))}; got {arr.shape}")
        vals = check_values(arr, name, len(core), RULES[base], dtype)
        return vals.copy() if vals is arr else vals

    def validate(self, dtype) -> None:
        """Check every array again in ``dtype`` (float32 or float64), the precision an engine
        stores it in: a value that overflows to inf there (``C = 1e39`` in float32), or a count
        that underflows to 0 (1e-300), is a ValueError naming it. Done once per dtype."""
        dt = float_dtype(dtype)
        if dt in self._checked:
            return
        for base in ("A", "B", "C", "D", "pA", "pB", "pD"):
            for i, arr in enumerate(getattr(self, base) or ()):
                name = f"{base}[{i}]"
                check_values(arr, name, len(self.core_shape(name)), RULES[base], dt)
        check_values(self.E, "E", 1, "distribution", dt)
        self._checked.add(dt)

    def _parse(self, name: str) -> tuple[str, int]:
        """``"pB[1]"`` -> ``("pB", 1)``, ``"E"`` -> ``("E", 0)``, checked against this model."""
        base, _, rest = str(name).partition("[")
        count = {"A": self.num_modalities, "pA": self.num_modalities, "C": self.num_modalities,
                 "B": self.num_factors, "pB": self.num_factors, "D": self.num_factors,
                 "pD": self.num_factors}.get(base)
        if base == "E" and not rest:
            return base, 0
        if count is not None and rest.endswith("]") and rest[:-1].isdigit() and int(rest[:-1]) < count:
            return base, int(rest[:-1])
        raise ValueError(f"{name!r} is not an array of this model (A[0..{self.num_modalities - 1}], "
                         f"B[0..{self.num_factors - 1}], C, D, E, pA, pB, pD)")

    def __repr__(self) -> str:
        return (f"GenerativeModel(num_obs={self.num_obs}, num_states={self.num_states}, "
                f"num_controls={self.num_controls}, policies={self.num_policies}x{self.policy_len}, "
                f"batch_size={self.batch_size})")
