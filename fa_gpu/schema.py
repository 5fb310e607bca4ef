"""The one table of engine buffers, and everything generated from it.

Every array an engine holds is one row of :data:`BUFFERS`: its name, group, which kernel bundle
it travels in, how many rows it has (one per agent, one when shared, one per compute thread),
its width and dtype, and how the pymdp-layout views are cut out of it. From that table come:

- :func:`shapes`: a :class:`Spec`, the shape and dtype of every buffer of one engine
  (``Spec.nbytes()``: the engine's memory estimate);
- :func:`allocate`: the buffers themselves, and :class:`Bound`: the views the reference reads
  (``b.A[m]`` ``(O_m, *S_deps)`` or ``(N, O_m, *S_deps)``, ``b.qs[f]`` ``(N, S_f)``, ...);
- ``Bound.cohort``: the same views for agents ``lo..hi-1``;
- :func:`checkpointed`: what a checkpoint stores;
- ``Bound.bundle`` / ``Bound.kernel_args``: the named tuples the fused kernels take (``state``,
  ``model``, ``tables``, and ``window`` for the CPU window kernel; their fields are declared with
  the kernels, in ``kernels.columns``).

Where each modality's and factor's segment sits inside a row of a model buffer, and in what
order, is :mod:`fa_gpu.layout`'s business (its offsets are read here to cut the views).

Adding a buffer: one row here (and its name in the bundle's field list in ``kernels.columns``),
its use in :mod:`fa_gpu.reference` and :mod:`fa_gpu.kernels.agent` (by name, through the
bundle), and a test.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from .kernels import columns as col
from .kernels.columns import (A_OFF, B_OFF, C_OFF, H_OFF, MODEL_FIELDS, STATE_FIELDS, WINDOW_FIELDS,
                              TABLES_FIELDS)


@dataclass(frozen=True)
class Buffer:
    """One engine buffer.

    name : attribute and checkpoint name. group : A, B, C, D, E (model arrays), counts
    (Dirichlet counts and their weights), rates (per-agent scalars), state, tables, scratch.
    bundle : the kernel bundle it travels in (``state``, ``model``, ``tables``, ``window``; None: passed on
    its own). rows : ``"agents"`` (N), ``"threads"`` (the backend's scratch rows), ``"table"``
    (a layout table, its own shape) or a sharing key A/B/C/D/E (N when that group is per-agent,
    else 1). width : key of :func:`widths`, or None for one value per row. dtype : ``"float"``
    (the engine's) or ``"int64"``. views : how the pymdp views are cut (see :func:`_views`).
    when : key of :func:`present`; None: always there. valid : the rule a value read from a
    file must satisfy (every checkpointed buffer has one; :mod:`fa_gpu.runtime.checkpoint`
    implements them): ``model`` (the GenerativeModel rules of its group), ``rate`` (the Engine's
    rules for that setting), ``finite``, ``index`` (in ``[0, bound)`` per column: outcomes of
    each modality, actions of each factor), ``index_or_none`` (the same, or -1), ``belief``
    (every factor's segment a distribution), ``policy_posterior`` (a distribution, or all zeros
    before the first step), ``count`` (``>= 0``).
    """

    name: str
    group: str
    bundle: str | None
    rows: str
    width: str | None
    dtype: str
    views: str | None = None
    when: str | None = None
    doc: str = ""
    valid: str | None = None


BUFFERS = (
    # -- the model (shared: 1 row; per-agent or learned: N rows) --------------------------------
    Buffer("A", "A", "model", "A", "A", "float", "A", doc="p(o | s) per modality", valid="model"),
    Buffer("logA", "A", "model", "A", "A", "float", "A", doc="log max(A, MINVAL)", valid="finite"),
    Buffer("H_A", "A", "model", "A", "H", "float", "H", doc="-sum_o A log A per joint state", valid="finite"),
    Buffer("C", "C", "model", "C", "C", "float", "C", doc="log preferences over outcomes", valid="model"),
    Buffer("B", "B", "model", "B", "B", "float", "B", doc="p(s' | s, u) per factor", valid="model"),
    Buffer("D", "D", "model", "D", "S", "float", "S", doc="initial state prior", valid="model"),
    Buffer("E", "E", "model", "E", "E", "float", "E", doc="prior over policies", valid="model"),
    Buffer("pA", "counts", "model", "A", "A", "float", "A", "pA", "Dirichlet counts of A", valid="model"),
    Buffer("pB", "counts", "model", "B", "B", "float", "B", "pB", "Dirichlet counts of B", valid="model"),
    Buffer("pD", "counts", "model", "D", "S", "float", "S", "pD", "Dirichlet counts of D", valid="model"),
    Buffer("wA", "counts", "model", "A", "A", "float", "A", "wA", "parameter information gain weights of pA", valid="finite"),
    Buffer("wB", "counts", "model", "B", "B", "float", "B", "wB", "parameter information gain weights of pB", valid="finite"),
    Buffer("gamma", "rates", "model", "agents", None, "float", doc="policy precision", valid="rate"),
    Buffer("alpha", "rates", "model", "agents", None, "float", doc="action precision", valid="rate"),
    Buffer("lr", "rates", "model", "agents", "lr", "float", "lr", doc="learning rates lr_pA, lr_pB, lr_pD", valid="rate"),
    # -- per-agent state --------------------------------------------------------------------
    Buffer("obs", "state", "state", "agents", "M", "int64", doc="last observation", valid="index"),
    Buffer("qs", "state", "state", "agents", "S", "float", "S", doc="posterior over states", valid="belief"),
    Buffer("prior", "state", "state", "agents", "S", "float", "S", doc="empirical prior of the next step", valid="belief"),
    Buffer("qs_prev", "state", "state", "agents", "S", "float", "S", doc="posterior of the previous step", valid="belief"),
    Buffer("q_pi", "state", "state", "agents", "P", "float", doc="policy posterior", valid="policy_posterior"),
    Buffer("neg_efe", "state", "state", "agents", "P", "float", doc="negative expected free energy", valid="finite"),
    Buffer("actions", "state", "state", "agents", "F", "int64", doc="last actions", valid="index"),
    Buffer("prev_actions", "state", "state", "agents", "F", "int64", doc="action before this step (-1: none)", valid="index_or_none"),
    Buffer("t", "state", "state", "agents", None, "int64", doc="steps since reset", valid="count"),
    # -- sequence inference and categorical observations (absent ones: (1, 1) placeholders) ----
    Buffer("obs_window", "state", "window", "agents", "OW", "float", "OW", "window",
           "observations (distributions) of the last inference_horizon steps, newest last",
           valid="obs_window"),
    Buffer("act_window", "state", "window", "agents", "AW", "int64", None, "seq",
           "actions between the window's steps (inference_horizon - 1), newest last",
           valid="act_window"),
    Buffer("qs_window", "state", "window", "agents", "SW", "float", "SW", "seq",
           "posterior over the window's steps, newest last", valid="qs_window"),
    Buffer("vfe", "state", "window", "agents", None, "float", doc="variational free energy of the posterior",
           valid="vfe"),
    # -- integer layout tables (shared, read-only; derived from the model) --------------------
    *(Buffer(k, "tables", "tables", "table", None, "int64", doc=f"layout table {k}")
      for k in TABLES_FIELDS),
    # -- scratch of the fused step: one row per concurrently running agent ---------------------
    Buffer("work", "scratch", None, "threads", "scratch", "float", doc="per-thread temporaries"),
)

BY_NAME = {b.name: b for b in BUFFERS}
#: the kernels' argument bundles; their fields, in order, are the kernels' own declaration
#: (``kernels.columns``), which the table must match
StateBundle = collections.namedtuple("StateBundle", STATE_FIELDS)
WindowBundle = collections.namedtuple("WindowBundle", WINDOW_FIELDS)
ModelBundle = collections.namedtuple("ModelBundle", MODEL_FIELDS)
TablesBundle = collections.namedtuple("TablesBundle", TABLES_FIELDS)
BUNDLES = {"state": StateBundle, "model": ModelBundle, "tables": TablesBundle, "window": WindowBundle}
for _kind, _cls in BUNDLES.items():
    if tuple(b.name for b in BUFFERS if b.bundle == _kind) != _cls._fields:
        raise ImportError(f"fa_gpu.schema: the {_kind} buffers of BUFFERS must be, in order, "
                          f"kernels.columns' {_cls._fields}")
#: learning-rate columns of ``lr``
LR_NAMES = ("lr_pA", "lr_pB", "lr_pD")


def present(cfg) -> dict:
    """``{when key: bool}``: which optional buffers this configuration holds."""
    info = cfg.use_param_info_gain
    return {"pA": cfg.has_pA, "pB": cfg.has_pB, "pD": cfg.has_pD,
            "wA": info and cfg.has_pA, "wB": info and cfg.has_pB,
            "window": cfg.sequence or cfg.categorical_obs, "seq": cfg.sequence}


#: scratch rows are padded to this many bytes past their end, so two threads' rows never share a
#: cache line (false sharing halved the 2-thread speed-up at N=100k)
CACHE_LINE = 64


def widths(cfg, lay, pad_work: bool = True, scratch: int | None = None) -> dict:
    """Row widths by key (elements); ``pad_work``: pad the scratch rows (row-major scratch, one
    row per CPU thread; the GPU's column-major scratch needs none); ``scratch``: the backend's
    scratch per row (default ``lay.scratch_size``, the one-agent-per-thread kernel's)."""
    sz = lay.sizes
    scratch = lay.scratch_size if scratch is None else scratch
    if pad_work:  # whole cache lines, and one more past the end
        line = CACHE_LINE // cfg.dtype.itemsize
        scratch = -(-scratch // line) * line + line
    return dict(A=sz["A"], H=sz["H"], C=sz["C"], B=sz["B"], S=sz["S"], E=sz["E"],
                M=cfg.num_modalities, F=cfg.num_factors, P=cfg.num_policies, lr=len(LR_NAMES),
                scratch=scratch, OW=cfg.window * sum(cfg.num_obs), SW=cfg.window * sz["S"],
                AW=(cfg.window - 1) * cfg.num_factors)


@dataclass(frozen=True)
class Spec:
    """Shapes and dtypes of one engine's buffers: ``{name: (shape, dtype, is_present)}``; absent
    optional buffers get a ``(1, 1)`` placeholder (kernels take an argument either way)."""

    entries: dict
    per_agent: dict  # sharing key -> bool

    def nbytes(self) -> int:
        return sum(int(np.prod(sh)) * np.dtype(dt).itemsize for sh, dt, _ in self.entries.values())


def shapes(cfg, lay, per_agent: dict, work_rows: int, pad_work: bool = True,
           scratch: int | None = None) -> Spec:
    """The :class:`Spec` of an engine with configuration ``cfg`` and layout ``lay``;
    ``per_agent``: sharing key (A..E) -> bool; ``work_rows``, ``pad_work``, ``scratch``: the
    backend's scratch rows, whether to pad them and their width (:func:`widths`)."""
    n, w, have = cfg.n_agents, widths(cfg, lay, pad_work, scratch), present(cfg)
    out = {}
    for b in BUFFERS:
        dt = cfg.dtype if b.dtype == "float" else np.dtype(np.int64)
        if b.rows == "table":
            out[b.name] = (tuple(_table(lay, cfg, b.name).shape), dt, True)
            continue
        if b.when is not None and not have[b.when]:
            out[b.name] = ((1, 1), dt, False)
            continue
        rows = {"agents": n, "threads": work_rows}.get(b.rows)
        if rows is None:
            rows = n if per_agent[b.rows] else 1
        shape = (rows,) if b.width is None else (rows, max(w[b.width], 1))
        out[b.name] = (shape, dt, True)
    return Spec(out, dict(per_agent))


def _table(lay, cfg, name):
    """A layout table as the kernels read it (host int64)."""
    if name == "policies":
        return lay.policies.reshape(cfg.num_policies, -1)  # (P, T * F)
    if name == "opts":
        return options(cfg)
    return getattr(lay, name)


def options(cfg) -> np.ndarray:
    """int64 ``opts`` vector of a config (see ``kernels.columns.OPT_*``)."""
    o = np.zeros(col.N_OPTS, dtype=np.int64)
    o[col.OPT_NUM_ITER] = cfg.num_iter
    o[col.OPT_UTILITY] = cfg.use_utility
    o[col.OPT_STATE_INFO] = cfg.use_states_info_gain
    have = present(cfg)
    o[col.OPT_WA], o[col.OPT_WB] = have["wA"], have["wB"]
    o[col.OPT_STOCHASTIC] = cfg.action_selection == "stochastic"
    o[col.OPT_MARGINAL] = cfg.sampling_mode == "marginal"
    o[col.OPT_LEARN_A], o[col.OPT_LEARN_B], o[col.OPT_LEARN_D] = cfg.learn_A, cfg.learn_B, cfg.learn_D
    o[col.OPT_AGENT_OFFSET] = cfg.agent_offset
    o[col.OPT_ALGO] = {"fpi": col.ALGO_FPI, "mmp": col.ALGO_MMP, "vmp": col.ALGO_VMP}[cfg.inference_algo]
    o[col.OPT_HORIZON] = cfg.window
    o[col.OPT_CATEGORICAL] = cfg.categorical_obs
    return o


def agent_rows(name: str, per_agent: dict) -> bool:
    """Whether buffer ``name`` has one row per agent (its leading axis is the agent), given the
    sharing of the model groups (``per_agent``: key A..E -> bool)."""
    rows = BY_NAME[name].rows
    return rows == "agents" or bool(per_agent.get(rows, False))


def allocate(be, spec: Spec, cfg, lay) -> dict:
    """``{name: backend array}``: zeros, tables filled in; ``work`` uninitialized (the backend's
    own memory order, see ``backend.empty_work``).

    A backend with ``agent_innermost`` set (cuda) gets its per-agent ``(N, L)`` buffers in
    column-major (Fortran) order: agent ``n``'s element ``k`` sits next to agent ``n + 1``'s, so
    the 32 threads of a warp (consecutive agents) read and write one contiguous segment, and the
    kernel, typed with Fortran-layout arrays, knows that stride at compile time. Shapes, views,
    cohort slices and checkpoints are those of the row-major buffers; only the strides differ."""
    xp, out = be.xp, {}
    innermost = be.agent_innermost
    for name, (shape, dt, ok) in spec.entries.items():
        if BY_NAME[name].rows == "table":
            out[name] = be.asarray(_table(lay, cfg, name), dtype=np.int64)
        elif name == "work":
            out[name] = be.empty_work(shape, dt)
        else:
            order = "F" if innermost and ok and len(shape) == 2 and agent_rows(name, spec.per_agent) else "C"
            out[name] = xp.zeros(shape, dtype=dt, order=order)
    return out


# -- pymdp-layout views ----------------------------------------------------------------------
def _view_shapes(kind, cfg, lay):
    """(shapes, offsets, action_first) of the segments of a view kind."""
    S = cfg.num_states
    a = [(o, *[S[d] for d in deps]) for o, deps in zip(cfg.num_obs, cfg.A_dependencies)]
    if kind == "A":
        return a, lay.A_meta[:, A_OFF], False
    if kind == "H":
        return [sh[1:] for sh in a], lay.A_meta[:, H_OFF], False
    if kind == "C":
        return [(o,) for o in cfg.num_obs], lay.A_meta[:, C_OFF], False
    if kind == "B":
        return ([(S[f], *[S[d] for d in deps], u) for f, (deps, u) in
                 enumerate(zip(cfg.B_dependencies, cfg.num_controls))], lay.B_meta[:, B_OFF], True)
    if kind == "S":
        return [(s,) for s in S], lay.S_off[:-1], False
    H = cfg.window  # windows: factor (modality) major, each (H, S_f) ((H, O_m)) slot-major
    if kind == "SW":
        return [(H, s) for s in S], H * lay.S_off[:-1], False
    if kind == "OW":
        return [(H, o) for o in cfg.num_obs], H * np.concatenate([[0], np.cumsum(cfg.num_obs)[:-1]]), False
    raise ValueError(kind)


def _segments(buf, shapes_, offsets, per_agent: bool, action_first: bool) -> list:
    """Views into ``buf`` (R, L) in pymdp layout; ``action_first`` segments are stored
    (U, S_f, *deps) and shown as (S_f, *deps, U)."""
    out = []
    for shape, off in zip(shapes_, offsets):
        size = int(np.prod(shape))
        stored = (shape[-1],) + tuple(shape[:-1]) if action_first else tuple(shape)
        seg = buf[:, off:off + size] if per_agent else buf[0, off:off + size]
        v = seg.reshape(((buf.shape[0],) if per_agent else ()) + stored)
        if action_first:
            first = 1 if per_agent else 0
            axes = list(range(v.ndim))
            v = v.transpose(axes[:first] + axes[first + 1:] + [first])
        out.append(v)
    return out


def _views(b: Buffer, buf, cfg, lay, per_agent: dict) -> dict:
    """``{attribute: view}`` of one buffer: lists of pymdp-layout arrays (A, B, qs, ...), ``E``
    as ``(P,)`` or ``(N, P)``, the three learning-rate columns, or the buffer itself."""
    if b.views is None:
        return {b.name: buf}
    if b.views == "lr":
        return {k: buf[:, i] for i, k in enumerate(LR_NAMES)}
    per = True if b.rows == "agents" else per_agent[b.rows]
    if b.views == "E":
        return {b.name: buf if per else buf[0]}
    shapes_, offsets, action_first = _view_shapes(b.views, cfg, lay)
    return {b.name: _segments(buf, shapes_, offsets, per, action_first)}


class Bound:
    """Buffers of an engine by name. ``packed[name]`` is the stored array (``(R, L)``, or
    ``(N,)`` for per-agent scalars); attribute ``name`` is its pymdp-layout view (list of arrays
    for the model and beliefs; None for an absent optional buffer); ``per_agent[key]`` (key A,
    B, C, D, E) says whether that group has one row per agent."""

    def __init__(self, packed: dict, spec: Spec, cfg, lay):
        self.packed, self.spec = packed, spec
        self._cfg, self._lay = cfg, lay
        self.cache = {}  # values derived from these buffers once (kernel arguments)
        for name, buf in packed.items():
            if spec.entries[name][2]:
                self.__dict__.update(_views(BY_NAME[name], buf, cfg, lay, spec.per_agent))
            else:
                self.__dict__[name] = None

    @property
    def per_agent(self) -> dict:
        """Sharing key (A, B, C, D, E) -> whether that group has one row per agent."""
        return self.spec.per_agent

    def rows_of(self, name: str) -> bool:
        """Whether buffer ``name`` has one row per agent (its leading axis is the agent)."""
        return agent_rows(name, self.per_agent)

    def cohort(self, lo: int, hi: int) -> "Bound":
        """Views of agents ``lo..hi-1``: per-agent buffers sliced (writes land in the engine's
        buffers), shared ones as they are."""
        sub = {k: (v[lo:hi] if self.rows_of(k) and self.spec.entries[k][2] else v)
               for k, v in self.packed.items()}
        entries = {k: ((hi - lo,) + sh[1:] if self.rows_of(k) and ok else sh, dt, ok)
                   for k, (sh, dt, ok) in self.spec.entries.items()}
        return Bound(sub, Spec(entries, self.per_agent), self._cfg, self._lay)

    def bundle(self, kind: str):
        """The kernel bundle ``kind`` (``state``, ``model``, ``tables``, ``window``) of these buffers."""
        cls = BUNDLES[kind]
        return cls(**{k: self.packed[k] for k in cls._fields})

    def kernel_args(self, seed: int, window: bool = False) -> tuple:
        """``(state, model, tables, seed, work)`` (``window``: then the ``window`` bundle): the
        fused kernels' arguments before the agent range, built once (the buffers are the same
        every step)."""
        key = "window_args" if window else "kernel_args"
        if key not in self.cache:
            args = (self.bundle("state"), self.bundle("model"), self.bundle("tables"), np.uint64(seed),
                    self.packed["work"])
            self.cache[key] = args + (self.bundle("window"),) if window else args
        return self.cache[key]


def checkpointed(spec: Spec) -> list:
    """Names of the buffers a checkpoint holds: all present ones except scratch and the layout
    tables (both rebuilt from the model)."""
    return [k for k, (_, _, ok) in spec.entries.items()
            if ok and BY_NAME[k].group not in ("scratch", "tables")]
