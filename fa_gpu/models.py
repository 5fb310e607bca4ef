"""Ready-made generative models: a noisy grid world, the classic T-maze, and the agents of the
shared worlds (:func:`foraging`, :func:`social`).

All return a :class:`fa_gpu.GenerativeModel` in pymdp 1.0's layout (outcomes / next states on
axis 0). The matching generative processes live in :mod:`fa_gpu.envs`, built from these very
arrays, so an agent's model of the world is exactly the world it acts in.
"""
from __future__ import annotations

import numbers

import numpy as np

from .model import GenerativeModel, check_host_memory, float_dtype, positive_int

__all__ = ["grid_world", "tmaze", "foraging", "social", "GRID_ACTIONS", "TMAZE_LOCATIONS",
           "TMAZE_CONDITIONS", "TMAZE_REWARD_OUTCOMES", "TMAZE_CUES", "FORAGING_ACTIONS"]

#: Action names of the grid world, in index order. Moving into a wall stays put.
GRID_ACTIONS = ("stay", "up", "down", "left", "right")
# (d_row, d_col) of each action in GRID_ACTIONS; "up" decreases the row index.
_MOVES = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)], dtype=np.int64)

#: T-maze state and outcome names, in index order (the layout of pymdp's classic T-maze).
TMAZE_LOCATIONS = ("centre", "right arm", "left arm", "cue")
TMAZE_CONDITIONS = ("reward on right", "reward on left")
TMAZE_REWARD_OUTCOMES = ("none", "reward", "loss")
TMAZE_CUES = ("cue right", "cue left")

#: Actions of :class:`fa_gpu.envs.Foraging` and :func:`foraging`, in index order: the grid moves,
#: then "eat" (which stays in the cell).
FORAGING_ACTIONS = GRID_ACTIONS + ("eat",)


