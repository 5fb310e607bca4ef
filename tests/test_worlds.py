"""Shared multi-agent worlds (`fa_gpu.envs.Foraging`, `SocialNetwork`): against slow per-agent
Python versions of themselves, invariants, checkpoints of the world state, error paths."""
from __future__ import annotations

import numpy as np
import pytest

import fa_gpu
from fa_gpu import envs, models, rng
from fa_gpu.envs.worlds import SITE_KEY


def u(seed, key, t, draw) -> float:
    return float(rng.uniform(seed, key, t, draw))


# -- slow, obviously correct versions ----------------------------------------------------------
class SlowForaging:
    """Foraging written agent by agent from its docstring."""

    def __init__(self, w: envs.Foraging):
        self.side, self.cap, self.high = w.side, w.capacity, w.high
        self.patches, self.rates = [int(c) for c in w.patch_cells], [float(r) for r in w.regrowth]
        self.noise, self.observe_position = w.position_noise, w.observe_position

    def reset(self, n, seed):
        S = self.side ** 2
        self.seed, self.t, self.n = seed, 0, n
        self.pos = [min(int(u(seed, i, 0, 0) * S), S - 1) for i in range(n)]
        self.food = {c: self.cap for c in self.patches}
        self.fed = [0] * n
        return self.observe()

    def step(self, actions):
        self.t += 1
        eaters = {}
        for i, a in enumerate(actions):
            if a == 5:
                eaters.setdefault(self.pos[i], []).append((u(self.seed, i, self.t, 1), i))
        self.fed = [0] * self.n
        for cell, group in eaters.items():
            units = self.food.get(cell, 0)
            for _, i in sorted(group)[:units]:
                self.fed[i] = 1
            if cell in self.food:
                self.food[cell] -= min(units, len(group))
        for i, a in enumerate(actions):
            r, c = divmod(self.pos[i], self.side)
            dr, dc = {0: (0, 0), 1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1), 5: (0, 0)}[a]
            if 0 <= r + dr < self.side and 0 <= c + dc < self.side:
                self.pos[i] = (r + dr) * self.side + c + dc
        for cell, rate in zip(self.patches, self.rates):
            gain = int(np.floor(rate)) + (u(self.seed, SITE_KEY - cell, self.t, 0) < rate - np.floor(rate))
            self.food[cell] = min(self.food[cell] + gain, self.cap)
        return self.observe()

    def observe(self):
        S, out = self.side ** 2, []
        for i, p in enumerate(self.pos):
            f = self.food.get(p, 0)
            level = 0 if f == 0 else (1 if f < self.high else 2)
            r, c = divmod(p, self.side)
            others = sum(1 for j, q in enumerate(self.pos) if j != i
                         and abs(q // self.side - r) + abs(q % self.side - c) <= 1)
            row = [level, min(others, 2), self.fed[i]]
            if self.observe_position:
                noisy = u(self.seed, i, self.t, 2) < self.noise
                row.append(min(int(u(self.seed, i, self.t, 3) * S), S - 1) if noisy else p)
            out.append(row)
        return np.array(out, dtype=np.int64)


class SlowSocial:
    """SocialNetwork written agent by agent from its docstring."""

    def __init__(self, w: envs.SocialNetwork):
        self.K, self.acc, self.vol = w.K, w.cue_accuracy, w.volatility
        indptr, indices = np.asarray(w.indptr), np.asarray(w.indices)
        self.rows = [list(indices[indptr[i]:indptr[i + 1]]) for i in range(len(indptr) - 1)]

    def reset(self, seed):
        self.seed, self.t = seed, 0
        self.truth = min(int(u(seed, SITE_KEY, 0, 0) * self.K), self.K - 1)
        return self.observe(None)

    def step(self, posts):
        self.t += 1
        if u(self.seed, SITE_KEY, self.t, 0) < self.vol:
            others = [k for k in range(self.K) if k != self.truth]
            self.truth = others[min(int(u(self.seed, SITE_KEY, self.t, 1) * (self.K - 1)), self.K - 2)]
        return self.observe(list(posts))

    def observe(self, posts):
        out = []
        for i, row in enumerate(self.rows):
            others = [k for k in range(self.K) if k != self.truth]
            cue = self.truth if u(self.seed, i, self.t, 0) < self.acc else \
                others[min(int(u(self.seed, i, self.t, 1) * (self.K - 1)), self.K - 2)]
            if posts is None or not row:
                out.append([cue, self.K, 2])
                continue
            j = row[min(int(u(self.seed, i, self.t, 2) * len(row)), len(row) - 1)]
            out.append([cue, posts[j], int(posts[j] != posts[i])])
        return np.array(out, dtype=np.int64)


def _random_graph(n, p, seed):
    """A directed random graph with some isolated nodes, as (indptr, indices)."""
    g = np.random.default_rng(seed)
    adj = (g.random((n, n)) < p) & ~np.eye(n, dtype=bool)
    adj[g.integers(n)] = False
    return np.concatenate([[0], np.cumsum(adj.sum(1))]), np.nonzero(adj)[1]


# -- Foraging ----------------------------------------------------------------------------------
@pytest.mark.parametrize("observe_position", [False, True])
def test_foraging_equals_slow_version_with_random_actions(observe_position):
    g = np.random.default_rng(1)
    w = envs.Foraging(5, patches=4, regrowth=[0.3, 0.7, 1.5, 2.0], capacity=3, seed=7,
                      observe_position=observe_position, position_noise=0.3)
    slow = SlowForaging(w)
    counts = {"a": 9, "b": 14}
    obs = w.reset(counts, seed=11)
    ref = slow.reset(23, 11)
    assert w.num_obs == ((3, 3, 2, 25) if observe_position else (3, 3, 2))
    np.testing.assert_array_equal(np.concatenate([obs["a"], obs["b"]]), ref)
    for t in range(40):
        # many eaters, so lotteries happen: cells run out of food
        a = np.where(g.random(23) < 0.5, 5, g.integers(0, 6, 23))
        obs = w.step({"a": a[:9, None], "b": np.stack([a[9:], g.integers(0, 3, 14)], axis=1)})
        ref = slow.step(a.tolist())
        np.testing.assert_array_equal(np.concatenate([obs["a"], obs["b"]]), ref, err_msg=f"step {t}")
    assert sum(slow.fed) > 0 and min(slow.food.values()) < 3  # food was eaten and ran short


def test_foraging_draws_do_not_depend_on_the_split_into_types():
    a = np.random.default_rng(2).integers(0, 6, (10, 30))
    ws = [envs.Foraging(6, 3, 0.5, 2, seed=3) for _ in range(2)]
    o1 = ws[0].reset({"x": 30})
    o2 = ws[1].reset({"p": 4, "q": 11, "r": 15})
    for t in range(10):
        o1 = ws[0].step({"x": a[t, :, None]})
        o2 = ws[1].step({"p": a[t, :4, None], "q": a[t, 4:15, None], "r": a[t, 15:, None]})
        np.testing.assert_array_equal(o1["x"], np.concatenate([o2["p"], o2["q"], o2["r"]]))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_foraging_with_engines_equals_slow_version(backend):
    w = envs.Foraging(6, patches=5, regrowth=0.6, capacity=4, seed=5)
    eng = fa_gpu.Engine(models.foraging(), 40, backend=backend, dtype="float64",
                        action_selection="stochastic", seed=3)
    slow = SlowForaging(w)
    obs, ref = w.reset(40), slow.reset(40, 5)
    for _ in range(15):
        np.testing.assert_array_equal(obs, ref)
        a = eng.step(obs)
        obs, ref = w.step(a), slow.step(a[:, 0].tolist())
    assert (np.asarray(eng.actions)[:, 0] == 5).any()  # the agents do eat


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_foraging_invariants(seed):
    g = np.random.default_rng(seed)
    side, cap = 7, 5
    w = envs.Foraging(side, patches=6, regrowth=g.random(6) * 3, capacity=cap, seed=seed)
    n = 150
    w.reset(n)
    patch = np.zeros(side * side, bool)
    patch[w.patch_cells] = True
    for _ in range(30):
        a = g.integers(0, 6, n)
        before_food, before_pos = w.food.copy(), w.positions.copy()
        obs = w.step(a[:, None])
        assert (w.food >= 0).all() and (w.food <= cap).all() and (w.food[~patch] == 0).all()
        assert w.occupancy().sum() == n and w.positions.shape == (n,)
        # fed agents ate in their own cell, at most the cell's units
        fed = obs[:, 2] == 1
        assert (a[fed] == 5).all()
        np.testing.assert_array_less(np.bincount(before_pos[fed], minlength=side**2), before_food + 1)
        r, c = w.positions // side, w.positions % side
        near = (np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None])) <= 1
        np.testing.assert_array_equal(obs[:, 1], np.minimum(near.sum(1) - 1, 2))
        f = w.food[w.positions]
        np.testing.assert_array_equal(obs[:, 0], np.where(f == 0, 0, np.where(f < w.high, 1, 2)))


