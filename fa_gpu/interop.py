"""From pymdp 1.0 to fa_gpu: an `Engine` with a pymdp ``Agent``'s model *and* options.

:func:`engine_options` reads what a pymdp 1.0 ``Agent`` was built with (precisions, inference
and policy options, learning flags, batch size, float dtype) and maps it onto
:class:`fa_gpu.Engine`'s arguments, which share pymdp's names. Options fa_gpu cannot honour raise
``ValueError`` naming the option and what to do instead, rather than running something else.
``Engine.from_pymdp`` is the public entry point; this module holds the mapping so the engine
does not grow a pymdp branch.

Learning rates are not part of a pymdp agent (they are arguments of ``Agent.infer_parameters``,
default 1.0): pass ``lr_pA=...``/``lr_pB=...`` to ``Engine.from_pymdp`` when yours differ.
"""
from __future__ import annotations

import numpy as np

#: option name -> (value fa_gpu supports, why / what to do) for the ones it cannot honour
_UNSUPPORTED = {
    "use_inductive": (False, "inductive planning (H, I matrices) is not implemented in fa_gpu; "
                             "build the agent with use_inductive=False"),
    "learn_C": (False, "fa_gpu does not learn C; build the agent with learn_C=False"),
    "learn_E": (False, "fa_gpu does not learn E; build the agent with learn_E=False"),
    "learn_D": (False, "pymdp 1.0.4 keeps no pD counts (its learn_D has no effect), while "
                       "fa_gpu's learn_D updates pD; build the agent with learn_D=False, or pass "
                       "a GenerativeModel with pD to fa_gpu.Engine(..., learn_D=True)"),
    "learning_mode": ("online", "fa_gpu learns online (after every step); build the agent with "
                                "learning_mode='online'"),
    "preprocess_fn": (None, "fa_gpu does not run an observation preprocessing function; apply it "
                            "to the observations before engine.step(obs)"),
}
#: inference algorithms fa_gpu runs, as pymdp spells them
SUPPORTED_ALGOS = ("fpi", "mmp", "vmp")
#: pymdp Agent attribute -> Engine argument, carried over as they are
_CARRIED = ("num_iter", "categorical_obs", "use_utility", "use_states_info_gain", "use_param_info_gain",
            "action_selection", "sampling_mode", "learn_A", "learn_B")


def _per_agent(value, name: str, n: int):
    """pymdp keeps gamma/alpha broadcast to ``(batch_size,)``: one float when all agents agree,
    else the ``(n,)`` array (per-agent values)."""
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1 or np.all(arr == arr[0]):
        return float(arr[0])
    if arr.size != n:
        raise ValueError(f"agent.{name} has {arr.size} values but the engine has {n} agents; pass "
                         f"{name}= explicitly")
    return arr


def engine_options(agent, n_agents=None) -> dict:
    """Engine keyword arguments equivalent to a pymdp 1.0 ``agent``'s options.

    Returns ``{"n_agents", "dtype", "gamma", "alpha", "inference_algo", "inference_horizon",
    "num_iter", "categorical_obs", "use_utility", "use_states_info_gain", "use_param_info_gain", "action_selection",
    "sampling_mode", "learn_A", "learn_B"}``: ``n_agents`` defaults to ``agent.batch_size``,
    ``dtype`` is the float dtype of ``agent.A[0]``, gamma/alpha a float (or ``(N,)`` per-agent
    array). Raises ValueError naming every option fa_gpu cannot honour.
    """
    problems = []
    for name, (ok, what) in _UNSUPPORTED.items():
        value = getattr(agent, name, ok)
        differs = value is not None if ok is None else (bool(value) if isinstance(ok, bool) else value) != ok
        if differs:
            problems.append(f"{name}={value!r}: {what}")
    algo = getattr(agent, "inference_algo", "fpi")
    if algo not in SUPPORTED_ALGOS:
        problems.append(f"inference_algo={algo!r}: fa_gpu runs {', '.join(SUPPORTED_ALGOS)} only so "
                        "far; build the agent with one of them")
    if getattr(agent, "action_maps", None) is not None:
        problems.append("B_action_dependencies: actions that drive several factors are not "
                        "supported; give each factor its own control (one B action axis per factor)")
    if problems:
        raise ValueError("this pymdp Agent uses options fa_gpu cannot honour:\n  " + "\n  ".join(problems))
    n = int(agent.batch_size) if n_agents is None else n_agents
    out = {"n_agents": n, "dtype": np.dtype(np.asarray(agent.A[0]).dtype).name,
           "inference_algo": algo, "inference_horizon": getattr(agent, "inference_horizon", None)}
    if out["dtype"] not in ("float32", "float64"):
        out["dtype"] = "float32"
    for name in ("gamma", "alpha"):
        out[name] = _per_agent(getattr(agent, name), name, n)
    for name in _CARRIED:
        value = getattr(agent, name)
        out[name] = value if isinstance(value, str) else (int(value) if name == "num_iter" else bool(value))
    return out
