"""Where psputil keeps things on disk: one place, overridable by environment variables."""

import os
from pathlib import Path

# The repository root (psputil is installed in editable mode from it).
REPO_ROOT = Path(__file__).resolve().parents[1]

# Fashion-MNIST as installed by the Debian/Ubuntu package `dataset-fashion-mnist`.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def store_root(root=None):
    """Root of the run store: `root`, else $PSPUTIL_STORE, else `<repo>/runs`."""
    return Path(root or os.environ.get("PSPUTIL_STORE") or REPO_ROOT / "runs")


def data_root(root=None):
    """Root of downloaded or user-provided data sets: `root`, else $PSPUTIL_DATA, else `<repo>/data`."""
    return Path(root or os.environ.get("PSPUTIL_DATA") or REPO_ROOT / "data")


def cache_root(root=None):
    """Root of derived files that can be rebuilt (parsed data): `root`, else $PSPUTIL_CACHE, else `<repo>/.cache`."""
    return Path(root or os.environ.get("PSPUTIL_CACHE") or REPO_ROOT / ".cache")
