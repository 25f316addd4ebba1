"""Executors: where independent units of work run (in-process, a process pool, Ray).

A unit of work is a module-level function of one hyperparameter dataclass that
returns its result (plain dicts, numbers, tensors). Executors run many of them and
yield an ``Outcome`` per unit as it finishes; they never touch the run store (the
driver, ``psputil.scale.sweep``, does), so no shared file system is assumed: results travel
back through the pool's pipes or Ray's object store.

Pool and Ray workers run each unit with a fixed number of torch threads (1, or the
task's ``num_cpus`` on Ray): torch's float reductions depend on the thread count, so
results are bit-identical across executors when the in-process run uses as many.
"""

import concurrent.futures
import multiprocessing
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Optional

from psputil import checks

EXECUTOR_NAMES = ("in-process", "process-pool", "ray")


@dataclass
class Outcome:
    """What one unit of work produced: its result, or the worker's traceback."""

    config: Any
    result: Any = None
    error: Optional[str] = None
    worker: str = ""  # "host:pid" of the process that ran it
    seconds: float = 0.0  # wall time of the unit on its worker

    @property
    def ok(self):
        return self.error is None


def call(fn, config, threads=None):
    """Run ``fn(config)`` and turn an exception into the traceback text (runs on the worker).

    Args:
        threads: torch threads for this unit (None: leave the process's setting).
    """
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    worker, start = f"{socket.gethostname()}:{os.getpid()}", time.perf_counter()
    try:
        result = fn(config)
    except Exception:
        return Outcome(config, error=traceback.format_exc(), worker=worker, seconds=time.perf_counter() - start)
    return Outcome(config, result=result, worker=worker, seconds=time.perf_counter() - start)


class _Executor:
    """Shared parts: use as a context manager to close it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InProcessExecutor(_Executor):
    """Runs units one after another in this process (the default)."""

    name = "in-process"
    workers = 1

    def run(self, fn, configs, resources=None):
        for config in configs:
            yield call(fn, config)

    def close(self):
        pass


class ProcessPoolExecutor(_Executor):
    """Runs units in a pool of local worker processes (spawned: safe with torch threads)."""

    name = "process-pool"

    def __init__(self, workers=None):
        workers = checks.integer("workers", workers, low=1, optional=True)
        self.workers = workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_single_thread
        )

    def run(self, fn, configs, resources=None):
        futures = {self._pool.submit(call, fn, config): config for config in configs}
        try:
            for future in concurrent.futures.as_completed(futures):
                try:
                    yield future.result()
                except Exception:  # the worker process died (BrokenProcessPool) or the result did not pickle
                    yield Outcome(futures[future], error=traceback.format_exc())
        finally:  # the driver stopped early: drop what has not started
            for future in futures:
                future.cancel()

    def close(self):
        self._pool.shutdown(cancel_futures=True)


class RayExecutor(_Executor):
    """Runs units as Ray tasks on a local Ray instance or an existing cluster.

    Each task asks for ``resources(config)`` ({"num_cpus": 1, "num_gpus": 0.25}, default
    one CPU); a GPU request on a cluster without GPUs becomes a CPU-only task. The
    function is put into the object store once per ``run``; results come back through
    Ray. Ray retries a task whose worker process died (``max_retries``); exceptions
    raised by the unit come back as failed ``Outcome`` objects for the sweep to retry.

    Args:
        address: a cluster address ("ray://host:10001" or "host:6379"); None starts a
            local instance with this machine's CPUs and GPUs (or joins the one already
            initialised in this process).
        workers: CPUs of the local instance (None: all of them); ignored with an address.
        max_retries: Ray's retries of a task whose worker died.
    """

    name = "ray"

    def __init__(self, address=None, workers=None, max_retries=2):
        address = check_address(address)
        workers = checks.integer("workers", workers, low=1, optional=True)
        max_retries = checks.integer("max_retries", max_retries, low=0)
        try:
            import ray
        except ImportError as error:
            raise ImportError("the Ray executor needs ray: pip install 'ray>=2.9' (or pip install -e .[ray])") from error
        self._ray = ray
        self._owner = not ray.is_initialized()  # close() shuts down only what this executor started
        if self._owner:
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers, **options)
        resources = ray.cluster_resources()
        self.workers = int(resources.get("CPU", 1))
        self.gpus = float(resources.get("GPU", 0))
        self.address = ray.get_runtime_context().gcs_address  # other drivers can join with this
        self.max_retries = max_retries
        self._remote = ray.remote(call)

    def options(self, config, resources=None):
        """The Ray task options of one unit (GPU requests dropped on a cluster without GPUs)."""
        options = dict(resources(config)) if resources else {"num_cpus": 1}
        options.setdefault("num_cpus", 1)
        if not self.gpus:
            options.pop("num_gpus", None)
        return options

    def run(self, fn, configs, resources=None):
        ray = self._ray
        fn_ref = ray.put(fn)  # shipped once, not once per task (it may carry masks or states)
        pending = {}
        for config in configs:
            options = self.options(config, resources)
            threads = max(1, int(options["num_cpus"]))
            ref = self._remote.options(max_retries=self.max_retries, **options).remote(fn_ref, config, threads)
            pending[ref] = config
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                config = pending.pop(done[0])
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayError:  # worker died past max_retries, task cancelled, node lost
                    yield Outcome(config, error=traceback.format_exc())
        finally:  # the driver stopped early: cancel what is still queued or running
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self):
        if self._owner and self._ray.is_initialized():
            self._ray.shutdown()


def make(name="in-process", workers=None, address=None):
    """An executor by name: "in-process", "process-pool" or "ray".

    Args:
        workers: processes of the pool, CPUs of a local Ray instance (None: all cores); an integer >= 1.
        address: Ray cluster address (only with "ray"; None starts a local instance).

    Raises:
        ValueError: an unknown name, `workers` not None or an integer >= 1, or an address
            that is not a non-empty string or is given to another executor than "ray".
    """
    checks.choice("executor", name, EXECUTOR_NAMES)
    workers = checks.integer("workers", workers, low=1, optional=True)
    address = check_address(address)
    if address is not None and name != "ray":
        raise ValueError(f"a cluster address ({address!r}) only applies to the ray executor, not {name!r}; "
                         "drop the address or use the ray executor")
    if name == "in-process":
        return InProcessExecutor()
    if name == "process-pool":
        return ProcessPoolExecutor(workers)
    return RayExecutor(address, workers)


def check_address(address):
    """None, or a Ray cluster address: a non-empty string ("host:6379" or "ray://host:10001")."""
    if address is None:
        return None
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"address must be None or a Ray cluster address such as 'host:6379' or "
                         f"'ray://host:10001', got {address!r}")
    return address


def _single_thread():
    """Worker processes share the CPU cores: one torch thread each."""
    import torch

    torch.set_num_threads(1)
