"""The simulation loop behind ``Engine.run``: engine step, host work, environment, recording.

One step ``t`` of :func:`run`, on the calling thread unless said otherwise:

1. ``actions = engine.step(obs)`` (all agents at once);
2. with ``host_fn``: its chunks start on the shared I/O pool (or, for ``async def host_fn``, on
   the one shared asyncio loop), and *meanwhile* ``env.step(actions)`` runs here; the next
   observations are the environment's, overridden chunk by chunk by what ``host_fn`` returns;
3. the step's *sink* work: ``recorder.record(t, actions, obs)`` and, every ``checkpoint_every``
   steps, writing a checkpoint (its arrays are copied here, between steps, so it is consistent).

``pipeline=1`` runs the sink inline. ``pipeline=2`` runs the sink of step t on a compute-pool
worker while this thread goes on with step t+1: recorder back-pressure and checkpoint file writes
(fsync) leave the critical path; at most one sink is in flight, so memory stays bounded and a sink
error surfaces within one step. With a host_fn, ``pipeline=2`` also splits the agents into two
cohorts (``_Cohorts``): cohort B's kernel runs while cohort A's host_fn chunks do, and with no
env, cohort A's next kernel runs while cohort B's chunks do. Cohort steps give exactly the
numbers of whole steps (draws are keyed by global agent index), so ``pipeline`` changes timing,
never results. While cohorts are in flight, :meth:`Engine.snapshot` may show the two halves one
step apart (each agent's own arrays are always from one step).
"""
from __future__ import annotations

import concurrent.futures
import functools
import inspect
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from ..devices import to_host
from . import pools
from .checkpoint import capture, read_run, run_state, write_atomic
from .topology import pool_sizes

__all__ = ["RunResult", "run"]

