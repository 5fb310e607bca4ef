"""fa_gpu: thousands to millions of discrete-state active-inference agents on contiguous arrays.

Same numbers and argument names as pymdp 1.0.4; see README.md. The public names are those of
``__all__``: :class:`Engine` (the agents), :class:`GenerativeModel` and
:func:`construct_policies` (their model), :class:`Population` (several engines in one shared
world), :class:`Recorder` and :func:`read_store` (trajectory stores), the modules :mod:`fa_gpu.envs` and :mod:`fa_gpu.models` (ready-made worlds and their
models) and :func:`info` (what this machine offers).
"""
from .devices import info
from .engine import Engine
from .model import GenerativeModel, construct_policies
from . import envs, models

__all__ = ["Engine", "GenerativeModel", "Population", "Recorder", "construct_policies", "envs", "info",
           "models", "read_store"]
__version__ = "0.1.0"


def __getattr__(name):
    # zarr takes about a second to import: loaded on first use of these, never by `import fa_gpu`
    if name in ("Recorder", "read_store"):
        from .runtime import recorder
        value = globals()[name] = getattr(recorder, name)  # found directly from now on
        return value
    if name == "Population":  # imports the runtime loop: on first use, keeping `import fa_gpu` light
        from .population import Population
        value = globals()[name] = Population  # found directly from now on
        return value
    raise AttributeError(f"module 'fa_gpu' has no attribute {name!r}")
