"""Side-by-side step timings: fa_gpu (numpy, numba) against pymdp 1.0.4, in one process.

Run as ``python -m benchmarks.compare`` or ``python benchmarks/compare.py``; ``--help`` lists the
options. For every model, policy horizon and N it times one full agent step (state inference,
policy inference, action selection, empirical prior) on each backend with observations from the
model's own generative process, and prints agent-steps per second, milliseconds per step, peak
bytes per agent and the ratio to pymdp. Then it prints numba's thread scaling, compile/warm-up
times, a one-agent latency line, the per-agent memory at N = 1,000,000 and a summary of fa_gpu's
speed relative to pymdp; ``--targets`` adds the project's own targets (met / not met, with the
measured number). ``fa-gpu bench`` runs the same from a source checkout.

Order of work: every fa_gpu timing runs first, and JAX/pymdp is imported only afterwards. On a
small VM, JAX's idle XLA CPU threads (and OpenBLAS's) can keep a core busy; running the two
libraries' timings in separate phases (never interleaved step by step) keeps either from stealing
the other's cores.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import fa_gpu
from fa_gpu import models as fa_models
from fa_gpu.envs import GenerativeProcess, GridWorldEnv, TMazeEnv

DTYPE = "float32"
SEED = 0


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def _cols(rng, shape, conc):
    """Random array whose axis-0 columns sum to 1 (Dirichlet columns)."""
    x = rng.gamma(conc, size=shape) + 1e-3
    return x / x.sum(axis=0, keepdims=True)


def threefactor(policy_len: int = 1, seed: int = 7) -> fa_gpu.GenerativeModel:
    """3 factors (4, 3, 2 states; 3, 2, 1 actions), 3 modalities with A_dependencies subsets,
    random Dirichlet A/B, Gaussian C."""
    rng = np.random.default_rng(seed)
    S, U, O = [4, 3, 2], [3, 2, 1], [4, 3, 3]
    A_deps = [[0, 1], [1, 2], [0, 2]]
    A = [_cols(rng, (O[m], *[S[d] for d in deps]), 0.7) for m, deps in enumerate(A_deps)]
    B = [_cols(rng, (S[f], S[f], U[f]), 0.5) for f in range(3)]
    C = [rng.normal(0.0, 1.5, size=o) for o in O]
    D = [_cols(rng, (s,), 2.0) for s in S]
    return fa_gpu.GenerativeModel(A=A, B=B, C=C, D=D, A_dependencies=A_deps, policy_len=policy_len)


def explorer(policy_len: int = 1, side: int = 10, seed: int = 3) -> fa_gpu.GenerativeModel:
    """An explorer's ``side x side`` grid: position factor (side**2 states, 5 moves with walls at
    the border), one modality reporting the kind of the current cell (5 kinds: floor, rock,
    water, food, hazard; drawn at random, right with probability 0.9), preferences over kinds."""
    rng = np.random.default_rng(seed)
    S, K = side * side, 5
    kinds = rng.choice(K, size=S, p=[0.5, 0.15, 0.15, 0.1, 0.1])
    A = np.full((K, S), 0.1 / (K - 1))
    A[kinds, np.arange(S)] = 0.9
    nxt = fa_models.grid_moves(side)  # (S, 5)
    B = np.zeros((S, S, nxt.shape[1]))
    B[nxt, np.arange(S)[:, None], np.arange(nxt.shape[1])[None, :]] = 1.0
    C = np.array([0.0, -0.5, 0.5, 2.0, -3.0])
    D = np.full(S, 1.0 / S)
    return fa_gpu.GenerativeModel(A=[A], B=[B], C=[C], D=[D], policy_len=policy_len)


def _pymdp_tmaze_arrays() -> dict:
    """A, B, D of ``pymdp.envs.tmaze.TMaze()`` (5 locations, adjacent moves, cue modality), built in
    a child process so that JAX is not imported here before every fa_gpu timing has run."""
    import pickle
    import subprocess
    code = ("import pickle, sys, numpy as np; from pymdp.envs.tmaze import TMaze; e = TMaze(); "
            "f = lambda xs: [np.asarray(x, dtype=np.float64) for x in xs]; "
            "sys.stdout.buffer.write(pickle.dumps(dict(A=f(e.A), B=f(e.B), D=f(e.D), "
            "A_dependencies=[list(map(int, d)) for d in e.A_dependencies], "
            "B_dependencies=[list(map(int, d)) for d in e.B_dependencies])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return pickle.loads(out.stdout)


_PYMDP_TMAZE = {}


def pymdp_tmaze(policy_len: int = 2) -> fa_gpu.GenerativeModel:
    """pymdp's own T-maze (``pymdp.envs.tmaze.TMaze()``: A ``(5, 5)``, ``(3, 5, 2)``, ``(3, 5, 2)``
    with A_dependencies ``[[0], [0, 1], [0, 1]]``; B ``(5, 5, 5)``, ``(2, 2, 1)``), with the
    preferences of pymdp's T-maze tutorial: reward +3, punishment -3 (``C[1] = [0, 3, -3]``)."""
    if not _PYMDP_TMAZE:
        _PYMDP_TMAZE.update(_pymdp_tmaze_arrays())
    t = _PYMDP_TMAZE
    # pymdp builds them in float32 (JAX default): columns sum to 1 within 1e-7; we check in float64
    norm = lambda xs: [x / x.sum(axis=0, keepdims=True) for x in xs]
    C = [np.zeros(t["A"][0].shape[0]), np.array([0.0, 3.0, -3.0]), np.zeros(t["A"][2].shape[0])]
    return fa_gpu.GenerativeModel(A=norm(t["A"]), B=norm(t["B"]), C=C, D=norm(t["D"]),
                                  A_dependencies=t["A_dependencies"],
                                  B_dependencies=t["B_dependencies"], policy_len=policy_len)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int], fa_gpu.GenerativeModel]
    env: Callable[[fa_gpu.GenerativeModel, int], GenerativeProcess]
    policy_lens: tuple  # defaults
    grid: bool  # --policy-len applies
    about: str
    engine_kw: dict = field(default_factory=dict)  # Engine / pymdp Agent options of the row