# Obs each environment's last run ended on, so run(reset=False) continues where it stopped.
_last_obs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Steps run() has recorded into each recorder: a later run appends after them.
_recorded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns. ``steps``: the steps this call ran (a resumed run: those after
    its checkpoint); ``seconds``: wall time of the steps (without the initial
    reset); ``first_step_seconds``: of its first step alone, which includes one-time costs such as
    Numba compilation on a cold cache; ``agent_steps_per_s``: ``steps * N / seconds``;
    ``obs``: int64 ``(N, M)``, the observations after the last step (the next step's input)."""

    steps: int
    seconds: float
    first_step_seconds: float
    agent_steps_per_s: float
    obs: np.ndarray = field(repr=False)


def _positive_int(name: str, value, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _run_args(steps, pipeline, checkpoint_every, checkpoint_path) -> tuple:
    """(steps, checkpoint_every) of a run, checked (Engine.run and Population.run)."""
    steps = _positive_int("steps", steps, allow_zero=True)
    if pipeline not in (1, 2):
        raise ValueError(f"pipeline must be 1 or 2, got {pipeline!r}")
    if checkpoint_every is not None:
        checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
        if checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
    return steps, checkpoint_every


class _Host:
    """``host_fn`` over fixed chunks of agents. Chunk ``k`` gets read-only ``agent_ids`` int64
    ``(n_k,)`` and ``actions`` ``(n_k, F)`` and returns ``(n_k, M)`` integer obs, or None to
    keep the environment's observations for those agents."""

    def __init__(self, fn, n: int, num_modalities: int, chunk_size, first: int = 0, last=None):
        """Agents ``first..last-1`` (default all n); ``actions``/obs rows are theirs only."""
        if not callable(fn):
            raise TypeError(f"host_fn must be callable, got {type(fn).__name__}")
        last = n if last is None else last
        self.fn, self.first, self.n, self.M = fn, first, last - first, num_modalities
        self.is_async = inspect.iscoroutinefunction(fn)
        # Several chunks per I/O thread, so one slow chunk does not leave the others idle.
        size = (-(-n // (4 * pool_sizes().io_threads)) if chunk_size is None
                else _positive_int("chunk_size", chunk_size))
        self.chunks = []
        for lo in range(first, last, size):
            ids = np.arange(lo, min(lo + size, last), dtype=np.int64)
            ids.flags.writeable = False
            self.chunks.append(ids)

    def start(self, actions: np.ndarray) -> list:
        f = self.first
        parts = [(ids, actions[ids[0] - f: ids[-1] + 1 - f]) for ids in self.chunks]
        if self.is_async:
            return [pools.run_coroutine(self.fn(ids, a)) for ids, a in parts]
        pool = pools.io_pool()
        return [pool.submit(self.fn, ids, a) for ids, a in parts]

    def finish(self, futures: list, env_obs) -> np.ndarray:
        """Wait for every chunk, then merge: ``env_obs`` (or None) overridden chunk by chunk."""
        concurrent.futures.wait(futures)  # all done before any error is raised: no stray writers
        obs = None if env_obs is None else np.array(to_host(env_obs), dtype=np.int64)
        for ids, fut in zip(self.chunks, futures):
            got = fut.result()
            lo, hi = int(ids[0]), int(ids[-1]) + 1
            r0, r1 = lo - self.first, hi - self.first
            if got is None:
                if obs is None:
                    raise ValueError(f"host_fn returned None for agents {lo}..{hi - 1}, and there "
                                     f"is no env to take their observations from")
                continue
            got = np.asarray(got)
            if got.shape != (hi - lo, self.M) or not np.issubdtype(got.dtype, np.integer):
                raise ValueError(f"host_fn must return integer obs of shape ({hi - lo}, {self.M}) "
                                 f"for agents {lo}..{hi - 1} (or None); got {got.dtype} {got.shape}")
            if obs is None:
                obs = np.empty((self.n, self.M), dtype=np.int64)
            obs[r0:r1] = got
        return obs


class _Cohorts:
    """``pipeline=2`` with a host_fn: agents in two halves A and B stepped one after the other,
    so one half's kernel runs while the other half's host_fn chunks do. Cohort steps give exactly
    the numbers of whole steps (random draws are keyed by global agent index).

    Per step: kernel B || host A; then host B || (with no env) kernel A of the next step. With an
    env, ``env.step`` needs every agent's action, so it runs after both kernels, beside host B.
    """

    def __init__(self, engine, host_fn, n, M, chunk_size):
        self.engine, self.h, self.n = engine, n // 2, n
        self.a = _Host(host_fn, n, M, chunk_size, 0, self.h)
        self.b = _Host(host_fn, n, M, chunk_size, self.h, n)
        self.next_a = None  # kernel A of the next step, started early

    def step(self, obs, env, early: bool):
        """(actions (N, F), next obs (N, M)); ``early`` starts the next step's kernel A."""
        eng, h, n = self.engine, self.h, self.n
        pa = self.next_a if self.next_a is not None else eng.step_async(obs[:h], agents=(0, h))
        self.next_a = None
        act_a = pa.result()
        pb = eng.step_async(obs[h:], agents=(h, n))
        fut_a = self.a.start(act_a)  # host A || kernel B
        act_b = pb.result()
        actions = np.concatenate([act_a, act_b])
        actions.flags.writeable = False
        fut_b = self.b.start(act_b)
        env_obs = None if env is None else env.step(actions)  # || host A, B
        obs_a = self.a.finish(fut_a, None if env_obs is None else env_obs[:h])
        if early and env is None:
            self.next_a = eng.step_async(obs_a, agents=(0, h))  # kernel A (t+1) || host B
        obs_b = self.b.finish(fut_b, None if env_obs is None else env_obs[h:])
        return actions, np.concatenate([obs_a, obs_b])

    def settle(self) -> None:
        """Finish an early kernel (before a checkpoint or at the end)."""
        if self.next_a is not None:
            self.engine.wait()


class _Sink:
    """Runs each step's recording/checkpoint job inline (``pipeline=1``) or on a compute-pool
    worker one step behind (``pipeline=2``). The compute pool, not the I/O pool: the I/O pool is
    busy with host_fn chunks exactly while the sink should run."""

    def __init__(self, pipeline: int):
        self.background, self.pending = pipeline == 2, None

    def submit(self, job) -> None:
        if not self.background:
            job()
            return
        self.drain()
        self.pending = pools.compute_pool().submit(job)

    def drain(self) -> None:
        """Wait for the job in flight; re-raise its error here."""
        if self.pending is not None:
            fut, self.pending = self.pending, None
            fut.result()


def _sink_job(recorder, t, actions, obs, qs, checkpoint, path) -> None:
    if recorder is not None:
        if qs is None:
            recorder.record(t, actions, obs)
        else:
            recorder.record(t, actions, obs, qs=qs)
    if checkpoint is not None:
        flush = getattr(recorder, "flush", None)
        if flush is not None:  # every row the checkpoint counts is on disk before it is
            flush()
        write_atomic(checkpoint, path)


def _progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is a convenience: no tqdm, no bar
        return None
    # One update of N per step: tqdm's own rate is then agent-steps/s.
    return tqdm(total=total, unit="agent-step", unit_scale=True, desc=desc, dynamic_ncols=True)


class _Clock:
    """Wall time, the first step's time and the tqdm bar of a run's steps ``first..steps-1`` of
    ``n`` agents each; :meth:`result` makes its :class:`RunResult`."""

    def __init__(self, first: int, steps: int, n: int, progress: bool, desc: str):
        self.first, self.steps, self.n = first, steps, n
        self.bar = _progress_bar((steps - first) * n, progress, desc)
        self.t0, self.t_first = time.perf_counter(), 0.0

    def tick(self, i: int, done: int = 1) -> None:
        """Steps ``i..i+done-1`` are done."""
        if i == self.first:
            self.t_first = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.update(done * self.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def result(self, obs) -> RunResult:
        seconds, done = time.perf_counter() - self.t0, self.steps - self.first
        return RunResult(steps=done, seconds=seconds, first_step_seconds=self.t_first,
                         agent_steps_per_s=done * self.n / seconds if seconds > 0 else float("inf"),
                         obs=obs)


def run(engine, env, steps: int, *, host_fn=None, recorder=None, checkpoint_every=None,
        checkpoint_path=None, progress: bool = True, pipeline: int = 1, chunk_size=None,
        reset: bool = True, obs=None, resume=None) -> RunResult:
    """Step ``engine`` and ``env`` together for ``steps`` steps (see the module docstring).

    Parameters
    ----------
    engine : Engine
    env : object with ``reset(n) -> obs`` and ``step(actions) -> obs`` (int ``(N, M)``), e.g.
        :class:`fa_gpu.envs.GridWorldEnv`; may be None when ``host_fn`` supplies every
        observation and ``obs`` the first ones.
    steps : int >= 0
    host_fn : callable, optional
        ``host_fn(agent_ids, actions) -> obs chunk or None``, sync or ``async def``; called per
        chunk of agents every step, concurrently (sync: I/O pool threads; async: the shared
        event loop). It may block on I/O. Exceptions propagate after all chunks finished.
    recorder : fa_gpu.Recorder, optional
        Receives ``record(t, actions, obs)`` every step (``obs``: that step's input; with
        ``record_beliefs``, also the posterior ``qs`` of the step); appends after the steps
        earlier runs recorded into it. The caller closes it.
    checkpoint_every, checkpoint_path :
        Save the engine (:func:`fa_gpu.runtime.checkpoint.save` format) to ``checkpoint_path``
        after every ``checkpoint_every`` steps, replacing the previous checkpoint atomically,
        with the run's state: the step reached, the next observations, the environment's
        ``state()`` and the recorder's position (its rows are flushed to disk first).
    resume : path, optional
        Continue the run whose checkpoint is at ``resume``: call it on the engine loaded from
        it (``Engine.load(path).run(env, steps, resume=path, ...)``), with the run's arguments
        (``steps`` is the run's total, so the call that started the run finishes it), an
        environment like the run's (its ``set_state`` takes the saved state) and a recorder
        opened with ``resume=True`` on the run's store (rewound to the checkpoint's step, so
        no step is missing or recorded twice). The steps after the checkpoint are run again
        and give the same numbers as the first time: a run killed after a checkpoint and
        resumed ends as one never interrupted.
    progress : bool
        tqdm bar in agent-steps/s (silently absent without tqdm).
    pipeline : {1, 2}
        2: recording and checkpoint writes of step t overlap step t+1 (module docstring).
    chunk_size : int, optional
        Agents per ``host_fn`` call (default: N / (4 x I/O threads), rounded up).
    reset : bool
        True: ``engine.reset()`` and ``env.reset(N)`` first (learned parameters are kept).
        False: continue from the observations ``env``'s last ``run`` ended on.
    obs : int ``(N, M)``, optional
        First observations; override both of the above (e.g. after ``Engine.load``).

    Returns
    -------
    RunResult(steps, seconds, first_step_seconds, agent_steps_per_s, obs)
    """
    steps, checkpoint_every = _run_args(steps, pipeline, checkpoint_every, checkpoint_path)
    if env is None and host_fn is None:
        raise ValueError("run needs an env, or a host_fn that returns every observation")
    n, M = engine.n_agents, engine.config.num_modalities
    host = None if host_fn is None else _Host(host_fn, n, M, chunk_size)
    cohorts = (_Cohorts(engine, host_fn, n, M, chunk_size)
               if pipeline == 2 and host_fn is not None and n >= 2 else None)

    first = 0
    if resume is not None:
        saved = read_run(resume, engine)
        first = saved["step"]
        if first > steps:
            raise ValueError(f"{resume} was taken at step {first} of its run, past steps={steps} "
                             f"(steps is the run's total)")
        if env is not None:
            if saved["env"] is None or not callable(getattr(env, "set_state", None)):
                raise ValueError(f"{resume} holds no environment state, or {type(env).__name__} "
                                 f"has no set_state(): cannot continue this environment")
            env.set_state(saved["env"])
        obs = saved["obs"]
        if recorder is not None:
            recorder.rewind(saved["recorded"])
            _recorded[recorder] = saved["recorded"]
    elif reset:
        engine.reset()
        start = None if env is None else env.reset(n)
        obs = start if obs is None else obs
    else:
        start = None if env is None else _last_obs.get(env)
        obs = start if obs is None else obs
    if obs is None:
        raise ValueError("no first observations: pass obs=..., or reset=True with an env "
                         "(reset=False continues only an env that an earlier run() stepped)")

    rec_start = 0 if recorder is None else _recorded.get(recorder, 0) - first
    beliefs = recorder is not None and getattr(recorder, "made_for", {}).get("record_beliefs", False)
    sink = _Sink(pipeline)
    clock = _Clock(first, steps, n, progress, f"fa_gpu[{engine.backend}]")
    try:
        for i in range(first, steps):
            ckpt_due = bool(checkpoint_every) and (i + 1) % checkpoint_every == 0
            if cohorts is not None:
                actions, nxt = cohorts.step(obs, env, early=i + 1 < steps and not ckpt_due)
            else:
                actions = engine.step(obs)
                actions.flags.writeable = False  # shared with host_fn, env and the sink
                futures = None if host is None else host.start(actions)
                env_obs = None if env is None else env.step(actions)  # overlaps the host_fn chunks
                nxt = env_obs if host is None else host.finish(futures, env_obs)

            qs = [np.array(q) for q in engine.qs] if beliefs else None
            ckpt = None
            if ckpt_due:
                state = None if env is None or not callable(getattr(env, "state", None)) else env.state()
                recorded = 0 if recorder is None else rec_start + i + 1
                ckpt = capture(engine, run_state(i + 1, steps, recorded, nxt, state))
            if recorder is not None or ckpt is not None:
                sink.submit(functools.partial(_sink_job, recorder, rec_start + i, actions, obs,
                                              qs, ckpt, checkpoint_path))
            if recorder is not None:
                _recorded[recorder] = rec_start + i + 1
            obs = nxt
            clock.tick(i)
        sink.drain()
    finally:
        if cohorts is not None:
            cohorts.settle()
        clock.close()
        if sink.pending is not None:  # an error is propagating: still never leave a writer behind
            concurrent.futures.wait([sink.pending])
    obs = to_host(obs)
    if env is not None:
        _last_obs[env] = obs
    return clock.result(obs)
