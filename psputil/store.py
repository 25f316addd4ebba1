"""The run store: results and checkpoints on disk, keyed by a hash of their hyperparameters.

Layout: ``<root>/<stage>/<key>/`` holds ``config.json`` (the hyperparameters, for
people and for a mismatch check) and one ``<name>.pt`` file per stored object.
Every object is written atomically (temp file + rename) and read back with
``torch.load(..., weights_only=True)``: dicts, lists, numbers, strings and tensors.
"""

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from psputil import paths

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """A stored file is corrupt or does not belong to the hyperparameters asking for it."""


def describe(config):
    """JSON-ready description of a dataclass: its type and the fields that differ from their defaults.

    Only non-default fields enter, so adding a field with a default keeps old keys.
    Nested dataclasses, tuples and lists are described recursively.
    """
    if dataclasses.is_dataclass(config):
        fields = {}
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if field.default is not dataclasses.MISSING and value == field.default:
                continue
            if field.default_factory is not dataclasses.MISSING and value == field.default_factory():
                continue
            fields[field.name] = describe(value)
        return {"type": type(config).__name__, "fields": fields}
    if isinstance(config, (list, tuple)):
        return [describe(v) for v in config]
    if isinstance(config, dict):
        return {str(k): describe(v) for k, v in sorted(config.items())}
    if config is None or isinstance(config, (bool, int, float, str)):
        return config
    raise TypeError(f"cannot describe {type(config).__name__} in a run key; use dataclasses and plain values")


def key(config):
    """16 hex digits of the SHA-256 of ``describe(config)``: the folder name of a run."""
    text = json.dumps(describe(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunStore:
    """Stages of work stored under ``root`` (default $PSPUTIL_STORE or <repo>/runs)."""

    def __init__(self, root=None):
        self.root = paths.store_root(root)

    def folder(self, stage, config, create=True):
        """The folder of one run, checked against its config.json if present; `create` makes it if absent."""
        folder = self.root / stage / key(config)
        description = describe(config)
        config_file = folder / "config.json"
        if config_file.exists():
            try:
                stored = json.loads(config_file.read_text())
            except json.JSONDecodeError as error:
                raise StoreError(f"corrupt run description {config_file}: {error}; delete the folder to recompute") from error
            if stored != description:
                raise StoreError(
                    f"{config_file} describes other hyperparameters than the ones asking for it "
                    f"(stored {stored}, asked {description}); delete the folder to recompute"
                )
        elif create:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(config_file, lambda f: f.write(json.dumps(description, indent=1).encode()))
        return folder

    def path(self, stage, config, name, create=True):
        return self.folder(stage, config, create) / f"{name}.pt"

    def has(self, stage, config, name):
        return (self.root / stage / key(config) / f"{name}.pt").exists()

    def save(self, stage, config, name, obj):
        """Store `obj` (tensors, dicts, lists, numbers, strings) atomically; returns its path."""
        path = self.path(stage, config, name)
        atomic_write(path, lambda f: torch.save(obj, f))
        return path

    def load(self, stage, config, name, map_location="cpu"):
        """Load a stored object; raises ``StoreError`` naming the file if it is corrupt."""
        path = self.path(stage, config, name, create=False)
        if not path.exists():
            raise FileNotFoundError(f"nothing stored at {path}")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # torch raises several types for a damaged file
            raise StoreError(f"corrupt stored file {path}: {error}; delete it to recompute") from error

    def cached(self, stage, config, name, compute):
        """Load `name` if this run stored it, else compute it, store it and return it."""
        if self.has(stage, config, name):
            return self.load(stage, config, name)
        result = compute()
        self.save(stage, config, name, result)
        return result


def atomic_write(path, write):
    """Write through a temp file in the same folder, then rename over `path`."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
