"""The run store: results on disk under a key that names exactly what computed them.

Layout: ``<root>/<stage>/<key>/`` holds ``config.json`` (the full description of the
run's config, for people and for the mismatch check) and one ``<name>.pt`` file per
stored object.

The key is the SHA-256 of ``describe(config)``: the config's type, its algorithm
``VERSION`` (a class attribute, bumped whenever the stage's behaviour changes) and
*every* field, defaults included, recursively (nested configs carry their own
versions, so bumping an upstream stage re-keys everything computed from it). A
changed default or a behaviour change therefore never reuses an old result.

Each object file is a one-line JSON header (stage, key, name, SHA-256 and size of
the payload) followed by the ``torch.save`` payload, written atomically (temp file,
fsync, rename). ``load`` refuses, with a ``StoreError`` naming the file and what
differs, a file of another run (stage, key or name), a damaged payload (checksum),
a folder without ``config.json`` or whose ``config.json`` describes another config.
Payloads are read with ``torch.load(..., weights_only=True)``: dicts, lists,
numbers, strings and tensors only.
"""

import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import re
import secrets
import socket
from pathlib import Path

import torch

from psputil import paths

log = logging.getLogger(__name__)

MAGIC = "psputil-store-object"
FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TEMP = re.compile(r"\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")  # the end of a temp file's name (after ".<host>")


class StoreError(RuntimeError):
    """A stored file is damaged, belongs to another run, or cannot be written."""


def describe(config):
    """JSON-ready description of a config: type, ``VERSION`` (if the type has one) and every field.

    Nested dataclasses, tuples, lists and dicts are described recursively; defaults are
    included, so changing a default changes the key.

    Raises:
        TypeError: a value that is not a dataclass, None, bool, int, float, str, list,
            tuple or dict.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        out = {"type": type(config).__name__}
        version = getattr(type(config), "VERSION", None)
        if version is not None:
            out["version"] = version
        out["fields"] = {f.name: describe(getattr(config, f.name)) for f in dataclasses.fields(config)}
        return out
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


def check_name(kind, name):
    """A stage or object name: letters, digits, ``_ . -``, not starting with a dot (no separators, no ``..``)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid {kind} name {name!r}: use letters, digits, '_', '-' and '.', "
                         "not starting with '.' and without '/' or '..'")
    return name


