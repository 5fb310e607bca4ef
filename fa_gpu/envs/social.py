"""`SocialNetwork`: agents on a sparse graph inferring one hidden state from private cues and
their neighbours' posts; Watts-Strogatz and Barabasi-Albert graphs built vectorized (1e6 nodes)."""
from __future__ import annotations

import numpy as np

from .. import rng
from .worlds import World, array_module, check_int, check_real

__all__ = ["SocialNetwork", "watts_strogatz", "barabasi_albert", "consensus_polarization",
           "posts_consensus_polarization"]

_D_CUE, _D_CUE_OTHER, _D_NEIGHBOUR = 0, 1, 2       # agent draws
_D_TRUTH, _D_TRUTH_OTHER = 0, 1                    # draws of site 0 (the hidden state)


def consensus_polarization(q, xp=np) -> tuple[float, float]:
    """``(consensus, polarization)`` of beliefs ``q`` float ``(N, K)`` (rows: distributions over
    the K states, e.g. ``engine.qs[1]`` of :func:`fa_gpu.models.social`; one-hot rows for posts).

    - consensus: the share of agents whose belief's mode (lowest index among ties) is the most
      common mode; 1 when all agree.
    - polarization: the mean total-variation distance between each agent's belief and the
      population's mean belief, divided by its largest possible value ``1 - 1/K``: 0 when every
      agent holds the same belief (however confident), 1 when the agents split into K equal camps
      each certain of a different state; for K = 2 camps of shares a and 1 - a it is
      ``4 a (1 - a)``.
    """
    q = xp.asarray(q, dtype=xp.float64)
    if q.ndim != 2 or q.shape[0] < 1 or q.shape[1] < 2:
        raise ValueError(f"q must have shape (N, K) with N >= 1, K >= 2; got {tuple(q.shape)}")
    N, K = q.shape
    modes = xp.bincount(xp.argmax(q, axis=1), minlength=K)
    consensus = float(modes.max()) / N
    tv = 0.5 * xp.abs(q - q.mean(axis=0)).sum(axis=1)
    return consensus, float(tv.mean()) / (1.0 - 1.0 / K)


def posts_consensus_polarization(posts, K: int, xp=np) -> tuple[float, float]:
    """:func:`consensus_polarization` of the one-hot beliefs of ``posts`` int ``(N,)`` in
    ``[0, K)``, from the post counts alone (O(N), no ``(N, K)`` array): with shares ``m_k``, an
    agent posting k is ``1 - m_k`` from the mean in total variation, so polarization is
    ``(1 - sum m_k**2) / (1 - 1/K)``."""
    m = xp.bincount(xp.asarray(posts), minlength=K).astype(xp.float64) / posts.shape[0]
    return float(m.max()), float(1.0 - (m * m).sum()) / (1.0 - 1.0 / K)


def _csr(adjacency, xp):
    """(indptr, indices) int64 on xp from a SciPy/CuPy sparse matrix or an (indptr, indices) pair."""
    if isinstance(adjacency, tuple) and len(adjacency) == 2:
        indptr, indices = adjacency
        n = len(indptr) - 1
    else:
        if not hasattr(adjacency, "tocsr"):
            raise TypeError("adjacency must be a SciPy/CuPy sparse matrix or an (indptr, indices) pair, "
                            f"got {type(adjacency).__name__}")
        m = adjacency.tocsr()
        if m.shape[0] != m.shape[1]:
            raise ValueError(f"adjacency must be square, got shape {m.shape}")
        indptr, indices, n = m.indptr, m.indices, m.shape[0]
    indptr, indices = xp.asarray(indptr).astype(xp.int64), xp.asarray(indices).astype(xp.int64)
    if n < 1 or indptr.ndim != 1 or indices.ndim != 1:
        raise ValueError("adjacency must have at least one node, and 1-D indptr and indices")
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.size or bool((xp.diff(indptr) < 0).any()):
        raise ValueError(f"adjacency indptr must rise from 0 to nnz={indices.size}")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ValueError(f"adjacency indices must be nodes in [0, {n})")
    return indptr, indices


