"""The reproduce CLI: executor flags and what reaches each notebook (Ray itself: test_ray.py), progress lines on the
terminal, a quiet kernel, hidden parameters cells."""

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from psputil import paths

from psputil.book import cli, execution

REPO = paths.REPO_ROOT
DEMO = Path(__file__).parent / "data" / "widget_demo.ipynb"


@pytest.mark.parametrize("args, message", [
    (["--executor", "dask"], "invalid choice: 'dask'"),
    (["--workers", "0"], "--workers must be a positive number"),
    (["--ray-address", "head:6379"], "--ray-address needs --executor ray"),
])
def test_executor_flag_errors(args, message):
    result = subprocess.run([sys.executable, "-m", "psputil", "reproduce", *args], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 2 and message in result.stderr


def test_flags_reach_every_notebook(monkeypatch):
    calls, lines = [], []
    monkeypatch.setattr(cli, "toc_notebooks", lambda: ["section5_1", "transfer"])
    monkeypatch.setattr(cli, "execute",
                        lambda name, profile, device, progress=None, **kw: calls.append((name, profile, kw)))
    monkeypatch.setattr(cli, "mirror", lambda *args: None)
    monkeypatch.setattr(cli, "reproduce", functools.partial(cli.reproduce, out=lines.append))
    code = cli.main(["reproduce", "--profile", "smoke", "--no-build", "--executor", "process-pool", "--workers", "3"])
    assert code == 0
    expected = {"executor": "process-pool", "workers": 3, "ray_address": None, "download": False}
    assert calls == [("section5_1", "smoke", expected), ("transfer", "smoke", expected)]
    assert "-p executor process-pool -p workers 3" in lines[1]
    calls.clear()
    cli.main(["reproduce", "--profile", "smoke", "--no-build"])
    assert calls[0][2] == {"executor": "in-process", "workers": None, "ray_address": None, "download": False}
    calls.clear(), lines.clear()
    cli.main(["reproduce", "--profile", "quick", "--no-build"])  # no flag: the profile file's executor
    assert calls[0][2]["executor"] == "process-pool" and "executor process-pool" in lines[0]
    assert "-p executor" not in lines[1]  # the command shows only flags that differ from the file
    calls.clear(), lines.clear()
    cli.main(["reproduce", "--profile", "quick", "--no-build", "--executor", "in-process"])
    assert calls[0][2]["executor"] == "in-process" and "-p executor in-process" in lines[1]


def test_executed_notebook_gets_and_records_the_executor(tmp_path):
    source = tmp_path / "book"
    source.mkdir()
    shutil.copytree(REPO / "book" / "params", source / "params")
    shutil.copy(DEMO, source / "widget_demo.ipynb")
    target = cli.execute("widget_demo", "smoke", book=source, executed=tmp_path / "executed",
                         executor="process-pool", workers=2)
    nb = nbformat.read(target, as_version=4)
    assert nb.metadata["psputil"] == {"profile": "smoke", "executor": "process-pool", "workers": 2, "ray_address": None}
    injected = nb.metadata["papermill"]["parameters"]
    assert (injected["executor"], injected["workers"], injected["ray_address"]) == ("process-pool", 2, None)
    assert "grid_points" not in injected  # a notebook outside the schema gets what its parameters cell defines
    hidden = [c for c in nb.cells if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))]
    assert len(hidden) == 2 and all("remove-cell" in c.metadata["tags"] for c in hidden)


# --- progress on the terminal, a quiet kernel -------------------------------------------------------

PROGRESS_NOTEBOOK = """
import multiprocessing, time
from psputil.scale import context

ctx = context.make(device="cpu")
with ctx.progress.task("demo units", 3, unit="unit") as task:
    for i in range(3):
        time.sleep(0.2)
        task.update(1, step=i)
pool = multiprocessing.get_context("spawn").Pool(2)  # left running: shutting the kernel down must not SIGINT it
print(pool.map(abs, [-1, -2]))
"""


