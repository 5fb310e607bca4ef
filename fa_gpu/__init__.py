"""fa_gpu: thousands to millions of discrete-state active-inference agents on contiguous arrays.

Same numbers and argument names as pymdp 1.0.4; see README.md.
"""
from .devices import info
from .engine import Engine
from .model import GenerativeModel, construct_policies
from . import envs, models

__all__ = ["Engine", "GenerativeModel", "Population", "Recorder", "construct_policies", "envs", "models", "info"]
__version__ = "0.1.0"


def __getattr__(name):
    # Recorder needs zarr (the runtime extra): imported on first use, never by `import fa_gpu`
    if name == "Recorder":
        from .runtime.recorder import Recorder
        return Recorder
    if name == "Population":  # imports the runtime loop: on first use, keeping `import fa_gpu` light
        from .population import Population
        return Population
    raise AttributeError(f"module 'fa_gpu' has no attribute {name!r}")
