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

from psputil.book import cli

from psputil.scale import executors

from psputil.experiments import runs as experiments

from psputil.scale import sweep
from psputil.store import RunStore  # noqa: E402

SETUP = experiments.setup("lenet300-mnist", "smoke")
MILESTONE = 30.0  # the smoke setup's milestone


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
    experiments.lobster_run(SETUP, 0, store, device="cpu")
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
    try:
        reference = experiments.controls(SETUP, seeds=seeds, store=reference_store, device="cpu")
    finally:
        torch.set_num_threads(threads)
    ray_store = _store_with_lobster(lobster_store, tmp_path / "ray")
    with executors.RayExecutor(ray_address) as executor:
        assert executor.workers == 2 and executor.gpus == 0
        on_ray = experiments.controls(SETUP, seeds=seeds, store=ray_store, device="cpu", executor=executor)
    assert ray.is_initialized(), "an executor must not shut down a Ray instance it did not start"
    assert on_ray == reference
    runs = [experiments.ControlRun(SETUP, kind, MILESTONE, seed) for kind in ("lottery", "reinit", "random")
            for seed in seeds]
    for ours, theirs, run in zip(sweep.results(runs, "control", ray_store),
                                 sweep.results(runs, "control", reference_store), runs):
        _assert_same(ours, theirs, f"{run.kind} seed {run.seed}")
    first, second = sweep.results(runs[2:4], "control", ray_store)  # reinit seeds 0 and 1
    assert not torch.equal(first["state"]["fc1.weight"], second["state"]["fc1.weight"]), "seeds must differ"


DRIVER = textwrap.dedent("""
    import dataclasses, functools, json, sys
    from psputil.scale import executors
    from psputil.experiments import runs as experiments
    from psputil.scale import sweep
    from psputil.store import RunStore

    address, root, epochs, units = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    setup = experiments.setup("lenet300-mnist", "smoke")
    store = RunStore(root)
    checkpoint, _ = experiments.g_checkpoint(setup, 30.0, store=store, device="cpu")
    slow = dataclasses.replace(setup, train=dataclasses.replace(setup.train, epochs=epochs))
    runs = [experiments.ControlRun(slow, "reinit", 30.0, seed) for seed in range(units)]
    fn = functools.partial(experiments.compute_control, g_mask=checkpoint["mask"], device="cpu")
    with executors.RayExecutor(address) as executor:
        report = sweep.run(fn, runs, "control", store, executor, resources=experiments.resources, progress=False)
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
    checkpoint, _ = experiments.g_checkpoint(SETUP, MILESTONE, store=store, device="cpu")
    exploding = dataclasses.replace(SETUP, train=dataclasses.replace(SETUP.train, lr=1e6))
    good = [experiments.ControlRun(SETUP, "lottery", MILESTONE, seed) for seed in (0, 1)]
    bad = experiments.ControlRun(exploding, "lottery", MILESTONE, 0)
    fn = functools.partial(experiments.compute_control, g_mask=checkpoint["mask"], device="cpu")
    with executors.RayExecutor(ray_address) as executor:
        report = sweep.run(fn, [good[0], bad, good[1]], "control", store, executor, experiments.resources,
                           retries=1, progress=False)
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
    lenet = experiments.ControlRun(SETUP, "lottery", MILESTONE)
    resnet = experiments.ControlRun(experiments.setup("resnet32-cifar10", "smoke"), "lottery", MILESTONE)
    assert experiments.resources(lenet) == {"num_cpus": 1, "num_gpus": 0.25}
    assert experiments.resources(resnet) == {"num_cpus": 1, "num_gpus": 1.0}
    with executors.RayExecutor(ray_address) as executor:
        assert executor.options(resnet, experiments.resources) == {"num_cpus": 1}  # this cluster has no GPU
        executor.gpus = 1.0
        assert executor.options(lenet, experiments.resources) == {"num_cpus": 1, "num_gpus": 0.25}
        assert executor.options(lenet) == {"num_cpus": 1}


def test_reproduce_with_ray_and_no_address_hands_the_notebooks_one_instance(ray_address, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "toc_notebooks", lambda: ["a", "b"])
    monkeypatch.setattr(cli, "parameter_files", lambda profile, name: [])
    monkeypatch.setattr(cli, "execute", lambda name, profile, device, **kw: calls.append((name, kw)))
    monkeypatch.setattr(cli, "mirror", lambda: None)
    monkeypatch.setattr(cli, "_profile_of", lambda notebook: "smoke")
    assert cli.main(["reproduce", "--profile", "smoke", "--no-build", "--executor", "ray", "--workers", "2"]) == 0
    assert calls == [(name, {"executor": "ray", "workers": 2, "ray_address": ray_address}) for name in ("a", "b")]
    assert ray.is_initialized()


def test_oneshot_runs_of_several_seeds_on_ray_equal_the_in_process_ones(ray_address, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = [experiments.oneshot_run(SETUP, 50.0, seed, tmp_path / "in-process", device="cpu")
                     for seed in (0, 1)]
    finally:
        torch.set_num_threads(threads)
    with executors.RayExecutor(ray_address) as executor:
        on_ray = experiments.oneshot_runs(SETUP, [50.0], (0, 1), tmp_path / "ray", device="cpu", executor=executor)
    assert list(on_ray) == [(50.0, 0), (50.0, 1)]
    for seed, theirs in enumerate(reference):
        _assert_same(on_ray[(50.0, seed)], theirs, f"1-S seed {seed}")
    dense = RunStore(tmp_path / "ray").load("dense", experiments.DenseRun(SETUP, 1), "result")
    _assert_same(dense, RunStore(tmp_path / "in-process").load("dense", experiments.DenseRun(SETUP, 1), "result"))
