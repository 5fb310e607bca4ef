"""fa_gpu: thousands to millions of discrete-state active-inference agents on contiguous arrays.

Same numbers and argument names as pymdp 1.0.4; see README.md.
"""
from .engine import Engine
from .model import GenerativeModel, construct_policies
from . import models

__all__ = ["Engine", "GenerativeModel", "construct_policies", "models"]
__version__ = "0.1.0"
