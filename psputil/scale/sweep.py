"""The sweep driver: run the units a store still lacks on an executor, store results as they arrive.

A driver killed mid-sweep and restarted resubmits only what is missing: every
finished unit was written to the run store the moment its result came back.
A unit that raises is retried a bounded number of times, then reported with its
hyperparameters and the worker's traceback while the rest of the sweep goes on.
"""

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field

from psputil import store as store_module

log = logging.getLogger(__name__)


@dataclass
class Failure:
    """A unit that failed every attempt."""

    config: object
    traceback: str
    attempts: int
    worker: str = ""  # "host:pid" of the last attempt

    def __str__(self):
        where = f" (last on {self.worker})" if self.worker else ""
        return f"{self.config} failed {self.attempts} time(s){where}:\n{self.traceback}"


@dataclass
class SweepReport:
    """What a sweep did: units loaded from the store, computed now, and failed."""

    executor: str
    workers: int
    cached: int = 0
    computed: int = 0
    failures: list = field(default_factory=list)
    seconds: float = 0.0  # wall time of the sweep on the driver
    unit_seconds: float = 0.0  # summed wall time of every attempt on its worker

    @property
    def ok(self):
        return not self.failures


class SweepFailed(RuntimeError):
    """Some units of a sweep failed every attempt (their results are missing)."""

    def __init__(self, report):
        self.report = report
        details = "\n\n".join(str(f) for f in report.failures)
        super().__init__(f"{len(report.failures)} unit(s) failed; the other results are stored.\n{details}")


def run(fn, configs, stage, ctx, resources=None, retries=2, name="result", what=None, save=None, inputs=None):
    """Compute ``fn(config)`` for every config whose result the store lacks, and store it.

    Only this driver reads and writes the store: ``fn`` receives its config (and whatever
    the caller bound into it with ``functools.partial``) and returns the result.

    Args:
        fn: a module-level function of one hyperparameter dataclass, returning its result.
        configs: the units of the sweep (hashable into run-store keys).
        stage: run-store stage name the results go under.
        ctx: a ``psputil.scale.context.Context`` (store, executor, progress).
        resources: callable config -> Ray resource dict ({"num_cpus": 1, "num_gpus": 0.25});
            the other executors ignore it.
        retries: extra attempts for a unit that raised.
        name: file name of each result in its run folder.
        what: what the progress line calls these units (default: the stage).
        save: callable (config, result) storing a finished unit (default: ``store.save(stage,
            config, name, result)``); a unit counts as done when ``name`` exists in its folder.
        inputs: callable config -> dict of upstream inputs (states, masks) the driver resolved;
            the unit is called as ``fn(config, **inputs(config))`` and receives only its own.

    Returns:
        ``SweepReport``; failures are in ``report.failures`` (nothing is raised).

    Raises:
        store.StoreError: the store is not writable (checked before any unit runs).
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    store, executor = ctx.store, ctx.executor
    if inputs is not None:
        fn, resources = functools.partial(_with_inputs, fn), _unwrapped(resources)
    start = time.perf_counter()
    units = {store_module.key(c): c for c in configs}  # each unit once
    todo = [c for c in units.values() if not store.has(stage, c, name)]
    report = SweepReport(executor.name, executor.workers, cached=len(units) - len(todo))
    if not todo:
        return report
    store.check_writable()
    attempts = {store_module.key(c): 0 for c in todo}
    with ctx.progress.task(f"{what or stage} ({executor.name})", len(todo)) as task:
        while todo:
            again = []
            # closing(): a driver stopped mid-sweep (Ctrl-C, an error) cancels the executor's pending units
            items = todo if inputs is None else [(c, inputs(c)) for c in todo]
            with contextlib.closing(executor.run(fn, items, resources)) as outcomes:
                for outcome in outcomes:
                    if inputs is not None:
                        outcome.config = outcome.config[0]
                    unit = store_module.key(outcome.config)
                    attempts[unit] += 1
                    report.unit_seconds += outcome.seconds
                    if outcome.ok:
                        if save is None:
                            store.save(stage, outcome.config, name, outcome.result)
                        else:
                            save(outcome.config, outcome.result)
                        report.computed += 1
                        task.update()
                    elif attempts[unit] <= retries:
                        log.warning("unit %s failed (attempt %d), retrying:\n%s", outcome.config, attempts[unit],
                                    outcome.error)
                        again.append(outcome.config)
                    else:
                        log.error("unit %s failed %d times:\n%s", outcome.config, attempts[unit], outcome.error)
                        report.failures.append(Failure(outcome.config, outcome.error, attempts[unit], outcome.worker))
                        task.update()
            todo = again
    report.seconds = time.perf_counter() - start
    return report


def run_or_raise(fn, configs, stage, ctx, resources=None, retries=2, name="result", what=None, save=None, inputs=None):
    """``run``, raising ``SweepFailed`` when some unit failed every attempt (the others are stored)."""
    report = run(fn, configs, stage, ctx, resources, retries, name, what, save, inputs)
    if not report.ok:
        raise SweepFailed(report)
    return report


def results(configs, stage, store, name="result"):
    """The stored results of a finished sweep, in the order of `configs`."""
    return [store.load(stage, c, name) for c in configs]


def _with_inputs(fn, item):
    """Run one unit with the inputs the driver resolved for it: ``item`` is (config, kwargs)."""
    config, kwargs = item
    return fn(config, **kwargs)


def _unwrapped(resources):
    if resources is None:
        return None
    return lambda item: resources(item[0])