MODELS = {
    "grid5": ModelSpec("grid5", lambda pl: fa_models.grid_world(5, policy_len=pl),
                       lambda m, seed: GridWorldEnv(5, seed=seed), (1, 3), True,
                       "5x5 grid world: 25 states, 5 actions, 1 modality"),
    "grid20": ModelSpec("grid20", lambda pl: fa_models.grid_world(20, policy_len=pl),
                        lambda m, seed: GridWorldEnv(20, seed=seed), (1,), True,
                        "20x20 grid world: 400 states, 5 actions, 1 modality"),
    "tmaze": ModelSpec("tmaze", lambda pl: fa_models.tmaze(policy_len=pl),
                       lambda m, seed: TMazeEnv(seed=seed), (2,), False,
                       "T-maze: factors 4 x 2, 3 modalities"),
    "pymdp_tmaze": ModelSpec("pymdp_tmaze", pymdp_tmaze,
                             lambda m, seed: GenerativeProcess(m, seed=seed), (2,), False,
                             "pymdp.envs.tmaze.TMaze(): factors 5 x 2, 3 modalities (needs pymdp)"),
    "tmaze_mmp": ModelSpec("tmaze_mmp", pymdp_tmaze,
                           lambda m, seed: GenerativeProcess(m, seed=seed), (2,), False,
                           "pymdp's T-maze with marginal message passing over a 3-step window "
                           "(inference_algo='mmp', inference_horizon=3; needs pymdp)",
                           dict(inference_algo="mmp", inference_horizon=3)),
    "explorer": ModelSpec("explorer", explorer, lambda m, seed: GenerativeProcess(m, seed=seed), (1,),
                          True, "10x10 explorer grid: 100 states, 5 actions, 5 cell-kind observations"),
    "threefactor": ModelSpec("threefactor", threefactor,
                             lambda m, seed: GenerativeProcess(m, seed=seed), (2,), False,
                             "random model: factors 4,3,2 (3,2,1 actions), 3 modalities"),
}


# ---------------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------------
def _shared_param_bytes(eng) -> int:
    """Bytes of the engine's buffers without an agent axis (the shared model and the integer
    layout tables, from the schema): subtracted from the traced peak."""
    b = eng._buffers
    return sum(int(a.nbytes) for k, a in b.packed.items() if k != "work" and not b.rows_of(k))


def per_agent_nbytes(eng) -> float:
    """Bytes of every present per-agent buffer of an engine (state and per-agent parameters) / N
    (absent optional buffers are one-element placeholders, not per-agent storage)."""
    b = eng._buffers
    return sum(int(a.nbytes) for k, a in b.packed.items()
               if b.rows_of(k) and b.spec.entries[k][2]) / eng.config.n_agents


def analytic_bytes_per_agent(model, item: int = 4) -> int:
    """The same number from the shapes: 3 belief buffers (prior, qs, qs_prev), q_pi and neg_efe,
    int64 obs/actions/prev_actions/t, and gamma, alpha, 3 learning rates, vfe."""
    S, P = sum(model.num_states), model.policies.shape[0]
    M, F = len(model.num_obs), len(model.num_states)
    return 3 * S * item + 2 * P * item + 8 * (M + 2 * F + 1) + 6 * item


def _median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def _row(model, backend, threads, n, pl, npol, **kw):
    row = dict(model=model, backend=backend, threads=threads, N=n, policy_len=pl,
               num_policies=npol, status="ok", reps=0, agent_steps_per_s=None, ms_per_step=None,
               first_step_s=None, peak_bytes_per_agent=None, ratio_vs_pymdp=None,
               others_cores=None)
    row.update(kw)
    return row


def _skip(row, why):
    row["status"] = why
    return row


_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot():
    """(wall s, machine-wide busy CPU s, this process's CPU s), or None where /proc is missing."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = (sum(f[:8]) - f[3] - f[4]) / _CLK  # all but idle and iowait
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def _others_cores(a, b):
    """Average number of cores other processes kept busy between two snapshots (None for
    windows under 0.5 s)."""
    if a is None or b is None or b[0] - a[0] < 0.5:
        return None  # CPU times tick every 1/CLK_TCK s: shorter windows are noise
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))


MAX_STEPS = 5000  # cap on the timed steps of one cell


def _timed_loop(step, advance, warmup, repeats, budget, t_budget0, first_s, min_time):
    """Warm-up steps, then ``repeats`` timed steps (more until they add up to ``min_time`` s, at
    most MAX_STEPS), within ``budget`` seconds counted from
    ``t_budget0``. ``advance()`` (not timed) makes the next observations; ``step(obs)`` returns
    the actions; ``first_s`` is the first (untimed) step's seconds. Returns the step seconds."""
    last = first_s
    for _ in range(max(0, warmup - 1)):
        if time.perf_counter() - t_budget0 + 2 * last > budget:
            break  # keep the time for at least one timed step
        obs = advance()
        t0 = time.perf_counter()
        step(obs)
        last = time.perf_counter() - t0
    times = []
    snap0 = _cpu_snapshot()
    total, i = 0.0, 0
    # at least `repeats` steps, and more until `min_time` s of steps (fast cells: a median over
    # a handful of 20-ms steps moves with any hiccup), within the budget
    while i < repeats or (total < min_time and i < MAX_STEPS):
        elapsed = time.perf_counter() - t_budget0
        est = times[-1] if times else last
        if i > 0 and est is not None and elapsed + est > budget:
            break
        i += 1
        obs = advance()
        t0 = time.perf_counter()
        step(obs)
        times.append(time.perf_counter() - t0)
        total += times[-1]
    return times, _others_cores(snap0, _cpu_snapshot())


