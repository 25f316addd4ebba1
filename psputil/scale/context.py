"""The run context: where results are stored, which device computes, where independent units go, who hears progress.

Every cached experiment function takes one ``Context`` instead of threading
``(store, device, executor, progress)`` through its arguments.
"""

import os
from dataclasses import dataclass, field

import torch

from psputil import devices
from psputil.scale import executors
from psputil.scale.progress import Progress
from psputil.store import RunStore


@dataclass
class Context:
    """Store, device, executor and progress of one driver (a notebook, a script, the tests).

    Attributes:
        store: the ``RunStore`` results are loaded from and saved to (only the driver writes it).
        device: the ``torch.device`` units compute on.
        executor: a ``psputil.scale.executors`` executor for independent units.
        progress: a ``Progress`` reporter (terminal bar, a file the CLI follows, or silent).
    """

    store: RunStore = field(default_factory=RunStore)
    device: torch.device = field(default_factory=lambda: devices.resolve("auto"))
    executor: object = field(default_factory=executors.InProcessExecutor)
    progress: Progress = field(default_factory=Progress)

    @property
    def device_name(self):
        """The device as a string ("cpu", "cuda:0"), as units receive it."""
        return str(self.device)

    def close(self):
        """Shut the executor down (pool processes, a Ray instance this context started)."""
        self.executor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make(store=None, device="auto", executor="in-process", workers=None, address=None, progress=None):
    """A ``Context`` from plain values (what notebooks and the CLI hold).

    Args:
        store: a ``RunStore``, a folder, or None ($PSPUTIL_STORE or <repo>/runs).
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N" or a ``torch.device``.
        executor, workers, address: see ``executors.make``; a process pool with ``workers=None`` on a
            CUDA device gets one worker (every worker would open its own CUDA context on the GPU).
        progress: a ``Progress``; None follows $PSPUTIL_PROGRESS (a file the CLI prints) or stays silent.

    Raises:
        ValueError: an unknown device or executor, or bad workers.
    """
    runs = store if isinstance(store, RunStore) else RunStore(store)
    resolved = devices.resolve(device)
    if executor == "process-pool" and workers is None and resolved.type == "cuda":
        workers = 1
    pool = executors.make(executor, workers, address)
    if progress is None:
        progress = Progress(path=os.environ.get("PSPUTIL_PROGRESS") or None)
    return Context(runs, resolved, pool, progress)
