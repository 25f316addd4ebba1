"""The Ray executor on a local 2-CPU Ray instance, with real units (smoke LeNet-300 retraining controls).

One Ray instance serves the module. Checked: a sweep on Ray stores results bit for bit
equal to the in-process executor's; a driver killed with SIGKILL mid-sweep and
restarted computes only the missing units; a unit that raises is reported with its
hyperparameters and the worker's traceback while the others finish.
"""

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

ray = pytest.importorskip("ray", reason="ray is not installed: pip install -r requirements-ray.txt (CI installs it)")

from psputil.book import cli  # noqa: E402
from psputil.experiments import runs, setups, units  # noqa: E402
from psputil.scale import context, executors, sweep  # noqa: E402
from psputil.store import RunStore  # noqa: E402

SETUP = setups.setup("lenet300-mnist", "smoke")
MILESTONE = 30.0  # a smoke milestone


def ctx_for(store, executor=None):
    return context.Context(store, context.devices.resolve("cpu"), executor or executors.InProcessExecutor())


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance with 2 CPUs for the whole module; yields its address."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def lobster_store(tmp_path_factory):
    """A store holding the smoke LOBSTER run (G's masks), computed once."""
    store = RunStore(tmp_path_factory.mktemp("lobster"))
    runs.lobster(ctx_for(store), [SETUP.lobster_run(0)])
    return store


def _store_with_lobster(lobster_store, root):
    shutil.copytree(lobster_store.root / "lobster", root / "lobster")
    return RunStore(root)


def _assert_same(a, b, where="result"):
    """Bit-for-bit equality of nested results, except wall-clock fields ("seconds")."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k != "seconds":
                _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_ray_sweep_equals_in_process_bit_for_bit(ray_address, lobster_store, tmp_path):
    seeds = [0, 1]
    reference_store = _store_with_lobster(lobster_store, tmp_path / "in-process")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray runs each 1-CPU unit with one torch thread; float sums depend on it
    controls = [SETUP.control_run(0, MILESTONE, kind, seed) for kind in ("lottery", "reinit", "random")
                for seed in seeds]
    try:
        reference = runs.controls(ctx_for(reference_store), controls)
    finally:
        torch.set_num_threads(threads)
    ray_store = _store_with_lobster(lobster_store, tmp_path / "ray")
    with executors.RayExecutor(ray_address) as executor:
        assert executor.workers == 2 and executor.gpus == 0
        on_ray = runs.controls(ctx_for(ray_store, executor), controls)
    assert ray.is_initialized(), "an executor must not shut down a Ray instance it did not start"
    for ours, theirs, run in zip(on_ray, reference, controls):
        _assert_same(ours, theirs, f"{run.kind} seed {run.seed}")
    first, second = sweep.results(controls[2:4], "control", ray_store)  # reinit seeds 0 and 1
    assert not torch.equal(first["state"]["fc1.weight"], second["state"]["fc1.weight"]), "seeds must differ"


DRIVER = textwrap.dedent("""
    import dataclasses, functools, json, sys
    from psputil.experiments import runs, setups, units
    from psputil.scale import context, executors, sweep

    address, root, epochs, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    setup = setups.setup("lenet300-mnist", "smoke")
    slow = dataclasses.replace(setup, train=dataclasses.replace(setup.train, epochs=epochs))
    controls = [slow.control_run(0, 30.0, "reinit", seed) for seed in range(count)]
    with executors.RayExecutor(address) as executor:
        ctx = context.make(store=root, device="cpu")
        ctx.executor = executor
        checkpoint, _ = runs.level(ctx, setup.lobster_run(0), 30.0)
        fn = functools.partial(units.compute_control, g_mask=checkpoint["mask"], device="cpu")
        report = sweep.run(fn, controls, "control", ctx, resources=units.resources)
    print(json.dumps({"cached": report.cached, "computed": report.computed, "failures": len(report.failures)}))