#: extrapolations come only from cells with at least this many agents (below, fixed per-step
#: overhead dominates and a linear extrapolation is far too pessimistic)
EXTRAPOLATE_FROM = 100
#: margin on the linear extrapolation: larger N falls out of cache, steps grow faster than N
SAFETY = 2.0


def _estimate(prev, n):
    """Step seconds at ``n`` extrapolated from the previous (smaller) cell of the same series;
    None when there is nothing to go by, inf after a skipped cell."""
    if prev is None:
        return None
    if not prev["status"].startswith("ok"):
        return math.inf
    if prev["N"] < EXTRAPOLATE_FROM:
        return None
    return prev["ms_per_step"] / 1e3 * n / prev["N"]


def _too_slow(est_step_s, warmup, budget):
    return est_step_s is not None and SAFETY * est_step_s * (warmup + 1) > budget


# ---------------------------------------------------------------------------------------------
# fa_gpu
# ---------------------------------------------------------------------------------------------
def run_fa_cell(spec, model, pl, backend, threads, label, n, args, est_step_s):
    npol = int(model.policies.shape[0])
    row = _row(spec.name, label, threads, n, pl, npol)
    if _too_slow(est_step_s, args.warmup, args.max_seconds):
        row["estimated_ms_per_step"] = est_step_s * 1e3
        return _skip(row, "skipped (too slow)")
    env = spec.env(model, SEED)
    obs0 = env.reset(n)
    kw = {"num_threads": threads} if backend == "numba" else {}
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        eng = fa_gpu.Engine(model, n, backend=backend, dtype=DTYPE, seed=SEED, **kw, **spec.engine_kw)
        t1 = time.perf_counter()
        state = {"actions": eng.step(obs0)}
        t2 = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    row["construct_s"] = t1 - t0
    row["first_step_s"] = t2 - t1
    row["peak_bytes_per_agent"] = max(0.0, (peak - _shared_param_bytes(eng)) / n)
    row["array_bytes_per_agent"] = per_agent_nbytes(eng)

    def advance():
        return env.step(state["actions"])

    def step(obs):
        state["actions"] = eng.step(obs)

    return _timed_row(row, step, advance, args, n, t1, t2)


def _timed_row(row, step, advance, args, n, t1, t2):
    """Time ``step`` (with ``advance`` between steps) for one cell and fill in its row."""
    times, others = _timed_loop(step, advance, args.warmup, args.repeats, args.max_seconds, t2,
                                 t2 - t1, args.min_time)
    med = _median(times)
    row.update(reps=len(times), ms_per_step=med * 1e3, agent_steps_per_s=n / med, others_cores=others)
    if len(times) < args.repeats:
        row["status"] = f"ok (trimmed to {len(times)} reps)"
    return row


def compile_numba(out):
    """Compile (or load from Numba's on-disk cache) the step kernel (one build serves every N and
    thread count), timing the first step of a one-agent engine. Returns SERIAL_BELOW."""
    from fa_gpu.backends import numba as nb
    model = fa_models.grid_world(5, policy_len=1)
    eng = fa_gpu.Engine(model, 1, backend="numba", dtype=DTYPE, seed=SEED)
    obs = GridWorldEnv(5, seed=SEED).reset(1)
    t0 = time.perf_counter()
    eng.step(obs)
    out["numba kernel (first step, N=1)"] = time.perf_counter() - t0
    return nb.SERIAL_BELOW


def machine_scaling_probe(threads: int, reps: int = 5):
    """2-vs-1-thread speedup of a trivially parallel numba loop (pure arithmetic, no memory
    traffic): what the machine itself delivers right now, to read the engine's scaling against."""
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def burn(out, iters):
        for i in numba.prange(out.shape[0]):
            x = 1.0 + i * 1e-9
            for _ in range(iters):
                x = x * 0.999999 + 1e-7
            out[i] = x

    out = np.empty(64 * max(threads, 1))
    res = {}
    saved = numba.get_num_threads()
    try:
        for k in (1, threads):
            numba.set_num_threads(k)
            burn(out, 10)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                burn(out, 1_000_000)
                ts.append(time.perf_counter() - t0)
            res[k] = _median(ts)
    finally:
        numba.set_num_threads(saved)
    return dict(threads=threads, seconds_1=res[1], seconds_k=res[threads], ratio=res[1] / res[threads])


def one_agent_latency(steps: int, backend: str):
    """Median / mean ``Engine.step`` wall time in microseconds for N=1, grid5, policy_len=1."""
    model = fa_models.grid_world(5, policy_len=1)
    env = GridWorldEnv(5, seed=SEED)
    eng = fa_gpu.Engine(model, 1, backend=backend, dtype=DTYPE, seed=SEED)
    obs = env.reset(1)
    for _ in range(20):
        obs = env.step(eng.step(obs))
    ts = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter_ns()
        act = eng.step(obs)
        ts[i] = time.perf_counter_ns() - t0
        obs = env.step(act)
    return dict(backend=backend, steps=steps, median_us=float(np.median(ts)) / 1e3,
                mean_us=float(ts.mean()) / 1e3, p10_us=float(np.percentile(ts, 10)) / 1e3)


