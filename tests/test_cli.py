"""The reproduce CLI's executor flags: validation, and what reaches each notebook (Ray itself: test_ray.py)."""

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from psputil import paths

from psputil.book import cli

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
    monkeypatch.setattr(cli, "execute", lambda name, profile, device, **kw: calls.append((name, profile, kw)))
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
