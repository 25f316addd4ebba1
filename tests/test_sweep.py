"""The executor seam and the sweep driver, on small pure functions (Ray: tests/test_ray.py)."""

from dataclasses import dataclass

import pytest
import torch

from psputil.scale import executors, sweep
from psputil.scale.context import Context
from psputil.store import RunStore


def context(root, executor=None):
    return Context(RunStore(root), executor=executor or executors.InProcessExecutor())


@dataclass(frozen=True)
class Unit:
    seed: int = 0
    fail: bool = False


def square_noise(unit):
    """A pure function of its hyperparameters: seeded random tensor, squared."""
    if unit.fail:
        raise ValueError(f"unit {unit.seed} was built to fail")
    x = torch.randn(4, generator=torch.Generator().manual_seed(unit.seed))
    return {"x": x * x, "seed": unit.seed}


def test_in_process_and_pool_give_identical_results(tmp_path):
    units = [Unit(seed) for seed in range(6)]
    reports, stored = [], []
    for executor in (executors.InProcessExecutor(), executors.ProcessPoolExecutor(2)):
        ctx = context(tmp_path / executor.name, executor)
        reports.append(sweep.run(square_noise, units, "demo", ctx))
        stored.append(sweep.results(units, "demo", ctx.store))
        executor.close()
    assert [r.computed for r in reports] == [6, 6] and reports[1].workers == 2
    for a, b in zip(*stored):
        assert torch.equal(a["x"], b["x"]) and a["seed"] == b["seed"]


def test_restart_computes_only_what_is_missing(tmp_path):
    ctx = context(tmp_path)
    units = [Unit(seed) for seed in range(5)]
    calls = []

    def interrupted(unit):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the driver is killed after three units
        calls.append(unit.seed)
        return square_noise(unit)

    with pytest.raises(KeyboardInterrupt):
        sweep.run(interrupted, units, "demo", ctx)
    calls.clear()
    report = sweep.run(lambda u: (calls.append(u.seed), square_noise(u))[1], units, "demo", ctx)
    assert (report.cached, report.computed) == (3, 2) and calls == [3, 4]


def test_failing_unit_is_retried_then_reported_and_the_rest_goes_on(tmp_path):
    ctx = context(tmp_path)
    store = ctx.store
    units = [Unit(0), Unit(1, fail=True), Unit(2)]
    attempts = []

    def counted(unit):
        attempts.append(unit.seed)
        return square_noise(unit)

    report = sweep.run(counted, units, "demo", ctx, retries=2)
    assert report.computed == 2 and len(report.failures) == 1
    failure = report.failures[0]
    assert failure.config == Unit(1, fail=True) and failure.attempts == 3
    assert "built to fail" in failure.traceback and "ValueError" in failure.traceback
    assert attempts.count(1) == 3
    assert "Unit(seed=1, fail=True)" in str(sweep.SweepFailed(report))
    assert store.has("demo", Unit(2), "result") and not store.has("demo", Unit(1, fail=True), "result")


def test_unknown_executor():
    with pytest.raises(ValueError, match="in-process, process-pool, ray"):
        executors.make("dask")
