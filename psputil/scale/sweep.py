"""The sweep driver: run the units a store still lacks on an executor, store results as they arrive.

A driver killed mid-sweep and restarted resubmits only what is missing: every
finished unit was written to the run store the moment its result came back.
A unit that raises is retried a bounded number of times, then reported with its
hyperparameters and the worker's traceback while the rest of the sweep goes on.
"""

import contextlib
import logging
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from psputil.scale import executors as executors_module
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


def run(fn, configs, stage, store=None, executor=None, resources=None, retries=2, progress=True, name="result"):
    """Compute ``fn(config)`` for every config whose result `store` lacks, and store it.

    Args:
        fn: a module-level function of one hyperparameter dataclass, returning its result.
        configs: the units of the sweep (hashable into run-store keys).
        stage: run-store stage name the results go under.
        store: a ``RunStore`` (default: the default root).
        executor: an executor from ``psputil.executors`` (default: in-process).
        resources: callable config -> Ray resource dict ({"num_cpus": 1, "num_gpus": 0.25});
            e.g. ``psputil.experiments.resources``. The other executors ignore it.
        retries: extra attempts for a unit that raised.
        progress: show a tqdm bar over units.
        name: file name of each result in its run folder.

    Returns:
        ``SweepReport``; failures are in ``report.failures`` (nothing is raised).
    """
    store = store or store_module.RunStore()
    executor = executor or executors_module.InProcessExecutor()
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    start = time.perf_counter()
    configs = list(configs)
    units = {store_module.key(c): c for c in configs}  # each unit once
    todo = [c for c in units.values() if not store.has(stage, c, name)]
    report = SweepReport(executor.name, executor.workers, cached=len(units) - len(todo))
    bar = tqdm(total=len(todo), desc=f"{stage} ({executor.name})", disable=not progress or not todo, leave=False)
    attempts = {store_module.key(c): 0 for c in todo}
    while todo:
        again = []
        # closing(): a driver stopped mid-sweep (Ctrl-C, an error) cancels the executor's pending units
        with contextlib.closing(executor.run(fn, todo, resources)) as outcomes:
            for outcome in outcomes:
                unit = store_module.key(outcome.config)
                attempts[unit] += 1
                report.unit_seconds += outcome.seconds
                if outcome.ok:
                    store.save(stage, outcome.config, name, outcome.result)
                    report.computed += 1
                    bar.update()
                elif attempts[unit] <= retries:
                    log.warning("unit %s failed (attempt %d), retrying:\n%s", outcome.config, attempts[unit], outcome.error)
                    again.append(outcome.config)
                else:
                    log.error("unit %s failed %d times:\n%s", outcome.config, attempts[unit], outcome.error)
                    report.failures.append(Failure(outcome.config, outcome.error, attempts[unit], outcome.worker))
                    bar.update()
        todo = again
    bar.close()
    report.seconds = time.perf_counter() - start
    return report


def results(configs, stage, store=None, name="result"):
    """The stored results of a finished sweep, in the order of `configs`."""
    store = store or store_module.RunStore()
    return [store.load(stage, c, name) for c in configs]
