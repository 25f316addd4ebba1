"""psputil: the computations behind the reproducible PSP-entropy paper.

Submodules (imported on use, nothing runs at import time): models, data, train,
store, pruning, landscape, hessian, psp.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "paths", "devices", "checks", "store", "data", "models", "train", "metrics", "hessian",
    "pruning", "psp", "landscape", "scale", "experiments", "transfer", "book",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"psputil.{name}")
    raise AttributeError(f"module 'psputil' has no attribute {name!r}")
