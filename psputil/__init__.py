"""psputil: the computations behind the reproducible PSP-entropy paper.

Submodules (imported on use, nothing runs at import time), in the paper's order: models,
data, train, store, pruning, landscape, hessian, psp; then experiments (setups, runs,
analyses, claims), scale (context, executors, sweeps), transfer, and book (the notebooks'
support and the CLI); helpers: paths, devices, checks, metrics, bars.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "paths", "devices", "checks", "bars", "store", "data", "models", "train", "metrics", "hessian",
    "pruning", "psp", "landscape", "scale", "experiments", "transfer", "book",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"psputil.{name}")
    raise AttributeError(f"module 'psputil' has no attribute {name!r}")