def memory_at(n_big: int, backend: str):
    """Per-agent array bytes of a grid5 policy_len=1 engine at ``n_big`` (constructed, not
    stepped), cross-checked at n_big/10 and against the analytic formula."""
    model = fa_models.grid_world(5, policy_len=1)
    out = dict(backend=backend, model="grid5", policy_len=1, dtype=DTYPE,
               analytic_bytes_per_agent=analytic_bytes_per_agent(model))
    for key, n in (("N", n_big), ("N_check", max(1, n_big // 10))):
        eng = fa_gpu.Engine(model, n, backend=backend, dtype=DTYPE, seed=SEED)
        out[key] = n
        out["bytes_per_agent" if key == "N" else "bytes_per_agent_check"] = per_agent_nbytes(eng)
        out["shared_model_bytes" if key == "N" else "_"] = _shared_param_bytes(eng)
        del eng
    out.pop("_", None)
    return out


# ---------------------------------------------------------------------------------------------
# pymdp
# ---------------------------------------------------------------------------------------------
def pymdp_available():
    if importlib.util.find_spec("pymdp") is None or importlib.util.find_spec("equinox") is None:
        return False, "pymdp/equinox not importable; pip install 'fa_gpu[crossval]'"
    try:
        ver = importlib.metadata.version("inferactively-pymdp")
    except importlib.metadata.PackageNotFoundError:
        ver = "?"
    return True, ver


def _mem_available_bytes():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PymdpRunner:
    """pymdp 1.0.4's batched ``Agent``; one whole step jitted with equinox, CPU JAX float32."""

    def __init__(self):
        import equinox as eqx
        import jax
        from pymdp.agent import Agent

        self.jax, self.Agent = jax, Agent

        @eqx.filter_jit
        def step(agent, obs, prior):
            qs = agent.infer_states(obs, prior)
            q_pi, _ = agent.infer_policies(qs)
            action = agent.sample_action(q_pi)
            return action, agent.update_empirical_prior(action, qs)

        @eqx.filter_jit
        def seq_step(agent, obs_hist, past_actions):
            # mmp/vmp: the window of observations and the actions between them, prior D
            qs = agent.infer_states(obs_hist, agent.D, past_actions=past_actions)
            q_pi, _ = agent.infer_policies(qs)
            return agent.sample_action(q_pi)

        self.step, self.seq_step = step, seq_step

    def agent(self, model, n, **options):
        jnp = self.jax.numpy
        J = lambda xs: [jnp.asarray(np.asarray(x, dtype=np.float32)) for x in xs]
        return self.Agent(A=J(model.A), B=J(model.B), C=J(model.C), D=J(model.D),
                          E=jnp.asarray(np.asarray(model.E, dtype=np.float32)),
                          A_dependencies=[list(d) for d in model.A_dependencies],
                          B_dependencies=[list(d) for d in model.B_dependencies],
                          policy_len=int(model.policies.shape[1]), batch_size=n,
                          action_selection="deterministic", **options)

    def nbytes(self, tree):
        return sum(int(x.nbytes) for x in self.jax.tree_util.tree_leaves(tree) if hasattr(x, "nbytes"))


def model_bytes_f32(model) -> int:
    return 4 * sum(int(np.asarray(x).size) for x in [*model.A, *model.B, *model.C, *model.D, model.E])


def run_pymdp_cell(runner, spec, model, pl, n, args, est_step_s):
    npol = int(model.policies.shape[0])
    row = _row(spec.name, "pymdp", None, n, pl, npol)
    # pymdp broadcasts every model array to the batch (materialized), plus the step's temporaries
    need = 3 * n * model_bytes_f32(model)
    avail = _mem_available_bytes()
    if avail is not None and need > 0.4 * avail:
        row["estimated_bytes"] = need
        return _skip(row, "skipped (memory)")
    if _too_slow(est_step_s, args.warmup, args.max_seconds):
        row["estimated_ms_per_step"] = est_step_s * 1e3
        return _skip(row, "skipped (too slow)")
    jax = runner.jax
    env = spec.env(model, SEED)
    obs0 = env.reset(n)
    t0 = time.perf_counter()
    agent = runner.agent(model, n, **spec.engine_kw)
    t1 = time.perf_counter()
    cols = lambda o: [np.ascontiguousarray(o[:, m]) for m in range(o.shape[1])]
    if spec.engine_kw.get("inference_algo", "fpi") != "fpi":
        return _pymdp_sequence_cell(runner, agent, env, obs0, spec.engine_kw["inference_horizon"],
                                    row, args, n, t0, t1)
    action, prior = jax.block_until_ready(runner.step(agent, cols(obs0), agent.D))
    t2 = time.perf_counter()
    row["construct_s"] = t1 - t0
    row["first_step_s"] = t2 - t1  # jit compile + one step
    row["peak_bytes_per_agent"] = (runner.nbytes(agent) + runner.nbytes((action, prior))) / n
    state = {"action": action, "prior": prior}

    def advance():
        return cols(env.step(np.asarray(state["action"])))

    def step(obs):
        state["action"], state["prior"] = jax.block_until_ready(
            runner.step(agent, obs, state["prior"]))

    return _timed_row(row, step, advance, args, n, t1, t2)


def _pymdp_sequence_cell(runner, agent, env, obs0, H, row, args, n, t0, t1):
    """Time pymdp's sequence inference in its steady state: a full window of H observations
    (the first one repeated until H steps have passed, so every call has one shape and jit
    compiles once) and the H - 1 actions between them."""
    jax = runner.jax
    obs_hist = np.repeat(obs0[:, None, :], H, axis=1)  # (N, H, M)
    acts = np.zeros((n, H - 1, len(agent.num_controls)), dtype=np.int64)
    window = lambda: ([np.ascontiguousarray(obs_hist[:, :, m]) for m in range(obs_hist.shape[2])],
                      acts if H > 1 else None)
    action = jax.block_until_ready(runner.seq_step(agent, *window()))
    t2 = time.perf_counter()
    row["construct_s"] = t1 - t0
    row["first_step_s"] = t2 - t1
    row["peak_bytes_per_agent"] = (runner.nbytes(agent) + runner.nbytes(action)) / n
    state = {"action": np.asarray(action)}

    def advance():
        return env.step(state["action"])

    def step(obs):
        obs_hist[:, :-1] = obs_hist[:, 1:]
        obs_hist[:, -1] = obs
        if H > 1:
            acts[:, :-1] = acts[:, 1:]
            acts[:, -1] = state["action"]
        state["action"] = np.asarray(jax.block_until_ready(runner.seq_step(agent, *window())))

    return _timed_row(row, step, advance, args, n, t1, t2)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _int_list(text, name):
    try:
        vals = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of integers, got {text!r}")
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{name} must list positive integers, got {text!r}")
    return vals


def build_parser(prog: str = "python -m benchmarks.compare"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--n", default="1,1000,10000", type=lambda t: _int_list(t, "--n"),
                   help="numbers of agents")
    p.add_argument("--policy-len", default=None, type=lambda t: _int_list(t, "--policy-len"),
                   help="policy horizons for the grid models (None: grid5 1,3; grid20 1); "
                        "tmaze uses 2 and threefactor 2")
    p.add_argument("--repeats", type=int, default=5,
                   help="minimum timed steps per cell (median reported)")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="keep timing steps beyond --repeats until they add up to this many seconds "
                        f"(at most {MAX_STEPS} steps; 0: exactly --repeats)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps before timing; the first includes construction/compile")
    p.add_argument("--backends", default="numpy,numba,pymdp", help="comma-separated, from numpy, numba, pymdp")
    p.add_argument("--max-seconds", type=float, default=25.0,
                   help="budget per cell after its first step: a cell whose warm-up + one timed step "
                        "(extrapolated linearly from the next smaller N >= 100, times 2) would not "
                        "fit is skipped; warm-up and repeats are trimmed to fit")
    p.add_argument("--one-agent-steps", type=int, default=3000, help="steps of the N=1 latency line")
    p.add_argument("--mem-n", type=int, default=1_000_000,
                   help="N of the per-agent memory check (engine constructed, not stepped)")
    p.add_argument("--json", default=None, help="also write every result as JSON to this path")
    p.add_argument("--targets", action="store_true",
                   help="also print the project's own performance targets, met or not")
    return p


def _parse(argv, prog=None):
    parser = build_parser() if prog is None else build_parser(prog)
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        parser.error(f"unknown model {', '.join(map(repr, bad)) or '(none given)'}; "
                     f"choose from {', '.join(MODELS)}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    badb = [b for b in backends if b not in ("numpy", "numba", "pymdp")]
    if badb or not backends:
        parser.error(f"unknown backend {', '.join(map(repr, badb)) or '(none given)'}; "
                     "choose from numpy, numba, pymdp")
    if args.repeats < 1 or args.warmup < 1 or args.max_seconds <= 0 or args.min_time < 0:
        parser.error("--repeats and --warmup must be >= 1, --max-seconds > 0 and --min-time >= 0")
    args.models, args.backends = models, backends
    args.n = sorted(set(args.n))
    return args


def _fmt_num(x, fmt):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


COLUMNS = [("model", 11, "s"), ("backend", 9, "s"), ("thr", 3, "s"), ("N", 7, "d"),
           ("pol_len", 7, "d"), ("P", 4, "d"), ("reps", 5, "d"), ("agent-steps/s", 13, ",.0f"),
           ("ms/step", 10, ".3f"), ("first s", 8, ".2f"), ("peak B/agent", 12, ",.0f"),
           ("x pymdp", 8, ".2f"), ("other", 5, ".2f")]
KEYS = ["model", "backend", "threads", "N", "policy_len", "num_policies", "reps", "agent_steps_per_s",
        "ms_per_step", "first_step_s", "peak_bytes_per_agent", "ratio_vs_pymdp", "others_cores"]


def format_table(rows):
    head = " ".join(f"{name:>{w}}" if f != "s" else f"{name:<{w}}" for name, w, f in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for (name, w, f), key in zip(COLUMNS, KEYS):
            v = r.get(key)
            if key == "threads":
                v = "-" if v is None else str(v)
            if key == "ratio_vs_pymdp" and v is None:
                txt = "n/a"
            elif f == "s":
                txt = str(v)
            elif key == "reps" and not r["status"].startswith("ok"):
                txt = "-"
            else:
                txt = _fmt_num(v, f)
            cells.append(f"{txt:<{w}}" if f == "s" else f"{txt:>{w}}")
        line = " ".join(cells)
        if r["status"] != "ok":
            line += f"  {r['status']}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _versions():
    out = {"python": platform.python_version(), "numpy": np.__version__, "fa_gpu": fa_gpu.__version__}
    for dist, key in (("numba", "numba"), ("jax", "jax"), ("jaxlib", "jaxlib"),
                      ("inferactively-pymdp", "pymdp"), ("equinox", "equinox")):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    return out


def _machine():
    from fa_gpu.runtime.topology import cpu_topology
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = _mem_available_bytes()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"loadavg_at_start": load, "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "topology": cpu_topology().describe(),
            "mem_available_gib": None if mem is None else round(mem / 2**30, 1)}


def _target(name, measured, ok, detail):
    return dict(target=name, measured=measured, met=ok, detail=detail)


def _find(rows, model, backend, n, pl):
    for r in rows:
        if (r["model"], r["backend"], r["N"], r["policy_len"]) == (model, backend, n, pl):
            return r
    return None


def evaluate_targets(rows, one, mem, scaling):
    out = []

    def tput(model, backend, n, pl):
        r = _find(rows, model, backend, n, pl)
        return None if r is None or not r["status"].startswith("ok") else r["agent_steps_per_s"]

    nb = tput("grid5", "numba", 10000, 1)
    out.append(_target("grid5 policy_len=1 N=10,000 numba >= 3,000,000 agent-steps/s", nb,
                       None if nb is None else nb >= 3e6,
                       "not measured" if nb is None else f"{nb:,.0f} agent-steps/s"))
    nb = tput("grid20", "numba", 10000, 1)
    out.append(_target("grid20 policy_len=1 N=10,000 numba >= 100,000 agent-steps/s", nb,
                       None if nb is None else nb >= 1e5,
                       "not measured" if nb is None else f"{nb:,.0f} agent-steps/s"))
    # the agent-lanes issue's ratios to pymdp (float32, N=10,000, same run), and the sequence
    # inference issue's (mmp, horizon 3, on pymdp's T-maze)
    for model, pl, want in (("pymdp_tmaze", 2, 10.0), ("threefactor", 2, 10.0), ("grid5", 1, 25.0),
                            ("grid5", 3, 25.0), ("explorer", 1, 100.0), ("tmaze_mmp", 2, 10.0)):
        nb, pm = tput(model, "numba", 10000, pl), tput(model, "pymdp", 10000, pl)
        ratio = None if nb is None or pm is None else nb / pm
        out.append(_target(f"{model} policy_len={pl} N=10,000 numba >= {want:g}x pymdp", ratio,
                           None if ratio is None else ratio >= want,
                           "not measured" if ratio is None else
                           f"{ratio:.2f}x ({nb:,.0f} vs {pm:,.0f} agent-steps/s)"))
    us = None if one is None else one["median_us"]
    out.append(_target("N=1 Engine.step (numba, grid5, policy_len=1) <= 10 us", us,
                       None if us is None else us <= 10.0,
                       "not measured" if us is None else f"median {us:.1f} us"))
    b = None if mem is None else mem["bytes_per_agent"]
    out.append(_target(f"<= 400 bytes/agent beyond the shared model at N={mem['N'] if mem else 1_000_000:,} "
                       "float32", b, None if b is None else b <= 400,
                       "not measured" if b is None else f"{b:.0f} bytes/agent"))
    best = None
    for s in scaling:
        if s["model"] == "grid5" and s["policy_len"] == 1 and s["N"] == 10000:
            best = s
    if best is None and scaling:
        best = max(scaling, key=lambda s: s["N"])
    r = None if best is None else best["ratio"]
    out.append(_target("numba 2 threads vs 1 >= 1.8x (90%)", r, None if r is None else r >= 1.8,
                       "not measured" if r is None else
                       f"{r:.2f}x ({best['model']} policy_len={best['policy_len']} N={best['N']:,}, "
                       f"{best['threads']} vs 1 threads)"))
    return out


def format_ratios(rows) -> list[str]:
    """One line per (model, policy_len, N) that pymdp ran: each fa_gpu backend's speed as a
    multiple of pymdp's (agent-steps/s ratio; above 1: faster than pymdp)."""
    lines, seen = [], {}
    for r in rows:
        if r["backend"] != "pymdp" and r.get("ratio_vs_pymdp") is not None:
            key = (r["model"], r["policy_len"], r["N"])
            seen.setdefault(key, []).append(f"{r['backend']} {r['ratio_vs_pymdp']:.1f}x")
    for (model, pl, n), parts in seen.items():
        lines.append(f"  {model:<11} policy_len={pl} N={n:>7,}: " + ", ".join(parts))
    return lines


def main(argv=None, prog=None):
    """Run the benchmark (``argv``: command-line arguments, default ``sys.argv[1:]``), print the
    report and return every result as a dict (the same content as ``--json``). ``prog``: the
    command named in ``--help`` and errors (``fa-gpu bench`` passes its own)."""
    args = _parse(argv, prog)
    forced = os.environ.pop("FA_GPU_BACKEND", None)  # each row names its backend explicitly
    try:
        if forced:
            print(f"note: ignoring FA_GPU_BACKEND={forced!r} for this run")
        return _run(args, argv)
    finally:
        if forced is not None:
            os.environ["FA_GPU_BACKEND"] = forced


def _run(args, argv):
    t_start = time.perf_counter()
    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                command=" ".join([os.path.basename(sys.executable), "-m", "benchmarks.compare",
                                  *(sys.argv[1:] if argv is None else argv)]),
                machine=_machine(), versions=_versions(), dtype=DTYPE,
                settings=dict(models=args.models, n=args.n, policy_len=args.policy_len,
                              repeats=args.repeats, min_time=args.min_time, warmup=args.warmup,
                              backends=args.backends, max_seconds=args.max_seconds))
    have_pymdp, pymdp_note = pymdp_available()
    print(f"fa_gpu {fa_gpu.__version__} vs pymdp {pymdp_note if have_pymdp else '(' + pymdp_note + ')'}"
          f" | {meta['date']}")
    print(f"machine: {meta['machine']['platform']} | {meta['machine']['cpu']} | "
          f"{meta['machine']['topology']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v))
    print(f"command: {meta['command']}")
    print(f"load average at start (1/5/15 min): {meta['machine']['loadavg_at_start']} "
          "(anything else running shares these cores and skews the numbers, most of all the "
          "multi-threaded ones)")
    sys.stdout.flush()

    specs = [MODELS[m] for m in args.models]
    cases = []  # (spec, policy_len, model)
    for spec in specs:
        pls = args.policy_len if (spec.grid and args.policy_len) else spec.policy_lens
        for pl in pls:
            if spec.build is pymdp_tmaze and not have_pymdp:
                print(f"  {spec.name}: skipped (built from pymdp: {pymdp_note})")
                continue
            cases.append((spec, pl, spec.build(pl)))

    rows, compile_s, scaling = [], {}, []
    one = mem = None
    numba_threads = None
    # ---- phase 1: fa_gpu (no JAX imported yet) ----
    phase_others = {}
    snap_fa = _cpu_snapshot()
    probe = {}  # when: machine_scaling_probe result
    if "numba" in args.backends:
        from fa_gpu.backends.numba import NumbaBackend
        numba_threads = NumbaBackend().num_threads
        if numba_threads > 1:
            probe["start"] = machine_scaling_probe(numba_threads)
        serial_below = compile_numba(compile_s)
    fa_variants = []
    if "numpy" in args.backends:
        fa_variants.append(("numpy", None, "numpy"))
    if "numba" in args.backends:
        fa_variants.append(("numba", numba_threads, "numba"))
        if numba_threads > 1:
            fa_variants.append(("numba", 1, "numba-1t"))
    for spec, pl, model in cases:
        for backend, threads, label in fa_variants:
            prev = None
            for n in args.n:
                if label == "numba-1t" and n < serial_below:
                    continue  # below SERIAL_BELOW the engine runs one thread anyway
                est = _estimate(prev, n)
                row = run_fa_cell(spec, model, pl, backend, threads, label, n, args, est)
                rows.append(row)
                prev = row
                print(f"  [{time.perf_counter() - t_start:6.1f}s] {spec.name} pl={pl} {label} N={n}: "
                      f"{row['status']}" + (f", {row['ms_per_step']:.3f} ms/step" if row["ms_per_step"] else ""))
                sys.stdout.flush()
    for r in rows:
        if r["backend"] == "numpy":
            compile_s["numpy first step of the first cell (no compile; construct excluded)"] = r["first_step_s"]
            break
    if "numba" in args.backends:
        if numba_threads > 1:
            probe["end of fa_gpu phase"] = machine_scaling_probe(numba_threads)
        one = one_agent_latency(args.one_agent_steps, "numba")
        mem = memory_at(args.mem_n, "numba")
        for r in rows:
            if r["backend"] == "numba" and r["status"].startswith("ok"):
                r1 = _find(rows, r["model"], "numba-1t", r["N"], r["policy_len"])
                if r1 is not None and r1["status"].startswith("ok"):
                    scaling.append(dict(model=r["model"], policy_len=r["policy_len"], N=r["N"],
                                        threads=r["threads"],
                                        ratio=r["agent_steps_per_s"] / r1["agent_steps_per_s"]))
    elif "numpy" in args.backends:
        mem = memory_at(args.mem_n, "numpy")

    phase_others["fa_gpu"] = _others_cores(snap_fa, _cpu_snapshot())
    # ---- phase 2: pymdp (JAX imported only now) ----
    snap_pm = _cpu_snapshot()
    pymdp_first = []
    if "pymdp" in args.backends and have_pymdp:
        runner = PymdpRunner()
        for spec, pl, model in cases:
            prev = None
            for n in args.n:
                est = _estimate(prev, n)
                row = run_pymdp_cell(runner, spec, model, pl, n, args, est)
                rows.append(row)
                prev = row
                if row["first_step_s"] is not None:
                    pymdp_first.append(row["first_step_s"])
                print(f"  [{time.perf_counter() - t_start:6.1f}s] {spec.name} pl={pl} pymdp N={n}: "
                      f"{row['status']}" + (f", {row['ms_per_step']:.3f} ms/step" if row["ms_per_step"] else ""))
                sys.stdout.flush()
        if pymdp_first:
            compile_s["pymdp jit compile + first step, per cell (min / median / max)"] = (
                min(pymdp_first), _median(pymdp_first), max(pymdp_first))
    elif "pymdp" in args.backends:
        print(f"pymdp not run: {pymdp_note}; ratio column is n/a")

    if "pymdp" in args.backends and have_pymdp:
        phase_others["pymdp"] = _others_cores(snap_pm, _cpu_snapshot())
    # ratios and ordering
    for r in rows:
        pm = _find(rows, r["model"], "pymdp", r["N"], r["policy_len"])
        if (pm is not None and pm["status"].startswith("ok") and r["status"].startswith("ok")):
            r["ratio_vs_pymdp"] = r["agent_steps_per_s"] / pm["agent_steps_per_s"]
    order = {"numpy": 0, "numba": 1, "numba-1t": 2, "pymdp": 3}
    model_order = {m: i for i, m in enumerate(args.models)}
    rows.sort(key=lambda r: (model_order[r["model"]], r["policy_len"], r["N"], order[r["backend"]]))
    targets = evaluate_targets(rows, one, mem, scaling)
    wall = time.perf_counter() - t_start

    # ---- report ----
    print()
    print(format_table(rows))
    print()
    print("Footnotes")
    print(f"  * One step = infer_states -> infer_policies -> sample_action (deterministic) -> "
          f"update_empirical_prior, {DTYPE}, all agents at once. ms/step and agent-steps/s are "
          f"the median over the timed steps (reps: at least {args.repeats}, more until they "
          f"add up to {args.min_time:g} s) after {args.warmup} warm-up step(s); "
          "observations come from each model's own generative process (fa_gpu.envs), stepped "
          "outside the timer with the actions just returned.")
    print("  * fa_gpu: Engine.step(obs int64 (N, M)) -> actions int64 (N, F) (host numpy in and "
          "out). pymdp 1.0.4: one equinox.filter_jit of the whole step, fed M numpy int arrays (N,), "
          "outputs (action, prior) waited on with jax.block_until_ready; CPU JAX, x64 off.")
    print("  * 'first s': construction excluded; the first step (numba: kernels already compiled "
          "by the warm-up below; numpy: under tracemalloc; pymdp: jit compile + run).")
    print("  * peak B/agent, fa_gpu: tracemalloc peak over Engine construction + first step, minus "
          "the engine's copy of the shared model (packed A/logA/H_A/B/C/D/E and layout tables), / N "
          "(includes the numba per-thread scratch and numpy temporaries; at N=1 this is mostly "
          "fixed overhead). pymdp: sum of .nbytes of every array in the Agent pytree (pymdp "
          "broadcasts A, B, C, D, E to the batch, so its model is per agent) + the step outputs, / N.")
    print("  * Order: all fa_gpu timings first, then pymdp (JAX imported only then), so idle "
          "JAX/OpenBLAS threads never share the cores with a fa_gpu timing.")
    print(f"  * Budget per cell: {args.max_seconds:g} s after its first step (--max-seconds). A cell "
          f"is skipped when {SAFETY:g} x its step time, extrapolated linearly from the next smaller "
          f"N (>= {EXTRAPOLATE_FROM}), times (warm-up + 1) steps would not fit; warm-up and repeats "
          "are trimmed to fit (reps column). pymdp cells are skipped when 3 x N x the model's "
          "float32 bytes exceeds 40% of MemAvailable (pymdp copies the model per agent).")
    print("  * x pymdp = agent-steps/s of the row / agent-steps/s of pymdp on the same model, "
          "policy_len and N.")
    print("  * other = average number of cores that other processes kept busy during the row's "
          "timed steps (machine-wide busy time from /proc/stat minus this process's CPU time). "
          f"On this {os.cpu_count()}-CPU machine anything above ~0.1 slows multi-threaded rows "
          "(a parallel region waits for its slowest thread); such rows are not clean measurements. "
          "'-': timed steps took under 0.5 s, too short to tell.")
    print("  * cores kept busy by other processes, averaged over each phase: " + ", ".join(
        f"{k} {'-' if v is None else format(v, '.2f')}" for k, v in phase_others.items()))
    dirty = [r for r in rows if (r.get("others_cores") or 0) > 0.1]
    if dirty:
        print(f"  * {len(dirty)} row(s) ran while other processes used > 0.1 core.")
    if scaling:
        print()
        print(f"numba thread scaling ({numba_threads} threads vs 1, agent-steps/s ratio):")
        for s in scaling:
            print(f"  {s['model']:<11} policy_len={s['policy_len']} N={s['N']:>7,}: {s['ratio']:.2f}x")
    if probe:
        print("  machine probe, a numba prange loop of pure arithmetic (no memory traffic): "
              + ", ".join(f"{v['ratio']:.2f}x at {k}" for k, v in probe.items())
              + " (well under 2x means something else was using a core)")
    print()
    print("compile / warm-up seconds:")
    for k, v in compile_s.items():
        txt = " / ".join(f"{x:.2f}" for x in v) if isinstance(v, tuple) else f"{v:.2f}"
        print(f"  {k}: {txt}")
    if one is not None:
        print()
        print(f"one agent (N=1, grid5, policy_len=1, {one['backend']}): Engine.step median "
              f"{one['median_us']:.1f} us, mean {one['mean_us']:.1f} us, p10 {one['p10_us']:.1f} us "
              f"over {one['steps']} steps")
    if mem is not None:
        print()
        print(f"per-agent memory ({mem['backend']}, grid5, policy_len=1, {DTYPE}): "
              f"{mem['bytes_per_agent']:.0f} B/agent at N={mem['N']:,} (sum of nbytes of the "
              f"per-agent arrays: prior/qs/qs_prev, q_pi, neg_efe, vfe, obs, actions, prev_actions, t, "
              f"gamma, alpha, lr), {mem['bytes_per_agent_check']:.0f} B/agent at "
              f"N={mem['N_check']:,}, analytic {mem['analytic_bytes_per_agent']} B/agent; shared "
              f"model {mem['shared_model_bytes']:,} B once")
    print()
    ratios = format_ratios(rows)
    if ratios:
        print("fa_gpu vs pymdp (agent-steps/s of fa_gpu / of pymdp, same model, policy_len and N):")
        print("\n".join(ratios))
    else:
        print(f"fa_gpu vs pymdp: no ratios (pymdp {'not asked for' if 'pymdp' not in args.backends else 'not run: ' + pymdp_note})")
    if args.targets:
        print()
        print("targets (the project's own goals for this machine class):")
        for t in targets:
            verdict = "n/a (not measured)" if t["met"] is None else ("met" if t["met"] else "NOT MET")
            print(f"  [{verdict}] {t['target']}: {t['detail']}")
    print()
    print(f"total wall time {wall:.1f} s")

    result = dict(metadata=meta, rows=rows, scaling=scaling, compile_seconds={
        k: list(v) if isinstance(v, tuple) else v for k, v in compile_s.items()},
        one_agent=one, memory=mem, machine_scaling_probe=probe or None,
        others_cores_by_phase=phase_others, targets=targets, wall_seconds=wall)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=float)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
