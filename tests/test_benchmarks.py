"""The benchmark scripts still run on the current API (each at its cheapest options, in a subprocess).

Each script measures ours against a baseline in one run and prints a ratio; these tests
assert only that it exits 0 and prints its ratio line (and its later parts), so a renamed or
re-laid-out API breaks CI instead of the next person who runs a benchmark. ``gpu.py --tiny`` has
its own test in test_train_stacked.py. The scripts start together (module fixture) and each test
waits for its own, so their start-up (imports, loading mnist-5k) overlaps.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds per script; they take about 10-30 s on 2 loaded cores

SCRIPTS = {  # name -> (cheapest arguments, lines its output must have: the ratio first)
    "sweep": (["--profile", "smoke", "--epochs", "1", "--units", "1", "--workers", "1", "--skip-ray",
               "--projection-steps", "1"],
              [r"process pool \(1 workers\): +[\d.]+ s +\(x[\d.]+ vs in-process, x[\d.]+ vs 1 thread",
               r"\| all \| \d+ \| \| [\d.]+ \| \|", r"\| 32 \| [\d.]+ (h|min) \| x[\d.]+ \|"]),
    "lobster": (["--epochs", "1", "--repeats", "1", "--threads", "1", "--profile", "smoke", "--target", "80"],
                [r"ratio LOBSTER/SGD: [\d.]+", r"smoke LOBSTER run .* pruning events, stopped: ",
                 r"80% (reached at epoch \d+ after [\d.]+ s|NOT reached)"]),
    "train_throughput": (["--data", "mnist-5k", "--repeats", "1", "--threads", "1"],
                         [r"fit +epoch best +[\d.]+ s .* % of peak", r"lenet5: 2,293,000 MACs/sample",
                          r"fit\+patch +epoch best", r"goals: LeNet-5 >= 60 % of peak"]),
}


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Every script started at once, each with its own empty run store; name -> (Popen, output file, store)."""
    processes = {}
    for name, (args, _) in SCRIPTS.items():
        folder = tmp_path_factory.mktemp(f"bench-{name}")
        store, log = folder / "store", folder / "output.txt"
        store.mkdir()
        env = dict(os.environ, PSPUTIL_STORE=str(store), TQDM_DISABLE="1", OMP_NUM_THREADS="1",  # 2 cores, shared
                   PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        with open(log, "w") as out:  # a file, not a pipe: nothing blocks while another script is waited for
            process = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], cwd=REPO,
                                       env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        processes[name] = (process, log, store)
    yield processes
    for process, _, _ in processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_benchmark_runs_to_its_ratio(launched, name):
    process, log, store = launched[name]
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"benchmarks/{name}.py ran over {TIMEOUT} s:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert process.returncode == 0, f"benchmarks/{name}.py exited {process.returncode}:\n{output[-4000:]}"
    for pattern in SCRIPTS[name][1]:
        assert re.search(pattern, output), f"benchmarks/{name}.py printed no line like {pattern!r}:\n{output[-4000:]}"
    assert not any(store.iterdir()), f"benchmarks/{name}.py wrote into the run store"
