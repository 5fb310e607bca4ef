"""The integer tables of one model's packed layout: every parameter group and every belief set
lives in one 2-D buffer ``(R, L)`` (R = N rows when per-agent, 1 row when shared; declared in
:mod:`fa_gpu.schema`), compiled kernels find each modality's and factor's segment in it through
these tables, and the reference reads pymdp-layout views of the same memory.

Packed order inside a row:
  A, pA, wA, logA : modality m at ``A_OFF``: ``(O_m, J_m)`` C-order, J_m = prod S_deps
  H_A             : modality m at ``H_OFF``: ``(J_m,)``
  C               : modality m at ``C_OFF``: ``(O_m,)``
  B, pB, wB       : factor f at ``B_OFF``: ``(U_f, S_f, J_f)`` C-order (action first, so one
                    action's matrix is contiguous)
  D, pD, beliefs  : factor f at ``S_OFF[f]``: ``(S_f,)``
  E               : ``(P,)``
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.columns import (A_COLS, A_J, A_O, A_OFF, B_COLS, B_J, B_OFF, B_S, B_U,  # noqa: F401 (re-exported)
                              C_OFF, H_OFF, LANE_STEP, MAX_LANES, TILE_BYTES, TILE_LANES, TILE_ROWS)

#: largest block of the window sweep's per-lane transition matrices (bytes, counted at the
#: narrowest tile, LANE_STEP lanes, 8 bytes a value; the tile's lanes are sized afterwards with
#: the block included); a larger model's sweep reads B itself, once per action present in a tile
SEL_MAX_BYTES = 512 * 1024


@dataclass
class Layout:
    """Integer tables describing one model's packed layout (host NumPy, int64)."""

    S_off: np.ndarray  # (F+1,) offsets of factors in a belief row
    A_meta: np.ndarray  # (M, A_COLS) see A_* columns; A_SP = offset in sparse or -1
    A_deps: np.ndarray  # (nnz, 2): (factor, stride of its index inside J_m)
    B_meta: np.ndarray  # (F, B_COLS) see B_* columns; B_NEXT = offset in B_next or -1
    B_deps: np.ndarray  # (nnz, 2)
    B_next: np.ndarray  # next-state index of one-hot B columns, (U_f, J_f) per one-hot factor
    sparse: np.ndarray  # product plans of shared A and B blocks (see product_plan)
    policies: np.ndarray  # (P, T, F)
    branch: np.ndarray  # (P,) first time step where policy p differs from policy p-1
    sizes: dict  # buffer widths: "A", "H", "C", "B", "S", "E"; "LL": summed log-likelihoods
    itemsize: int = 4  # bytes of the engine's float dtype (sizes the CPU kernel's tiles)
    window: int = 0  # steps of the fused kernel's window sweep (mmp, vmp, categorical obs); 0: none
    lane_matrices: bool = True  # the window sweep may copy each lane's transition matrices (window_sel_rows)

    @property
    def maxima(self) -> tuple[int, int, int]:
        """(O_max, U_max, J_max): the largest outcome count, action count and joint-state count
        (over A and B dependencies)."""
        return (int(self.A_meta[:, A_O].max()), int(self.B_meta[:, B_U].max()),
                int(max(self.A_meta[:, A_J].max(), self.B_meta[:, B_J].max())))

    @property
    def scratch_size(self) -> int:
        """Per-thread scratch a fused step needs (elements)."""
        S, T = self.sizes["S"], self.policies.shape[1]
        O_max, U_max, J_max = self.maxima
        return (T + 1) * S + (T + 1) + max(3 * S + self.sizes["LL"], O_max + 1 + J_max, U_max)

    @property
    def tile(self) -> np.ndarray:
        """(TILE_COLS,) int64 row offsets of the agent-lanes kernel's tile, in
        ``kernels.columns.TILE_*`` order, then its lanes (a layout table the kernels read)."""
        S, T, P = self.sizes["S"], self.policies.shape[1], self.policies.shape[0]
        O_max, _, J_max = self.maxima
        H, F = self.window, self.B_meta.shape[0]
        S_max = int(np.diff(self.S_off).max())
        win = (H * S, H * S, H * self.sizes["LL"], max(H - 1, 0) * F, 3 * S_max, 3,
               self.window_sel_rows) if H else (0,) * 7
        rows = ((T + 1) * S, T + 1, O_max + 1, J_max, 1, S, S, S, self.sizes["LL"], P, P, 4) + win
        offsets = np.concatenate([[0], np.cumsum(rows)])
        lanes = LANE_STEP * (TILE_BYTES // (int(offsets[-1]) * self.itemsize * LANE_STEP))
        return np.append(offsets, min(MAX_LANES, max(LANE_STEP, lanes))).astype(np.int64)

    @property
    def lanes(self) -> int:
        """Agents per tile of the agent-lanes CPU kernel: the most (a multiple of ``LANE_STEP``,
        at most ``MAX_LANES``) whose tile fits in ``TILE_BYTES``, and at least ``LANE_STEP``."""
        return int(self.tile[TILE_LANES])

    @property
    def window_sel_rows(self) -> int:
        """Tile rows of the window sweep's per-lane transition matrices (each edge of the window,
        each factor: the matrix of the action taken and its parent-normalized twin, 2 S_f J_f
        rows), or 0 when they would exceed :data:`SEL_MAX_BYTES` or ``lane_matrices`` is off (the
        sweep then takes each action's product from B and selects per lane: for a tile of one
        lane, the CUDA kernel's, that is the lane's own product, with no copy)."""
        if self.window < 2 or not self.lane_matrices:
            return 0
        rows = (self.window - 1) * 2 * int(np.sum(self.B_meta[:, B_S] * self.B_meta[:, B_J]))
        return rows if rows * LANE_STEP * 8 <= SEL_MAX_BYTES else 0

    @property
    def lane_scratch_size(self) -> int:
        """Per-thread scratch of the agent-lanes CPU kernel (elements): its tile (``TILE_ROWS``
        rows of ``lanes``), then the per-agent tail's scratch (joint weights or action marginals)."""
        _, U_max, J_max = self.maxima
        return int(self.tile[TILE_ROWS]) * self.lanes + max(J_max, U_max)


def _dep_table(deps_list, num_states):
    rows, lo_hi, J = [], [], []
    for deps in deps_list:
        lo = len(rows)
        stride = 1
        for d in reversed(deps):  # last dependency varies fastest (C order)
            rows.append((d, stride))
            stride *= num_states[d]
        rows[lo:] = rows[lo:][::-1]
        lo_hi.append((lo, len(rows)))
        J.append(stride)
    return np.array(rows, dtype=np.int64).reshape(-1, 2), lo_hi, J


#: a plan is kept when it costs at most this fraction of the dense product (row products)
PLAN_GAIN = 0.6


def product_plan(M: np.ndarray) -> list | None:
    """The product plan of a shared block ``M`` ``(R, J)`` (``kernels.columns``, A_SP): each
    column's base is its smallest entry when that is positive and met at least twice (a noisy
    identity's ``noise / S``), else 0; ``M x`` is then ``base . x`` plus, per row, the entries
    that differ from their column's base. All terms are non-negative (M >= 0, entries >= base),
    so nothing cancels. None when the plan would not cost less than ``PLAN_GAIN`` of the dense
    product (a dense random matrix; the dense product skips all-zero quadruples of rows), or M
    has a negative entry."""
    M = np.asarray(M, dtype=np.float64)
    if M.size == 0 or (M < 0).any():
        return None
    R4 = M.shape[0] // 4 * 4
    dense = 4 * int(np.any(M[:R4].reshape(-1, 4, M.shape[1]) != 0, axis=1).sum()) + np.count_nonzero(M[R4:])
    low = M.min(axis=0)
    based = (low > 0) & ((M == low).sum(axis=0) >= 2)
    base_row = np.where(based, np.argmin(M, axis=0), -1)
    dev = M != np.where(based, low, 0.0)
    cost = int(based.sum()) + (M.shape[0] if based.any() else 0) + int(dev.sum())
    if cost > PLAN_GAIN * dense:
        return None
    cols = np.flatnonzero(based)
    plan = [len(cols)] + np.column_stack([cols, base_row[cols]]).ravel().tolist()
    plan += np.concatenate([[0], np.cumsum(dev.sum(axis=1))]).tolist()
    rows, js = np.nonzero(dev)  # row-major: each row's entries together
    return plan + np.column_stack([js, base_row[js]]).ravel().tolist()


def build_layout(model, B_onehot_ok: bool = True, itemsize: int = 4, window: int = 0,
                 A_plans_ok: bool = True, lane_matrices: bool = True) -> Layout:
    """Tables for ``model``; ``B_onehot_ok`` allows the one-hot transition shortcut and B's
    product plans (shared B that is never learned); ``A_plans_ok`` allows A's product plans (A
    shared by all agents, so never learned: a learned A has one row per agent, one row too when
    N is 1, and the plan would describe the A it started from); ``itemsize``: bytes of the
    engine's float dtype; ``window``: steps of the fused kernel's window sweep (the engine's
    ``Config.window`` for mmp, vmp and categorical observations; 0 for index-observation fpi);
    ``lane_matrices``: see :attr:`Layout.window_sel_rows` (the backend's ``lane_matrices``)."""
    S = model.num_states
    S_off = np.concatenate([[0], np.cumsum(S)]).astype(np.int64)
    A_deps, A_lh, A_Js = _dep_table(model.A_dependencies, S)
    B_deps, B_lh, B_Js = _dep_table(model.B_dependencies, S)
    A_meta = np.zeros((model.num_modalities, A_COLS), dtype=np.int64)
    a_off = h_off = c_off = ll_off = 0
    leads = {}  # dependency tuple -> (first modality, its A_LL offset)
    sparse = []  # product plans, appended as found

    def add_plan(M):
        plan = product_plan(M)
        if plan is None:
            return -1
        sparse.extend(plan)
        return len(sparse) - len(plan)

    for m, (o, deps) in enumerate(zip(model.num_obs, model.A_dependencies)):
        lead, ll = leads.setdefault(tuple(deps), (m, ll_off))
        if lead == m:
            ll_off += A_Js[m]
        shared = A_plans_ok and model.is_shared(f"A[{m}]")
        sp = add_plan(np.asarray(model.A[m]).reshape(o, A_Js[m])) if shared else -1
        A_meta[m] = (o, a_off, h_off, c_off, *A_lh[m], A_Js[m], lead, ll, sp)
        a_off, h_off, c_off = a_off + o * A_Js[m], h_off + A_Js[m], c_off + o
    B_meta = np.zeros((model.num_factors, B_COLS), dtype=np.int64)
    nexts, b_off, n_off = [], 0, 0
    for f, (s, u) in enumerate(zip(S, model.num_controls)):
        nxt = sp = -1
        if B_onehot_ok and model.is_shared(f"B[{f}]"):
            b = np.moveaxis(np.asarray(model.B[f]), -1, 0).reshape(u, s, B_Js[f])  # (U, S_f, J)
            if np.all((b == 0) | (b == 1)):
                nexts.append(np.argmax(b, axis=1).ravel())  # (U*J,)
                nxt, n_off = n_off, n_off + u * B_Js[f]
            else:
                plans = [add_plan(b[a]) for a in range(u)]
                if max(plans) >= 0:
                    sp = len(sparse)
                    sparse.extend(plans)
        B_meta[f] = (s, u, b_off, *B_lh[f], B_Js[f], nxt, sp)
        b_off += u * s * B_Js[f]
    pol = np.ascontiguousarray(model.policies, dtype=np.int64)
    branch = np.zeros(len(pol), dtype=np.int64)
    for p in range(1, len(pol)):
        diff = np.flatnonzero(np.any(pol[p] != pol[p - 1], axis=1))
        branch[p] = diff[0] if len(diff) else pol.shape[1]
    return Layout(
        S_off=S_off, A_meta=A_meta, A_deps=A_deps, B_meta=B_meta, B_deps=B_deps,
        B_next=np.concatenate(nexts).astype(np.int64) if nexts else np.zeros(1, dtype=np.int64),
        sparse=np.asarray(sparse or [0], dtype=np.int64),
        policies=pol, branch=branch, window=int(window), lane_matrices=bool(lane_matrices),
        sizes=dict(A=a_off, H=h_off, C=c_off, B=b_off, S=int(S_off[-1]), E=len(pol), LL=ll_off),
        itemsize=int(itemsize))