class SocialNetwork(World):
    """N agents on the nodes of a graph (node i: global agent index i), one hidden state.

    Parameters
    ----------
    adjacency : SciPy or CuPy sparse matrix ``(N, N)``, or ``(indptr, indices)``
        Row i lists the neighbours agent i listens to (use a symmetric matrix for an undirected
        graph; see :func:`watts_strogatz`, :func:`barabasi_albert`). Values are ignored.
    num_states : int >= 2
        K, the hidden states (and the things an agent can post).
    cue_accuracy : float
        Probability that an agent's private cue is the true state.
    volatility : float
        Probability per step that the hidden state jumps to a uniformly random other state.
    seed : int
    xp : "numpy", "cupy" or an array module

    The hidden state is drawn at reset, uniformly (site draw ``(seed, SITE_KEY, 0, 0)``). One
    step: agent i's column-0 action is its post ``p_i`` in ``[0, K)``; the hidden state may
    jump; then every agent observes (int64 ``(N, 3)``):

    - 0 cue: the true state with probability ``cue_accuracy``, else a uniformly random other
      state (draws 0 and 1 of the agent);
    - 1 the post of one neighbour ``j``, drawn uniformly from row i (draw 2:
      ``j = indices[indptr[i] + floor(u * deg_i)]``), made this step; K when nothing was
      posted (after reset) or i has no neighbours;
    - 2 agreement: 0 when ``p_j == p_i``, 1 when not, 2 when there is no post.

    ``history`` holds ``(t, consensus, polarization, accuracy)`` of the posts of every step
    (:func:`consensus_polarization` of one-hot posts; accuracy: share posting the true state).
    """

    def __init__(self, adjacency, *, num_states: int = 2, cue_accuracy: float = 0.7,
                 volatility: float = 0.0, seed: int = 0, xp="numpy"):
        super().__init__(seed, xp)
        self.indptr, self.indices = _csr(adjacency, self.xp)
        self.nodes = int(self.indptr.size - 1)
        self.K = check_int(num_states, "num_states", 2)
        self.cue_accuracy = check_real(cue_accuracy, "cue_accuracy", 0.0, 1.0)
        self.volatility = check_real(volatility, "volatility", 0.0, 1.0)
        self.num_obs = (self.K, self.K + 1, 3)
        self.num_actions = self.K
        self.degree = self.xp.diff(self.indptr)
        self.truth = 0
        self.posts = None
        self.history: list = []

    def _reset(self, n: int):
        if n != self.nodes:
            raise ValueError(f"counts must add up to the graph's {self.nodes} nodes, got {n}")
        self.truth = min(int(float(self.site_uniform([0], _D_TRUTH)[0]) * self.K), self.K - 1)
        self.posts = None
        self.history = []
        return self._observe(None)

    def _step(self, a):
        xp, K = self.xp, self.K
        jump = float(self.site_uniform([0], _D_TRUTH)[0]) < self.volatility
        if jump:
            r = min(int(float(self.site_uniform([0], _D_TRUTH_OTHER)[0]) * (K - 1)), K - 2)
            self.truth = r + (r >= self.truth)
        self.posts = a
        obs = self._observe(a)
        c, p = posts_consensus_polarization(a, K, xp)
        self.history.append((self.t, c, p, float((a == self.truth).mean())))
        return obs

    def _other_state(self, base, draw):
        """A uniformly random state other than ``base``, per agent (its draw ``draw``)."""
        xp, K = self.xp, self.K
        r = xp.minimum((self.agent_uniform(draw) * (K - 1)).astype(xp.int64), K - 2)
        return r + (r >= base)

    def _observe(self, posts):
        xp, K, n = self.xp, self.K, self.nodes
        correct = self.agent_uniform(_D_CUE) < self.cue_accuracy
        cue = xp.where(correct, self.truth, self._other_state(self.truth, _D_CUE_OTHER))
        if posts is None:
            post = xp.full(n, K, dtype=xp.int64)
            agree = xp.full(n, 2, dtype=xp.int64)
        else:
            j = self.sample_neighbours()
            has = j >= 0
            post = xp.where(has, posts[xp.maximum(j, 0)], K)
            agree = xp.where(has, (post != posts).astype(xp.int64), 2)
        return xp.stack([cue.astype(xp.int64), post, agree], axis=1)

    def sample_neighbours(self):
        """The neighbour each agent hears at step ``t``: int64 ``(N,)``, -1 for no neighbours."""
        xp, deg = self.xp, self.degree
        u = self.agent_uniform(_D_NEIGHBOUR)
        k = xp.minimum((u * deg).astype(xp.int64), xp.maximum(deg - 1, 0))
        pos = xp.minimum(self.indptr[:-1] + k, max(self.indices.size - 1, 0))
        return xp.where(deg > 0, self.indices[pos] if self.indices.size else -1, -1)

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self) -> dict:
        out = {"truth": np.array(self.truth, dtype=np.int64), "has_posts": np.array(self.posts is not None)}
        out["posts"] = np.zeros(self.nodes, np.int64) if self.posts is None else self.posts
        return out

    def _set_state(self, state: dict, n: int):
        if n != self.nodes:
            raise ValueError(f"state['counts'] must add up to the graph's {self.nodes} nodes, got {n}")
        truth = int(self._field(state, "truth", (), "iu"))
        has = bool(self._field(state, "has_posts", (), "b"))
        posts = self._field(state, "posts", (n,), "iu")
        if not 0 <= truth < self.K:
            raise ValueError(f"state['truth'] must be in [0, {self.K}), got {truth}")
        if ((posts < 0) | (posts >= self.K)).any():
            raise ValueError(f"state['posts'] must be in [0, {self.K})")

        def apply():
            self.truth = truth
            self.posts = self.xp.asarray(posts, dtype=self.xp.int64) if has else None
            self.history = []
        return apply