def test_foraging_state_round_trip_and_bad_states():
    w = envs.Foraging(5, 3, 0.5, 3, seed=1)
    w.reset({"a": 10, "b": 5})
    g = np.random.default_rng(0)
    acts = [{"a": g.integers(0, 6, (10, 1)), "b": g.integers(0, 6, (5, 1))} for _ in range(8)]
    for a in acts[:4]:
        w.step(a)
    saved = w.state()
    first = [w.step(a) for a in acts[4:]]
    w.set_state(saved)
    again = [w.step(a) for a in acts[4:]]
    for x, y in zip(first, again):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    good = w.state()
    for change, match in [(lambda s: s.pop("food"), "missing 'food'"),
                          (lambda s: s.update(food=s["food"] + 10), "capacity"),
                          (lambda s: s.update(positions=s["positions"][:3]), "positions"),
                          (lambda s: s.update(positions=s["positions"].astype(float)), "dtype"),
                          (lambda s: s.update(counts=np.array([10, 0])), "positive"),
                          (lambda s: s.update(fed=np.full(15, 2)), "fed"),
                          (lambda s: s.update(t=np.array(-1)), "t")]:
        bad = {k: v.copy() for k, v in good.items()}
        change(bad)
        with pytest.raises(ValueError, match=match):
            w.set_state(bad)
        for k, v in w.state().items():  # a rejected state changed nothing
            np.testing.assert_array_equal(v, good[k])