def test_reproduce_prints_the_kernels_progress_and_no_kernel_warnings(tmp_path, monkeypatch, capfd):
    book = tmp_path / "book"
    book.mkdir()
    shutil.copytree(REPO / "book" / "params", book / "params")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    parameters = "\n".join(f"{name} = None" for name in cli.schema.NOTEBOOKS["methods"])
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(PROGRESS_NOTEBOOK)]
    nbformat.write(nb, book / "methods.ipynb")
    monkeypatch.setattr(cli, "BUILD", tmp_path / "_build")
    monkeypatch.setattr(cli, "toc_notebooks", lambda: ["methods"])
    monkeypatch.setattr(cli, "mirror", lambda *args: None)
    monkeypatch.setattr(cli, "execute", functools.partial(cli.execute, book=book, executed=tmp_path / "executed"))
    lines = []
    assert cli.reproduce("smoke", "cpu", ["methods"], build_html=False, out=lines.append) == 0
    progress = [line for line in lines if line.startswith("[1/1] methods | demo units")]
    assert progress[0] == "[1/1] methods | demo units: 0/3 units, 0 s" and progress[-1].startswith(
        "[1/1] methods | demo units: 3/3 units, ") and progress[-1].endswith(", step 2")
    terminal = "".join(capfd.readouterr())
    assert "without encryption" not in terminal and "KeyboardInterrupt" not in terminal, terminal
    executed = nbformat.read(tmp_path / "executed" / "methods.ipynb", as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "demo units" not in outputs and "[1, 2]" in outputs  # progress on the terminal, not in the notebook


def test_follower_hands_over_whole_records_only(tmp_path):
    path, seen = tmp_path / "progress.jsonl", []
    path.write_text('{"what": "a", "done": 1}\n{"what": "b", "do')
    follower = execution.Follower(path, seen.append)
    follower.drain()
    assert seen == [{"what": "a", "done": 1}]
    with open(path, "a") as f:
        f.write('ne": 2}\nnot json\n')
    follower.drain()
    assert seen == [{"what": "a", "done": 1}, {"what": "b", "done": 2}]


def test_progress_printer_shows_each_tasks_first_and_last_and_throttles_the_rest():
    lines = []
    printer = execution.ProgressPrinter(lines.append, prefix="[1/2] x | ", every=3600)
    record = {"what": "LOBSTER", "unit": "epoch", "total": 10, "elapsed": 1.0, "eta": 9.0}
    for done in (0, 1, 2, 10):
        printer({**record, "done": done})
    printer({"unexpected": True})  # not a progress record: ignored
    assert lines == ["[1/2] x | LOBSTER: 0/10 epochs, 1 s, ETA 9 s", "[1/2] x | LOBSTER: 10/10 epochs, 1 s"]


def test_kernel_environment_sets_and_restores_the_variables(monkeypatch):
    import os

    monkeypatch.delenv("PSPUTIL_PROGRESS", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    seen = []
    with execution.kernel_environment(seen.append, interval=0.01):
        path = os.environ["PSPUTIL_PROGRESS"]
        assert os.environ["TQDM_DISABLE"] == "1"
        with open(path, "a") as f:
            f.write('{"what": "w", "done": 0}\n')
    assert seen == [{"what": "w", "done": 0}] and not Path(path).exists()
    assert "PSPUTIL_PROGRESS" not in os.environ and os.environ["TQDM_DISABLE"] == "0"


def test_where_to_run_takes_what_no_flag_gives_from_the_profile_file(tmp_path):
    params = tmp_path / "params"
    shutil.copytree(REPO / "book" / "params", params)
    text = (params / "quick.yaml").read_text().replace("workers: null", "workers: 3")
    (params / "quick.yaml").write_text(text)
    assert cli.where_to_run("quick", book=tmp_path) == ("process-pool", 3, None)
    assert cli.where_to_run("quick", workers=1, book=tmp_path) == ("process-pool", 1, None)
    # another executor than the file's does not inherit the file's workers
    assert cli.where_to_run("quick", "in-process", book=tmp_path) == ("in-process", None, None)
    assert cli.where_to_run("smoke", book=tmp_path) == ("in-process", None, None)


def test_a_task_counts_earlier_seconds_and_writes_its_held_back_last_update(tmp_path):
    from psputil.scale.progress import Progress

    path = tmp_path / "progress.jsonl"
    with Progress(path=str(path), interval=60).task("LOBSTER run", 10, unit="epoch", elapsed=30.0) as task:
        task.update(2, sparsity="50.00 %")  # within the interval: held back
        task.update(1, sparsity="60.00 %")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["done"] for r in records] == [0, 3] and records[-1]["sparsity"] == "60.00 %"
    last = records[-1]
    assert last["elapsed"] >= 30.0 and last["eta"] == pytest.approx(last["elapsed"] / 3 * 7, rel=0.02)
