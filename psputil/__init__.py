"""psputil: the computations behind the reproducible PSP-entropy paper.

Submodules (imported on use, nothing runs at import time): models, data, train,
store, pruning, landscape, hessian, psp.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "models", "data", "train", "store", "paths", "devices", "activations", "metrics", "pruning", "lobster",
    "oneshot", "setups", "experiments", "landscape", "grid", "hessian", "psp", "executors", "sweep", "book", "blocks",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"psputil.{name}")
    raise AttributeError(f"module 'psputil' has no attribute {name!r}")