# -- graphs ----------------------------------------------------------------------------------------
def _symmetric_csr(src, dst, n: int, xp):
    """Undirected simple graph from edge lists (self-loops dropped, duplicates merged) as a
    SciPy ``csr_array`` (NumPy) or ``cupyx.scipy.sparse.csr_matrix`` (CuPy), float32 ones."""
    keep = src != dst
    src, dst = src[keep], dst[keep]
    key = xp.sort(xp.concatenate([src * n + dst, dst * n + src]))
    # a sort and a shift, not xp.unique: NumPy 2's hash-based unique is 10x slower here
    key = key[xp.concatenate([xp.ones(min(key.size, 1), dtype=bool), key[1:] != key[:-1]])]
    rows, cols = key // n, key % n
    indptr = xp.zeros(n + 1, dtype=xp.int64)
    indptr[1:] = xp.cumsum(xp.bincount(rows, minlength=n))
    data = xp.ones(cols.size, dtype=xp.float32)
    if xp is np:
        from scipy.sparse import csr_array
        return csr_array((data, cols, indptr), shape=(n, n))
    from cupyx.scipy.sparse import csr_matrix
    return csr_matrix((data, cols, indptr), shape=(n, n))


def watts_strogatz(n: int, k: int, p: float, seed: int = 0, xp="numpy"):
    """Watts-Strogatz small world on ``n`` nodes: a ring where each node links to its ``k // 2``
    nearest nodes on each side, each such edge ``(i, i + d)`` rewired with probability ``p`` to
    ``(i, j)`` with j uniform among the other nodes (draws ``(seed, edge, 0, 0|1)``, edge
    ``i * (k // 2) + d - 1``). Rewired duplicates merge, so a few edges may be lost.
    Returns a symmetric CSR matrix ``(n, n)`` (SciPy on NumPy, CuPy sparse on CuPy)."""
    xp = array_module(xp)
    n, k = check_int(n, "n", 3), check_int(k, "k", 2)
    if k >= n or k % 2:
        raise ValueError(f"k must be even and below n={n}, got {k}")
    p = check_real(p, "p", 0.0, 1.0)
    half = k // 2
    edge = xp.arange(n * half, dtype=xp.int64)
    src, d = edge // half, edge % half + 1
    dst = (src + d) % n
    rewire = rng.uniform(seed, edge.astype(xp.uint64), 0, 0, xp) < p
    other = xp.minimum((rng.uniform(seed, edge.astype(xp.uint64), 0, 1, xp) * (n - 1)).astype(xp.int64), n - 2)
    dst = xp.where(rewire, (src + 1 + other) % n, dst)
    return _symmetric_csr(src, dst, n, xp)


def barabasi_albert(n: int, m: int, seed: int = 0, xp="numpy"):
    """Barabasi-Albert preferential attachment on ``n`` nodes, ``m`` edges per node, by the
    linear-time copy model of Batagelj and Brandes (2005), vectorized: edge ``e`` (node
    ``e // m``) writes its source to slot ``2e`` of the endpoint list and copies slot ``r_e``,
    uniform in ``[0, 2e]`` (draw ``(seed, e, 0, 0)``), into slot ``2e + 1``, so a node is chosen
    with probability proportional to its degree. Copies of copies are resolved by pointer
    jumping (O(log n) passes). Self-loops are dropped and duplicates merged, so the first nodes
    (and some later ones) have fewer than m edges. Returns a symmetric CSR matrix ``(n, n)``."""
    xp = array_module(xp)
    n, m = check_int(n, "n", 2), check_int(m, "m", 1)
    E = n * m
    e = xp.arange(E, dtype=xp.int64)
    r = xp.minimum((rng.uniform(seed, e.astype(xp.uint64), 0, 0, xp) * (2 * e + 1)).astype(xp.int64), 2 * e)
    # slot 2e holds node e // m; slot 2e + 1 copies slot r_e < 2e + 1. Follow odd slots back.
    target = r.copy()
    todo = xp.flatnonzero(target % 2 == 1)
    while todo.size:  # about half of the copies land on a copy again: the set shrinks geometrically
        target[todo] = r[(target[todo] - 1) // 2]
        todo = todo[target[todo] % 2 == 1]
    return _symmetric_csr(e // m, (target // 2) // m, n, xp)