def _prob(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _cell(value, name: str, side: int, default: int, rng: np.random.Generator) -> int | str:
    """A grid cell given as a flat index or ``(row, col)``; ``"random"`` draws one from ``rng``."""
    S = side * side
    if value is None:
        return default
    if isinstance(value, str):
        if value == "random":
            return int(rng.integers(S))
        return value  # "uniform" is handled by the caller
    if isinstance(value, tuple) and len(value) == 2:
        r, c = value
        if not all(isinstance(v, (int, np.integer)) and 0 <= v < side for v in (r, c)):
            raise ValueError(f"{name} (row, col) must lie in [0, {side}) x [0, {side}); got {value!r}")
        return int(r) * side + int(c)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < S:
        raise ValueError(f"{name} must be a cell index in [0, {S}) (or (row, col)); got {value!r}")
    return int(value)


def grid_moves(side: int) -> np.ndarray:
    """Next cell of every (cell, action) on a ``side x side`` grid with walls at the border.

    Returns int64 ``(side**2, 5)``: ``next[s, a]`` for the actions in :data:`GRID_ACTIONS`
    (cell index ``row * side + col``).
    """
    s = np.arange(side * side)
    rc = np.stack([s // side, s % side], axis=1)                      # (S, 2)
    dest = np.clip(rc[:, None, :] + _MOVES[None, :, :], 0, side - 1)  # a wall clips to the border
    return dest[..., 0] * side + dest[..., 1]


def grid_world(side: int = 5, *, noise: float = 0.1, goal=None, start=None, reward: float = 4.0,
               seed=None, policy_len: int = 1, dtype=np.float64) -> GenerativeModel:
    """A ``side x side`` grid: one position factor, one noisy position modality.

    ``S = side**2`` cells, cell index ``row * side + col`` (row 0 at the top). Actions, in order:
    stay, up, down, left, right (:data:`GRID_ACTIONS`); a move into the border stays put.

    Arrays (``dtype``):

    - ``A[0]`` ``(S, S)``: observed position. ``(1 - noise) * I + noise / S``: the true cell is
      reported with probability ``1 - noise + noise / S``, every other cell with ``noise / S``.
      Columns sum to 1; for ``noise > 0`` it is not an identity.
    - ``B[0]`` ``(S, S, 5)``: deterministic one-hot moves, ``B[0][next, s, a] = 1``.
    - ``C[0]`` ``(S,)``: ``reward`` at ``goal``, 0 elsewhere.
    - ``D[0]`` ``(S,)``: one-hot at ``start``, or uniform when ``start="uniform"``.

    Parameters
    ----------
    side : int >= 2
    noise : float in [0, 1]
        Probability that the position observation is replaced by a uniformly random cell.
    goal, start : int cell index, ``(row, col)``, ``"random"`` or None
        Defaults: goal the last cell ``S - 1`` (bottom right), start cell 0 (top left).
        ``start`` may also be ``"uniform"``. ``"random"`` draws a cell with ``seed``.
    reward : float
        Log-preference for observing the goal cell.
    seed : int or None
        Only used by ``"random"`` goal/start.
    policy_len : int
        Planning horizon (all ``5**policy_len`` policies). The reward is sparse, so an agent sees
        the goal only when it lies within ``policy_len`` moves; farther away every policy has the
        same expected free energy. For long horizons pass a smaller policy set yourself:
        ``GenerativeModel(A=m.A, B=m.B, C=m.C, D=m.D, policies=...)``.

    Returns
    -------
    GenerativeModel, with two extra int attributes: ``goal`` (cell index) and ``side``.
    """
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 2:
        raise ValueError(f"side must be an integer >= 2, got {side!r}")
    side, dt = int(side), float_dtype(dtype)
    noise, reward = _prob(noise, "noise"), _finite(reward, "reward")
    S = side * side
    # A's construction holds three (S, S) float64 temporaries, then A and B (S, S, 5) are copied
    # once more by GenerativeModel: check before numpy asks for memory the machine lacks
    check_host_memory(S * S * 8 * (3 + 2 * (1 + len(GRID_ACTIONS))), f"grid_world(side={side})")
    rng = np.random.default_rng(seed)
    goal = _cell(goal, "goal", side, S - 1, rng)
    if isinstance(goal, str):
        raise ValueError(f"goal must be a cell index, (row, col) or 'random'; got {goal!r}")
    start = _cell(start, "start", side, 0, rng)
    if isinstance(start, str) and start != "uniform":
        raise ValueError(f"start must be a cell index, (row, col), 'uniform' or 'random'; got {start!r}")

    A = (1.0 - noise) * np.eye(S) + noise / S
    A = (A / A.sum(axis=0, keepdims=True)).astype(dt)
    B = np.zeros((S, S, len(GRID_ACTIONS)), dtype=dt)
    s, a = np.meshgrid(np.arange(S), np.arange(len(GRID_ACTIONS)), indexing="ij")
    B[grid_moves(side), s, a] = 1.0
    C = np.zeros(S, dtype=dt)
    C[goal] = reward
    if start == "uniform":
        D = np.full(S, 1.0 / S, dtype=dt)
    else:
        D = np.zeros(S, dtype=dt)
        D[start] = 1.0
    model = GenerativeModel(A=[A], B=[B], C=[C], D=[D], policy_len=policy_len)
    model.goal, model.side = goal, side  # read by envs.GridWorldEnv and plots
    return model


def tmaze(*, cue_validity: float = 0.95, reward_prob: float = 0.98, reward: float = 3.0,
          punishment: float = -3.0, policy_len: int = 1, dtype=np.float64) -> GenerativeModel:
    """The classic T-maze (pymdp's layout): two factors, three modalities.

    Factors: 0 location (4: centre, right arm, left arm, cue), controlled by 4 actions "go to
    location a" from anywhere (arms are *not* absorbing: pymdp's fully connected T-maze);
    1 reward condition (2: reward on right, reward on left), fixed within a trial (1 action,
    identity B). The rewarding arm of condition ``c`` is location ``c + 1``.

    Arrays (``dtype``):

    - ``A[0]`` ``(4, 4)``, ``A_dependencies[0] = [0]``: location, observed exactly.
    - ``A[1]`` ``(3, 4, 2)``, deps ``[0, 1]``: reward outcome (none, reward, loss). Centre and cue:
      none. Rewarding arm: reward with ``reward_prob``, loss otherwise; other arm: loss with
      ``reward_prob``, reward otherwise.
    - ``A[2]`` ``(2, 4, 2)``, deps ``[0, 1]``: cue (cue right, cue left). At the cue location the
      cue names the condition with ``cue_validity``; elsewhere it is uniform (uninformative).
    - ``B[0]`` ``(4, 4, 4)``: ``B[0][a, :, a] = 1``; ``B[1]`` ``(2, 2, 1)``: identity.
    - ``C``: ``[0]*4``, ``[0, reward, punishment]``, ``[0, 0]``.
    - ``D``: one-hot at centre; uniform ``[0.5, 0.5]`` over conditions.
    """
    dt = float_dtype(dtype)
    cv, p = _prob(cue_validity, "cue_validity"), _prob(reward_prob, "reward_prob")
    reward, punishment = _finite(reward, "reward"), _finite(punishment, "punishment")

    A_loc = np.eye(4)
    A_rew = np.zeros((3, 4, 2))
    A_rew[0, [0, 3], :] = 1.0                      # centre and cue: no outcome
    A_rew[:, 1, 0] = A_rew[:, 2, 1] = [0, p, 1 - p]  # rewarding arm (condition c -> arm c + 1)
    A_rew[:, 2, 0] = A_rew[:, 1, 1] = [0, 1 - p, p]  # the other arm
    A_cue = np.full((2, 4, 2), 0.5)
    A_cue[:, 3, :] = [[cv, 1 - cv], [1 - cv, cv]]  # cue obs c names condition c
    B_loc = np.zeros((4, 4, 4))
    B_loc[np.arange(4), :, np.arange(4)] = 1.0     # action a leads to location a from anywhere
    B_cond = np.eye(2)[:, :, None]
    C = [np.zeros(4), np.array([0.0, reward, punishment]), np.zeros(2)]
    D = [np.eye(4)[0], np.full(2, 0.5)]
    cast = lambda xs: [np.asarray(x, dtype=dt) for x in xs]
    return GenerativeModel(A=cast([A_loc, A_rew, A_cue]), B=cast([B_loc, B_cond]), C=cast(C), D=cast(D),
                           A_dependencies=[[0], [0, 1], [0, 1]], policy_len=policy_len)


def _distribution(value, name: str, size: int) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64)
    if p.shape != (size,) or not np.all(p >= 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must be {size} non-negative numbers summing to 1, got {value!r}")
    return p


def _probs(value, name: str, size: int) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64)
    if p.shape != (size,) or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"{name} must be {size} probabilities in [0, 1], got {value!r}")
    return p


def foraging(*, food_pref: float = 3.0, crowd_cost: float = 1.0, share=(0.9, 0.6, 0.3),
             deplete=(0.5, 0.2), neighbour_food=(0.6, 0.25, 0.15),
             neighbour_crowd=(0.5, 0.3, 0.2), crowd_change: float = 0.2, obs_noise: float = 0.05,
             position_outcomes: int | None = None, policy_len: int = 1,
             dtype=np.float64) -> GenerativeModel:
    """An egocentric forager for :class:`fa_gpu.envs.Foraging`: it models its own cell, not the grid.

    One factor of ``S = 18`` joint states ``s = food * 6 + crowd * 2 + fed``: food level of the
    own cell (none, low, high), crowding (0, 1, 2+ others nearby), fed (no, yes); 6 actions
    (:data:`FORAGING_ACTIONS`). "Next door" is what a move leads to: a cell whose food and
    crowding are drawn from ``neighbour_food`` and ``neighbour_crowd`` (the agent does not know
    which way food lies, so the four moves are equivalent to it: use ``action_selection=
    "stochastic"`` for a random walk between patches; the deterministic tie rule always picks
    "up").

    Transitions ``B[0]`` ``(18, 18, 6)`` (food', crowd' and fed' independent given s, a):

    - stay: food kept; crowding kept with probability ``1 - crowd_change``, else drawn from
      ``neighbour_crowd``; not fed;
    - move: food' ~ ``neighbour_food``, crowd' ~ ``neighbour_crowd``; not fed;
    - eat: crowding as for stay. With no food: nothing. With food level ``l`` (1 low, 2 high):
      fed with probability ``share[crowd]`` (the lottery against other eaters) and the level
      drops by one with probability ``deplete[l - 1]``.

    Observations (``A``, each a function of the joint state): 0 food level and 1 crowding, the
    true one with probability ``1 - obs_noise + obs_noise / 3``; 2 fed, exact; 3 (only with
    ``position_outcomes``) an uninformative (uniform) position modality with that many
    outcomes, to match ``Foraging(observe_position=True)``. Preferences ``C``: fed
    ``[0, food_pref]``, crowding ``-crowd_cost * [0, 0.5, 1]``, 0 elsewhere. ``D``: food and
    crowding uniform, not fed.
    """
    dt = float_dtype(dtype)
    food_pref, crowd_cost = _finite(food_pref, "food_pref"), _finite(crowd_cost, "crowd_cost")
    share, deplete = _probs(share, "share", 3), _probs(deplete, "deplete", 2)
    nb_food = _distribution(neighbour_food, "neighbour_food", 3)
    nb_crowd = _distribution(neighbour_crowd, "neighbour_crowd", 3)
    change, noise = _prob(crowd_change, "crowd_change"), _prob(obs_noise, "obs_noise")
    eye3 = np.eye(3)
    B = np.zeros((3, 3, 2, 3, 3, 2, len(FORAGING_ACTIONS)))  # (food', crowd', fed', food, crowd, fed, a)
    for food in range(3):
        for crowd in range(3):
            kept_crowd = (1 - change) * eye3[crowd] + change * nb_crowd
            for a, name in enumerate(FORAGING_ACTIONS):
                fed = np.array([1.0, 0.0])
                if name == "stay":
                    food_n, crowd_n = eye3[food], kept_crowd
                elif name == "eat":
                    crowd_n, food_n = kept_crowd, eye3[food]
                    if food > 0:
                        fed = np.array([1 - share[crowd], share[crowd]])
                        d = deplete[food - 1]
                        food_n = (1 - d) * eye3[food] + d * eye3[food - 1]
                else:
                    food_n, crowd_n = nb_food, nb_crowd
                col = np.einsum("i,j,k->ijk", food_n, crowd_n, fed)
                B[:, :, :, food, crowd, :, a] = col[..., None]  # the same for both fed values
    B = B.reshape(18, 18, len(FORAGING_ACTIONS))
    s = np.arange(18)
    marg = lambda idx, k, noisy: ((1 - noisy) * np.eye(k)[:, idx] + noisy / k)
    A = [marg(s // 6, 3, noise), marg((s // 2) % 3, 3, noise), marg(s % 2, 2, 0.0)]
    C = [np.zeros(3), -crowd_cost * np.array([0.0, 0.5, 1.0]), np.array([0.0, food_pref])]
    if position_outcomes is not None:
        positive_int(position_outcomes, "position_outcomes")
        A.append(np.full((int(position_outcomes), 18), 1.0 / position_outcomes))
        C.append(np.zeros(int(position_outcomes)))
    D = np.einsum("i,j,k->ijk", np.full(3, 1 / 3), np.full(3, 1 / 3), [1.0, 0.0]).reshape(18)
    cast = lambda xs: [np.asarray(x, dtype=dt) for x in xs]
    return GenerativeModel(A=cast(A), B=cast([B]), C=cast(C), D=cast([D]), policy_len=policy_len)


def social(num_states: int = 2, *, cue_accuracy: float = 0.7, neighbour_reliability: float = 0.7,
           volatility: float = 0.0, agree_pref: float = 1.0, none_prob: float = 0.01,
           policy_len: int = 1, dtype=np.float64) -> GenerativeModel:
    """An agent of :class:`fa_gpu.envs.SocialNetwork`: infers a hidden world state from a private
    cue and a neighbour's post, and chooses what to post.

    ``K = num_states``. Factors: 0 own post (K states, K actions "post k": ``B[0][k, :, k] = 1``),
    1 world state (K states, one action; it changes with probability ``volatility`` per step to
    a uniformly random other state). Modalities:

    - 0 cue (K), deps ``[1]``: the true state with probability ``cue_accuracy``, any other with
      ``(1 - cue_accuracy) / (K - 1)``;
    - 1 neighbour's post (K + 1; outcome K: nothing posted), deps ``[1]``: "nothing" with
      ``none_prob``, else the true state with ``neighbour_reliability``, any other state evenly;
    - 2 agreement (agree, disagree, nothing), deps ``[0, 1]``: whether the neighbour posted what
      this agent posted: agree with ``(1 - none_prob) * p(post | state)`` from modality 1.

    ``C``: agreement ``[agree_pref, 0, 0]``, 0 elsewhere (social conformity: an agent likes to be
    agreed with, so it posts the state it expects its neighbours to post). ``D`` uniform.
    """
    K = num_states
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
        raise ValueError(f"num_states must be an integer >= 2, got {num_states!r}")
    K, dt = int(K), float_dtype(dtype)
    acc, rel = _prob(cue_accuracy, "cue_accuracy"), _prob(neighbour_reliability, "neighbour_reliability")
    vol, eps = _prob(volatility, "volatility"), _prob(none_prob, "none_prob")
    agree_pref = _finite(agree_pref, "agree_pref")
    other = lambda p: p * np.eye(K) + (1 - p) / (K - 1) * (1 - np.eye(K))
    A_cue = other(acc)
    A_post = np.concatenate([(1 - eps) * other(rel), np.full((1, K), eps)])
    agree = (1 - eps) * other(rel)                                # (post, state): p(neighbour = post)
    A_agree = np.stack([agree, (1 - eps) - agree, np.full((K, K), eps)])
    B_post = np.zeros((K, K, K))
    B_post[np.arange(K), :, np.arange(K)] = 1.0
    B_world = other(1 - vol)[:, :, None]
    C = [np.zeros(K), np.zeros(K + 1), np.array([agree_pref, 0.0, 0.0])]
    D = [np.full(K, 1 / K), np.full(K, 1 / K)]
    cast = lambda xs: [np.asarray(x, dtype=dt) for x in xs]
    return GenerativeModel(A=cast([A_cue, A_post, A_agree]), B=cast([B_post, B_world]), C=cast(C),
                           D=cast(D), A_dependencies=[[1], [1], [0, 1]], policy_len=policy_len)