class RunStore:
    """Stages of work stored under ``root`` (default $PSPUTIL_STORE or <repo>/runs)."""

    def __init__(self, root=None):
        self.root = paths.store_root(root)

    def folder(self, stage, config):
        """The folder of one run (not created)."""
        return self.root / check_name("stage", stage) / key(config)

    def path(self, stage, config, name):
        """The file of one stored object (not created)."""
        return self.folder(stage, config) / f"{check_name('object', name)}.pt"

    def has(self, stage, config, name):
        """Whether the object file exists (``load`` still verifies it)."""
        return self.path(stage, config, name).is_file()

    def check_writable(self):
        """Raise ``StoreError`` unless a file can be created under the root (call before computing)."""
        probe = self.root / f".write-probe.{socket.gethostname()}.{os.getpid()}.tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StoreError(f"the run store {self.root} is not writable ({error.strerror or error}); "
                             "set PSPUTIL_STORE (or pass store=) to a writable folder") from error

    def save(self, stage, config, name, obj):
        """Store `obj` (tensors, dicts, lists, numbers, strings) atomically; returns its path."""
        path = self.path(stage, config, name)
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        payload = buffer.getvalue()
        header = {"magic": MAGIC, "format": FORMAT, "stage": stage, "key": key(config), "name": name,
                  "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
        self._ensure_folder(stage, config)
        atomic_write(path, lambda f: (f.write(json.dumps(header).encode() + b"\n"), f.write(payload)))
        return path

    def load(self, stage, config, name, map_location="cpu"):
        """Load a stored object after checking it belongs to this run and is intact.

        Raises:
            FileNotFoundError: nothing stored under that name.
            StoreError: the folder lacks config.json or describes another config, or the file
                belongs to another stage/key/name, or its payload is damaged.
        """
        path = self.path(stage, config, name)
        if not path.is_file():
            raise FileNotFoundError(f"nothing stored at {path}")
        self._check_config(stage, config)
        raw = path.read_bytes()
        line, _, payload = raw.partition(b"\n")
        try:
            header = json.loads(line)
            if not isinstance(header, dict) or header.get("magic") != MAGIC:
                raise ValueError("no psputil store header")
        except ValueError as error:
            raise StoreError(f"{path} is not a psputil store object ({error}); delete it to recompute") from error
        expected = {"stage": stage, "key": key(config), "name": name}
        differs = {k: (header.get(k), v) for k, v in expected.items() if header.get(k) != v}
        if differs:
            detail = ", ".join(f"{k} {got!r} instead of {want!r}" for k, (got, want) in differs.items())
            raise StoreError(f"{path} belongs to another run ({detail}); delete it to recompute")
        digest = hashlib.sha256(payload).hexdigest()
        if len(payload) != header.get("bytes") or digest != header.get("sha256"):
            raise StoreError(f"{path} is damaged: its contents have SHA-256 {digest} ({len(payload)} bytes) but it "
                             f"was written with {header.get('sha256')} ({header.get('bytes')} bytes); "
                             "delete it to recompute")
        try:
            return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        except Exception as error:  # torch raises several types for a damaged payload
            raise StoreError(f"{path} cannot be read back ({error}); delete it to recompute") from error

    def cached(self, stage, config, name, compute):
        """Load `name` if this run stored it, else check the store is writable, compute, store, return it."""
        if self.has(stage, config, name):
            return self.load(stage, config, name)
        self.check_writable()
        result = compute()
        self.save(stage, config, name, result)
        return result

    def _ensure_folder(self, stage, config):
        folder = self.folder(stage, config)
        if (folder / "config.json").is_file():
            self._check_config(stage, config)
            remove_stale_temp_files(folder)
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _write_error(folder, error) from error
        remove_stale_temp_files(folder)
        text = json.dumps(describe(config), indent=1, sort_keys=True)
        atomic_write(folder / "config.json", lambda f: f.write(text.encode()))

    def _check_config(self, stage, config):
        config_file = self.folder(stage, config) / "config.json"
        if not config_file.is_file():
            raise StoreError(f"{config_file} is missing, so the files beside it cannot be tied to this run; "
                             "delete the folder to recompute")
        try:
            stored = json.loads(config_file.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"corrupt run description {config_file}: {error}; delete the folder to recompute") from error
        wanted = json.loads(json.dumps(describe(config), sort_keys=True))
        if stored != wanted:
            raise StoreError(f"{config_file} describes other hyperparameters than the ones asking for it "
                             f"(stored {stored}, asked {wanted}); delete the folder to recompute")


def atomic_write(path, write):
    """Write through a temp file in the same folder (fsync, then rename over `path`).

    The temp file is named ``.<name>.<host>.<pid>.<random>.tmp``: unique per write (two threads
    may write one object), and ``remove_stale_temp_files`` can tell a dead writer's leftovers
    from a live one's.

    Raises:
        StoreError: the write failed (a full disk, a read-only or missing folder), naming the path.
    """
    path = Path(path)
    temp = path.parent / f".{path.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise _write_error(path, error) from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder):
    """Delete temp files in `folder` left by writers on this host that are no longer running."""
    host = socket.gethostname()
    for entry in Path(folder).glob(".*.tmp"):
        match = _TEMP.search(entry.name)
        if match and entry.name[:match.start()].endswith(f".{host}") and not _alive(int(match["pid"])):
            log.info("removing %s, left by a writer that stopped mid-write", entry)
            entry.unlink(missing_ok=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_error(path, error):
    if error.errno == errno.ENOSPC:
        cause = "the disk is full"
    elif error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        cause = "the folder is not writable"
    else:
        cause = error.strerror or str(error)
    return StoreError(f"cannot write {path}: {cause} ({type(error).__name__}, errno {error.errno}); "
                      "free space or point PSPUTIL_STORE at another folder, then re-run (finished work is kept)")