""")


def test_killed_driver_restarts_with_only_the_missing_units(ray_address, lobster_store, tmp_path):
    store = _store_with_lobster(lobster_store, tmp_path / "store")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    units, epochs = 16, 6  # ~0.3 s per unit on one thread: several seconds in all on 2 workers
    command = [sys.executable, str(script), ray_address, str(store.root), str(epochs), str(units)]
    results = store.root / "control"
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not list(results.glob("*/result.pt")):
        assert driver.poll() is None, f"the driver ended before storing anything:\n{driver.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no result stored within 90 s"
        time.sleep(0.02)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = {path: path.stat().st_mtime_ns for path in results.glob("*/result.pt")}
    print(f"killed after {len(finished)} of {units} units")
    assert 0 < len(finished) < units, f"the kill should land mid-sweep, found {len(finished)} of {units} stored"

    restarted = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    report = json.loads(restarted.stdout.strip().splitlines()[-1])
    assert report == {"cached": len(finished), "computed": units - len(finished), "failures": 0}
    assert len(list(results.glob("*/result.pt"))) == units
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items()), "a finished unit was rewritten"


def test_failing_unit_is_reported_with_its_hyperparameters_and_the_rest_goes_on(ray_address, lobster_store, tmp_path):
    store = _store_with_lobster(lobster_store, tmp_path)
    checkpoint, _ = runs.level(ctx_for(store), SETUP.lobster_run(0), MILESTONE)
    exploding = dataclasses.replace(SETUP, train=dataclasses.replace(SETUP.train, lr=1e6))
    good = [SETUP.control_run(0, MILESTONE, "lottery", seed) for seed in (0, 1)]
    bad = exploding.control_run(0, MILESTONE, "lottery", 0)
    fn = functools.partial(units.compute_control, g_mask=checkpoint["mask"], device="cpu")
    with executors.RayExecutor(ray_address) as executor:
        report = sweep.run(fn, [good[0], bad, good[1]], "control", ctx_for(store, executor), units.resources,
                           retries=1)
    assert report.computed == 2 and len(report.failures) == 1
    failure = report.failures[0]
    assert failure.config == bad and failure.attempts == 2
    assert "NonFiniteLossError" in failure.traceback and "compute_control" in failure.traceback
    host, pid = failure.worker.rsplit(":", 1)
    assert int(pid) != os.getpid(), "the traceback should come from a Ray worker"
    message = str(sweep.SweepFailed(report))
    assert "lr=1000000.0" in message and "NonFiniteLossError" in message
    assert all(store.has("control", run, "result") for run in good) and not store.has("control", bad, "result")


def test_resources_ask_for_a_gpu_share_and_fall_back_to_cpus(ray_address):
    lenet = SETUP.control_run(0, MILESTONE, "lottery", 0)
    resnet = setups.setup("resnet32-cifar10", "smoke").control_run(0, MILESTONE, "lottery", 0)
    assert units.resources(lenet) == {"num_cpus": 1, "num_gpus": 0.25}
    assert units.resources(resnet) == {"num_cpus": 1, "num_gpus": 1.0}
    with executors.RayExecutor(ray_address) as executor:
        assert executor.options(resnet, units.resources) == {"num_cpus": 1}  # this cluster has no GPU
        executor.gpus = 1.0
        assert executor.options(lenet, units.resources) == {"num_cpus": 1, "num_gpus": 0.25}
        assert executor.options(lenet) == {"num_cpus": 1}


def test_reproduce_with_ray_and_no_address_hands_the_notebooks_one_instance(ray_address, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "toc_notebooks", lambda: ["section5_1", "transfer"])
    monkeypatch.setattr(cli, "execute", lambda name, profile, device, **kw: calls.append((name, kw)))
    monkeypatch.setattr(cli, "mirror", lambda *args: None)
    assert cli.main(["reproduce", "--profile", "smoke", "--no-build", "--executor", "ray", "--workers", "2"]) == 0
    assert [name for name, _ in calls] == ["section5_1", "transfer"]
    for _, kwargs in calls:  # one Ray instance for every notebook; progress is the terminal's printer
        assert {k: v for k, v in kwargs.items() if k != "progress"} == {
            "executor": "ray", "workers": 2, "ray_address": ray_address, "download": False}
    assert ray.is_initialized()


def test_oneshot_runs_of_several_seeds_on_ray_equal_the_in_process_ones(ray_address, tmp_path):
    oneshots = [SETUP.oneshot_run(seed, 50.0) for seed in (0, 1)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = runs.oneshot_runs(ctx_for(RunStore(tmp_path / "in-process")), oneshots)
    finally:
        torch.set_num_threads(threads)
    with executors.RayExecutor(ray_address) as executor:
        on_ray = runs.oneshot_runs(ctx_for(RunStore(tmp_path / "ray"), executor), oneshots)
    for seed, (ours, theirs) in enumerate(zip(on_ray, reference)):
        _assert_same(ours, theirs, f"1-S seed {seed}")
    dense = RunStore(tmp_path / "ray").load("dense", SETUP.dense_run(1), "result")
    _assert_same(dense, RunStore(tmp_path / "in-process").load("dense", SETUP.dense_run(1), "result"))