def test_world_errors_leave_the_state_unchanged():
    w = envs.Foraging(4, 2, 0.5, 2, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        w.step(np.zeros((3, 1), int))
    w.reset({"a": 3, "b": 2})
    before = w.state()
    for acts, err, match in [
        (np.zeros((5, 1), int), ValueError, "one array per type"),
        ({"a": np.zeros((3, 1), int)}, ValueError, "one array per type"),
        ({"a": np.zeros((3, 1), int), "b": np.zeros((2,), int)}, ValueError, r"actions\['b'\] must have shape"),
        ({"a": np.zeros((3, 1)), "b": np.zeros((2, 1), int)}, TypeError, "integers"),
        ({"a": np.full((3, 1), 6), "b": np.zeros((2, 1), int)}, ValueError, r"actions\['a'\]\[0, 0\] is 6"),
    ]:
        with pytest.raises(err, match=match):
            w.step(acts)
        for k, v in w.state().items():
            np.testing.assert_array_equal(v, before[k])
    w.reset(4)
    with pytest.raises(TypeError, match="one actions array"):
        w.step({"agents": np.zeros((4, 1), int)})
    with pytest.raises(ValueError, match="counts"):
        w.reset({"a": 0})
    with pytest.raises(ValueError, match="n must be"):
        w.reset(0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(side=1), "side"), (dict(patches=0), "patches"), (dict(patches=[3, 3]), "distinct"),
    (dict(patches=[(0, 9)]), "row, col"), (dict(regrowth=-1.0), "regrowth"),
    (dict(regrowth=[1.0, 2.0]), "regrowth"), (dict(capacity=0), "capacity"),
    (dict(high=9), "high"), (dict(position_noise=2.0), "position_noise"), (dict(seed=-1), "seed")])
