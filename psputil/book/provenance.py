"""What a page records about how its figures were computed: commit, run keys, data, versions, sizes.

Small pure helpers behind ``pages.Page.figure`` and ``Page.run_info``:

* ``git_commit``: the checked-out commit and whether tracked files differ from it.
* ``run_keys``: "stage/key" of stage configs (``store.key``), the folders their results live in.
* ``data_configs``: the ``DataConfig``s a set of stage configs trained or tested on.
* ``seconds``: the compute time recorded in stored results ("seconds", or their epoch histories).
* ``versions``: the installed versions of the libraries the book depends on.
* ``split_sizes``: train/valid/test sizes of a ``DataConfig``: loaded where the data set is
  on disk, otherwise computed from the data set's facts (``data.DATASETS``) as ``data.load``
  would split it.
"""

import dataclasses
import importlib.metadata
import math
import numbers
import platform
import subprocess
import sys

from psputil import data, paths, store

# The run-store stage each stage config is saved under (psputil.experiments.runs, analysis, transfer.study).
LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "ipywidgets", "papermill", "myst-nb",
             "jupyter-book", "psputil")


def git_commit(root=paths.REPO_ROOT):
    """(commit hash, dirty) of the checkout at `root`; ("unknown", False) outside a git checkout.

    `dirty` is true when tracked or new (not ignored) files differ from the commit.
    """
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, dirty


def commit_label(commit, dirty):
    """12 characters for a caption: the hash, its last one replaced by "+" when the tree had changes."""
    if commit == "unknown":
        return commit
    return commit[:11] + "+" if dirty else commit[:12]


def run_keys(results):
    """ "stage/key" of each stage config (or ``(stage, config)`` pair) in `results`, in order, without repeats.

    Raises:
        ValueError: a config whose type declares no ``STAGE``, given without its stage.
    """
    keys = []
    for item in results:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            stage, config = item
        else:
            config = item
            stage = getattr(type(config), "STAGE", None)
            if stage is None:
                raise ValueError(f"{type(config).__name__} declares no run-store STAGE; pass (stage, config), "
                                 "e.g. ('curvature', plane_config)")
        key = f"{store.check_name('stage', stage)}/{store.key(config)}"
        if key not in keys:
            keys.append(key)
    return keys


def data_configs(results):
    """The ``DataConfig``s inside stage configs (or ``(stage, config)`` pairs), in order of appearance, once each."""
    found = []

    def walk(value):
        if isinstance(value, data.DataConfig):
            if value not in found:
                found.append(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                walk(getattr(value, field.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(list(results))
    return found


def seconds(results):
    """Compute time in seconds recorded in results: a number, a result dict, or an iterable of those.

    A dict counts its "seconds" if it has one, else the sum of its "history" records'
    "seconds" (an epoch history), else 0.
    """
    if isinstance(results, numbers.Real) and not isinstance(results, bool):
        value = float(results)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {results!r}")
        return value
    if isinstance(results, dict):
        if "seconds" in results:
            return seconds(results["seconds"])
        return sum(seconds(h.get("seconds", 0)) for h in results.get("history") or () if isinstance(h, dict))
    if isinstance(results, (str, bytes)) or not hasattr(results, "__iter__"):
        raise ValueError(f"seconds takes a number, a result dict or an iterable of those, got {results!r}")
    return sum(seconds(item) for item in results)


def versions():
    """{library: version} of the book's dependencies, and Python's.

    A module already imported reports its own ``__version__`` (torch's carries its CUDA build,
    "2.4.1+cu121"); the others their installed distribution's version.
    """
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        module = sys.modules.get(name.replace("-", "_"))
        try:
            found[name] = str(getattr(module, "__version__", None) or importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def split_sizes(config, load=True):
    """{"train", "valid", "test", "measured"} sample counts of a ``DataConfig``.

    Args:
        config: the ``DataConfig``.
        load: load the data set when it is on disk ("measured": True); otherwise, or when it is
            missing, compute the sizes from ``data.DATASETS`` as ``data.load`` splits them
            ("measured": False).
    """
    if load:
        try:
            splits = data.load(config, "cpu")
        except FileNotFoundError:
            pass
        else:
            return {"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test), "measured": True}
    facts = data.info(config.name)
    pool, test = facts.train_size, facts.test_size  # the training pool and test set as load returns them
    valid = int(round(config.valid_fraction * pool))
    train = pool - valid
    cap = lambda n, size: n if size is None else min(n, size)  # noqa: E731 (seeded subsets)
    return {"train": cap(train, config.train_size), "valid": valid, "test": cap(test, config.test_size),
            "measured": False}


def size_text(sizes):
    """ "3,600 train / 400 valid / 1,000 test" from a dict with those keys."""
    return " / ".join(f"{sizes[part]:,} {part}" for part in ("train", "valid", "test"))
