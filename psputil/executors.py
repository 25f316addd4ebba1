"""Executors: where independent units of work run (in-process, a process pool, Ray).

A unit of work is a module-level function of one hyperparameter dataclass that
returns its result (plain dicts, numbers, tensors). Executors run many of them and
yield an ``Outcome`` per unit as it finishes; they never touch the run store (the
driver, ``psputil.sweep``, does), so no shared file system is assumed.
"""

import concurrent.futures
import multiprocessing
import os
import traceback
from dataclasses import dataclass
from typing import Any, Optional

EXECUTOR_NAMES = ("in-process", "process-pool", "ray")


@dataclass
class Outcome:
    """What one unit of work produced: its result, or the worker's traceback."""

    config: Any
    result: Any = None
    error: Optional[str] = None

    @property
    def ok(self):
        return self.error is None


def call(fn, config):
    """Run ``fn(config)`` and turn an exception into the traceback text (runs on the worker)."""
    try:
        return Outcome(config, result=fn(config))
    except Exception:
        return Outcome(config, error=traceback.format_exc())


class InProcessExecutor:
    """Runs units one after another in this process (the default)."""

    name = "in-process"
    workers = 1

    def run(self, fn, configs, resources=None):
        for config in configs:
            yield call(fn, config)

    def close(self):
        pass


class ProcessPoolExecutor:
    """Runs units in a pool of local worker processes (spawned: safe with torch threads)."""

    name = "process-pool"

    def __init__(self, workers=None):
        self.workers = workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_single_thread
        )

    def run(self, fn, configs, resources=None):
        futures = [self._pool.submit(call, fn, config) for config in configs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()

    def close(self):
        self._pool.shutdown()


class RayExecutor:
    """Runs units as Ray tasks on a local Ray instance or an existing cluster.

    Args:
        address: a cluster address ("ray://host:10001" or "host:6379"); None starts a
            local instance with this machine's CPUs and GPUs.
        workers: CPUs of the local instance (None: all of them).
    """

    name = "ray"

    def __init__(self, address=None, workers=None):
        try:
            import ray
        except ImportError as error:
            raise ImportError("the Ray executor needs ray: pip install 'ray>=2.9' (or pip install -e .[ray])") from error
        self._ray = ray
        if not ray.is_initialized():
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers, **options)
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(call)

    def run(self, fn, configs, resources=None):
        ray = self._ray
        pending = []
        for config in configs:
            options = resources(config) if resources else {"num_cpus": 1}
            # Ray itself retries a task whose worker died (max_retries); exceptions come back as Outcomes.
            pending.append(self._remote.options(max_retries=2, **options).remote(fn, config))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def close(self):
        self._ray.shutdown()


def make(name="in-process", workers=None, address=None):
    """An executor by name: "in-process", "process-pool" or "ray"."""
    if name == "in-process":
        return InProcessExecutor()
    if name == "process-pool":
        return ProcessPoolExecutor(workers)
    if name == "ray":
        return RayExecutor(address, workers)
    raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTOR_NAMES)}")


def _single_thread():
    """Worker processes share the CPU cores: one torch thread each."""
    import torch

    torch.set_num_threads(1)