def test_foraging_bad_arguments(kwargs, match):
    args = dict(side=4, patches=3, regrowth=0.5, capacity=2, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        envs.Foraging(**args)


def test_foraging_patches_given_as_cells_and_pairs():
    a = envs.Foraging(5, patches=[(0, 1), (4, 4)], regrowth=[0.1, 0.9], capacity=2)
    b = envs.Foraging(5, patches=[1, 24], regrowth=[0.1, 0.9], capacity=2)
    np.testing.assert_array_equal(a.patch_cells, [1, 24])
    np.testing.assert_array_equal(b.patch_cells, [1, 24])


# -- models ------------------------------------------------------------------------------------
def test_foraging_and_social_models_are_valid_and_behave():
    m = models.foraging(position_outcomes=16)
    assert isinstance(m, fa_gpu.GenerativeModel)
    assert (m.num_states, m.num_obs, m.num_controls) == ([18], [3, 3, 2, 16], [6])
    np.testing.assert_allclose(m.B[0].sum(0), 1.0)
    # full cell, nobody around, not fed: the agent eats; an empty cell: it moves
    e = fa_gpu.Engine(models.foraging(), 2, backend="numpy", dtype="float64")
    a = e.step(np.array([[2, 0, 0], [0, 0, 0]]))
    assert a[0, 0] == 5 and a[1, 0] in (1, 2, 3, 4)
    s = models.social(3, volatility=0.1)
    assert (s.num_states, s.num_obs, s.num_controls) == ([3, 3], [3, 4, 3], [3, 1])
    for bad, match in [(dict(share=(0.5, 2.0, 0.1)), "share"), (dict(neighbour_food=(0.5, 0.5, 0.5)), "neighbour_food"),
                       (dict(position_outcomes=0), "position_outcomes"), (dict(obs_noise=-0.1), "obs_noise")]:
        with pytest.raises(ValueError, match=match):
            models.foraging(**bad)
    with pytest.raises(ValueError, match="num_states"):
        models.social(1)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_engine_run_on_a_single_type_world(backend):
    w = envs.Foraging(8, 4, 0.5, 4, seed=2)
    e = fa_gpu.Engine(models.foraging(), 64, backend=backend, action_selection="stochastic")
    r = e.run(w, 12, progress=False)
    assert r.steps == 12 and r.obs.shape == (64, 3) and w.t == 12
    sn = envs.SocialNetwork(envs.watts_strogatz(64, 4, 0.2, seed=1), seed=4)
    e = fa_gpu.Engine(models.social(), 64, backend=backend)
    e.run(sn, 6, progress=False)
    assert len(sn.history) == 6 and all(0 <= h[1] <= 1 and 0 <= h[2] <= 1 for h in sn.history)


# -- SocialNetwork -----------------------------------------------------------------------------
@pytest.mark.parametrize("K,vol", [(2, 0.0), (3, 0.3)])
def test_social_equals_slow_version(K, vol):
    g = np.random.default_rng(K)
    adj = _random_graph(30, 0.15, K)
    w = envs.SocialNetwork(adj, num_states=K, cue_accuracy=0.6, volatility=vol, seed=9)
    slow = SlowSocial(w)
    obs = w.reset({"a": 12, "b": 18})
    ref = slow.reset(9)
    truths = set()
    for t in range(25):
        np.testing.assert_array_equal(np.concatenate([obs["a"], obs["b"]]), ref, err_msg=f"step {t}")
        assert w.truth == slow.truth
        truths.add(w.truth)
        p = g.integers(0, K, 30)
        obs = w.step({"a": p[:12, None], "b": p[12:, None]})
        ref = slow.step(p)
    assert vol == 0 or len(truths) > 1


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_social_with_engine_equals_slow_version(backend):
    w = envs.SocialNetwork(envs.barabasi_albert(50, 2, seed=3), seed=2)
    e = fa_gpu.Engine(models.social(), 50, backend=backend, dtype="float64")
    slow = SlowSocial(w)
    obs, ref = w.reset(50), slow.reset(2)
    for _ in range(10):
        np.testing.assert_array_equal(obs, ref)
        a = e.step(obs)
        obs, ref = w.step(a), slow.step(a[:, 0])


@pytest.mark.parametrize("make", [lambda: envs.watts_strogatz(300, 6, 0.3, seed=5),
                                  lambda: envs.barabasi_albert(300, 3, seed=5),
                                  lambda: _random_graph(60, 0.05, 1)])
def test_sampled_neighbours_are_neighbours(make):
    adj = make()
    w = envs.SocialNetwork(adj, seed=1)
    indptr, indices = np.asarray(w.indptr), np.asarray(w.indices)
    w.reset(w.nodes)
    for _ in range(5):
        j = w.sample_neighbours()
        for i in range(w.nodes):
            row = indices[indptr[i]:indptr[i + 1]]
            assert (j[i] == -1) if row.size == 0 else (j[i] in row)
        w.step(np.zeros((w.nodes, 1), int))


def test_graph_constructors():
    ws = envs.watts_strogatz(500, 8, 0.2, seed=1)
    ba = envs.barabasi_albert(2000, 3, seed=1)
    for g in (ws, ba):
        d = g.toarray()
        assert (d == d.T).all() and (np.diag(d) == 0).all() and set(np.unique(d)) <= {0, 1}
    assert abs(ws.nnz - 500 * 8) < 0.02 * 500 * 8
    ring = envs.watts_strogatz(20, 4, 0.0).toarray()
    assert all(ring[i, (i + 1) % 20] and ring[i, (i + 2) % 20] and not ring[i, (i + 3) % 20] for i in range(20))
    deg = np.diff(ba.indptr)
    assert abs(ba.nnz - 2 * 2000 * 3) < 0.05 * 2 * 2000 * 3
    assert deg.max() > 10 * np.median(deg)  # heavy tail: hubs
    np.testing.assert_array_equal(envs.barabasi_albert(300, 2, seed=4).indices,
                                  envs.barabasi_albert(300, 2, seed=4).indices)
    with pytest.raises(ValueError, match="even"):
        envs.watts_strogatz(10, 3, 0.1)
    with pytest.raises(ValueError, match="m must"):
        envs.barabasi_albert(10, 0)


def test_posts_figures_from_counts_equal_the_one_hot_ones():
    from fa_gpu.envs.social import posts_consensus_polarization
    rng = np.random.default_rng(7)
    for K in (2, 3, 5):
        for n in (1, 7, 1000):
            a = rng.integers(0, K, size=n) if n > 1 else np.array([K - 1])
            got = posts_consensus_polarization(a, K)
            np.testing.assert_allclose(got, envs.consensus_polarization(np.eye(K)[a]), rtol=1e-12, atol=1e-12)


def test_consensus_polarization():
    eye = np.eye(2)
    assert envs.consensus_polarization(eye[[0, 0, 0]]) == (1.0, 0.0)
    assert envs.consensus_polarization(np.full((4, 2), 0.5))[1] == 0.0
    assert envs.consensus_polarization(eye[[0, 1, 0, 1]]) == (0.5, 1.0)
    c, p = envs.consensus_polarization(eye[[0, 1, 1, 1]])
    assert c == 0.75 and abs(p - 0.75) < 1e-12
    assert envs.consensus_polarization(np.eye(3)[[0, 1, 2]])[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        envs.consensus_polarization(np.ones(3))


def test_social_state_and_errors():
    w = envs.SocialNetwork(envs.watts_strogatz(20, 4, 0.1), num_states=3, volatility=0.2, seed=3)
    w.reset(20)
    g = np.random.default_rng(0)
    acts = [g.integers(0, 3, (20, 2)) for _ in range(6)]
    w.step(acts[0])
    saved = w.state()
    first = [w.step(a) for a in acts[1:]]
    w.set_state(saved)
    np.testing.assert_array_equal(np.stack(first), np.stack([w.step(a) for a in acts[1:]]))
    bad = dict(saved, posts=np.full(20, 3))
    with pytest.raises(ValueError, match="posts"):
        w.set_state(bad)
    with pytest.raises(ValueError, match="20 nodes"):
        w.reset(19)
    with pytest.raises(ValueError, match="square"):
        envs.SocialNetwork(envs.watts_strogatz(20, 4, 0.1)[:, :10])
    with pytest.raises(ValueError, match="indices"):
        envs.SocialNetwork((np.array([0, 1]), np.array([5])))
    with pytest.raises(TypeError, match="adjacency"):
        envs.SocialNetwork(np.eye(3))
