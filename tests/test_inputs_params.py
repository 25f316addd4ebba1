"""Notebook parameters: one schema (psputil.book.params), one file per profile, checked in well under a second,
also under papermill."""

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest

from psputil import paths
from psputil.book import cli, params

REPO = paths.REPO_ROOT
CHECK_NOTEBOOK = Path(__file__).parent / "data" / "params_check.ipynb"


# --- the cases of the issue: each names the parameter, the value, what is valid and the papermill syntax -----


@pytest.mark.parametrize("values, fragments", [
    ({"rates": "[200]"}, ["parameter rates = '[200]' (the text '[200]', not a list", "-y 'rates: [80.0, 95.0]'"]),
    ({"rates": [200]}, ["rates[0] must be a finite number in (0, 100), got 200"]),
    ({"rates": [-5, 30]}, ["rates[0] must be a finite number in (0, 100), got -5",
                           "Valid: None, or a non-empty list of percentages in (0, 100)"]),
    ({"setups": "lenet300-mnist"}, ["setups must be a list of names", "got 'lenet300-mnist'",
                                    "-y 'setups: [\"lenet300-mnist\"]'"]),
    ({"seeds": 0}, ["parameter seeds = 0 is not valid: seeds must be a list of integers >= 0", "-y 'seeds: [0, 1, 2]'"]),
    ({"seeds": []}, ["seeds must hold at least one value, got an empty list"]),
    ({"grid_points": 5}, ["parameter grid_points = 5", "must be a list of integers", "-y 'grid_points: [9, 9]'"]),
    ({"grid_points": [8, 9]}, ["grid_points[0] = 8 points along a over [-0.5, 1.5] miss 0 and 1",
                               "valid counts along a: 5, 9, 13, 17"]),
    ({"grid_points": [9, 4]}, ["grid_points[1] = 4 points along b over [-1.0, 1.0] miss 0"]),
    ({"entropy2_layers": "relu1"}, ["entropy2_layers must be a list of names", "got 'relu1'"]),
    ({"landscape_setup": "lenet5-mnist", "entropy2_layers": ["relu9"]},
     ["unknown ReLU layers 'relu9' of lenet5", "valid: relu1, relu2, relu3"]),
    ({"train_samples": 0}, ["parameter train_samples = 0", "train_samples must be an integer >= 1, got 0",
                            "-p train_samples 1000"]),
    ({"setups": ["lenet9-mnist"]}, ["unknown setups 'lenet9-mnist'; valid: lenet300-mnist, lenet5-mnist"]),
    ({"landscape_setup": "lenet9"}, ["unknown setup 'lenet9'"]),
    ({"sedes": [0]}, ["unknown parameter(s) 'sedes' (did you mean 'seeds'?) for notebook conclusions; valid: profile,"]),
    ({"seeds": [0, 1, 0]}, ["seeds must be distinct seeds, got 0 more than once"]),
    ({"plane_rate": 100}, ["plane_rate must be a finite number in (0, 100), got 100", "-p plane_rate 95.0"]),
    ({"plane_rate": "high"}, ["parameter plane_rate = 'high' is not valid"]),
    ({"device": "mps"}, ["unknown device 'mps'; valid here: auto, cpu"]),
    ({"executor": "dask"}, ["unknown executor 'dask'; valid: in-process, process-pool, ray"]),
    ({"workers": "2"}, ["workers must be an integer >= 1 or None, got '2'", "-p workers 2"]),
    ({"executor": "in-process", "ray_address": "head:6379"}, ["ray_address = 'head:6379' needs executor ray"]),
    ({"download": "yes"}, ["download must be True or False, got 'yes'"]),
    ({"points_per_pass": 0}, ["points_per_pass must be an integer >= 1, got 0"]),
])
def test_bad_values_name_parameter_value_validity_and_papermill_syntax(values, fragments):
    with pytest.raises(ValueError) as caught:
        params.check(values, "conclusions")  # the notebook that takes every parameter but the run's
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("values, fragment", [
    ({"pairs": "lenet5-mnist"}, "pairs must be None or a non-empty list of [source setup, target data set] pairs"),
    ({"pairs": [["lenet5-mnist"]]}, "pairs[0] must be a pair [source setup, target data set]"),
    ({"pairs": [["lenet5-mnist", "svhn"]]}, "unknown pairs[0] target data set 'svhn'"),
    ({"transfer_seeds": 0}, "transfer_seeds must be a list of integers >= 0"),
    ({"seeds": [0, 1], "transfer_seeds": [2]}, "transfer_seeds = [2] is not valid: 2 not in seeds = [0, 1]"),
    ({"finetune_epochs": -1}, "finetune_epochs must be an integer >= 0, got -1"),
    ({"resamples": 1.5}, "resamples must be an integer >= 1, got 1.5"),
    ({"order2_max_neurons": 0}, "order2_max_neurons must be an integer >= 1, got 0"),
])
def test_transfer_parameters(values, fragment):
    with pytest.raises(ValueError) as caught:
        params.check(values, "transfer")
    assert fragment in str(caught.value)


def test_good_values_are_normalised_and_unknown_notebooks_refused():
    out = params.check({"seeds": (0, 1), "rates": [80, 95], "workers": None, "grid_points": [17, 17],
                        "plane_rate": 99, "control_seeds": [0]}, "conclusions")
    assert out == {"seeds": [0, 1], "rates": [80.0, 95.0], "workers": None, "grid_points": [17, 17],
                   "plane_rate": 99.0, "control_seeds": [0]}
    assert params.check({"seeds": [1], "grid_points": [9, 9]}, None) == {"seeds": [1], "grid_points": [9, 9]}
    with pytest.raises(ValueError, match="unknown notebook 'section9'; the book's notebooks: methods, section5_1"):
        params.check({}, "section9")


def test_other_notebooks_parameters_are_accepted_and_ignored_unknown_names_refused():
    values = {"seeds": [0], "grid_points": [8, 8], "pairs": "not checked here"}  # 5.1 takes neither
    assert params.check(values, "section5_1") == {"seeds": [0]}
    with pytest.raises(ValueError) as caught:
        params.check({**values, "sedes": [0]}, "section5_1")
    message = str(caught.value)
    assert "unknown parameter(s) 'sedes' (did you mean 'seeds'?) for notebook section5_1" in message
    assert "a profile file may also hold the other notebooks' parameters (landscape_setup" in message
    assert "did you mean 'plane_rate'" in str(pytest.raises(ValueError, params.check, {"plane_rat": 1}, "methods").value)


def test_the_schema_covers_every_notebook_and_each_parameter_belongs_to_one():
    used = {name for names in params.NOTEBOOKS.values() for name in names}
    assert used == set(params.SCHEMA) == set(params.ALL)
    for names in params.NOTEBOOKS.values():
        assert names[:len(params.RUN)] == params.RUN and len(set(names)) == len(names)
    assert params.NOTEBOOKS["methods"] == params.RUN


def test_namespace_ignores_other_globals_and_reads_papermills_injected_names():
    namespace = {"__builtins__": {}, "np": np, "_ih": ["", "profile = 'quick'"]}
    namespace.update(cli.parameters("quick", "section5_1"))
    assert params.check(namespace, "section5_1")["profile"] == "quick"
    namespace["_ih"].append("# Parameters\nseeds = [3]\ngrid_points = [9, 9]\n")  # another notebook's: ignored
    assert params.check(namespace, "section5_1")["seeds"] == [0, 1, 2]
    namespace["_ih"].append("# Parameters\nseeds = [3]\nsedes = [0]\n")
    with pytest.raises(ValueError, match="unknown parameter.*'sedes' \\(did you mean 'seeds'\\?\\)"):
        params.check(namespace, "section5_1")
    del namespace["seeds"]
    namespace["_ih"].pop()
    with pytest.raises(ValueError, match="notebook section5_1: its parameters cell must define seeds"):
        params.check(namespace, "section5_1")


def test_check_is_fast_and_imports_no_torch():
    code = ("import sys, time; start = time.perf_counter(); from psputil.book import params; "
            "values = dict(profile='paper', seeds=[0, 1], setups=['lenet5-mnist'], rates=None, grid_points=[17, 17], "
            "landscape_setup='resnet32-cifar10', entropy2_layers=['layer3.4.relu2'], pairs=None, plane_rate=None, "
            "control_seeds=[0], transfer_seeds=[1]); "
            "params.check(values, 'conclusions'); "
            "print('torch' in sys.modules or 'scipy' in sys.modules, time.perf_counter() - start)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    imported, seconds = result.stdout.split()
    assert imported == "False" and float(seconds) < 0.5, (imported, seconds)


# --- the schema agrees with the notebooks and with the modules it copies names from ----------------------


def _parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {}
    exec(cell.source, {}, values)
    return values


def test_every_book_notebook_has_a_schema_entry_matching_its_parameters_cell():
    """Each notebook's parameters cell defines its own parameters, in schema order, with the quick file's values."""
    quick = cli.parameters("quick")
    for name in cli.toc_notebooks():
        defaults = _parameters_cell(REPO / "book" / f"{name}.ipynb")
        assert tuple(defaults) == params.NOTEBOOKS[name], name
        assert defaults == {k: quick[k] for k in params.NOTEBOOKS[name]}, f"{name}: parameters cell differs from quick.yaml"
        params.check(defaults, name)
        for profile in ("smoke", "quick", "paper"):
            params.check(cli.parameters(profile, name), name)


def test_each_profile_file_holds_every_parameter_once():
    import yaml

    for profile in params.PROFILES:
        path = REPO / "book" / "params" / f"{profile}.yaml"
        keys = [line.split(":")[0] for line in path.read_text().splitlines() if line and line[0].isalpha()]
        assert keys == list(params.ALL), f"{path.name}: every parameter once, in schema order"
        values = yaml.safe_load(path.read_text())
        assert params.check(values, None) and values["profile"] == profile
        assert len(values["seeds"]) >= (3 if profile != "smoke" else 2)
    assert sorted(p.name for p in (REPO / "book" / "params").iterdir()) == ["README.md", "paper.yaml", "quick.yaml",
                                                                             "smoke.yaml"]
    quick = cli.parameters("quick")
    assert (quick["seeds"], quick["control_seeds"], quick["rates"], quick["plane_rate"]) == ([0, 1, 2], [0, 1], None, None)
    smoke = cli.parameters("smoke")
    assert smoke["seeds"] == [0, 1] and len(smoke["setups"]) == 1


def test_copied_names_are_pinned_to_their_sources():
    from psputil import data, models
    from psputil.book import pages
    from psputil.experiments import analysis, setups
    from psputil.psp.activations import relu_modules

    assert params.PROFILES == setups.PROFILES == pages.PROFILES
    assert params.SETUP_NAMES == setups.SETUP_NAMES
    assert params.DATASET_NAMES == data.DATASET_NAMES
    for name in params.SETUP_NAMES:
        assert setups.setup(name, "quick").model == name.split("-")[0]
    for model, layers in params.RELU_LAYERS.items():
        assert layers == tuple(n for n, _ in relu_modules(models.build(model)))
    defaults = {f.name: f.default for f in dataclasses.fields(analysis.PlaneConfig)}
    assert (defaults["a_range"], defaults["b_range"]) == (params.A_RANGE, params.B_RANGE)
    for n in range(1, 30):  # PlaneConfig's own test of the grid: np.isclose on np.linspace
        for (lo, hi), wanted in ((params.A_RANGE, (0.0, 1.0)), (params.B_RANGE, (0.0,))):
            on_grid = all(np.isclose(np.linspace(lo, hi, n), w, atol=1e-9).any() for w in wanted)
            assert on_grid == all(params._on_grid(lo, hi, n, w) for w in wanted), (lo, hi, n)


# --- papermill: the first code cell fails fast on a bad parameter ----------------------------------------


def _run(tmp_path, parameters):
    output = tmp_path / "out.ipynb"
    started = time.perf_counter()
    try:
        papermill.execute_notebook(str(CHECK_NOTEBOOK), str(output), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, log_output=False, cwd=str(tmp_path))
        error = None
    except papermill.PapermillExecutionError as caught:
        error = caught
    nb = nbformat.read(output, as_version=4)
    check_cell = next(c for c in nb.cells if "params.check" in c.source)
    return error, check_cell.metadata["papermill"]["duration"], time.perf_counter() - started, nb


@pytest.mark.parametrize("parameters, fragment", [
    ({"rates": "[200]"}, "parameter rates = '[200]' (the text '[200]', not a list"),  # what -p rates '[200]' passes
    ({"seeds": [0], "sedes": [0]}, "unknown parameter(s) 'sedes' (did you mean 'seeds'?)"),  # a typo'd key in -f/-y
])
def test_papermill_run_fails_in_the_first_code_cell(tmp_path, parameters, fragment):
    error, cell_seconds, _, nb = _run(tmp_path, parameters)
    assert error is not None and error.ename == "ValueError" and fragment in error.evalue
    assert cell_seconds < 5, f"the check cell took {cell_seconds:.1f} s of kernel time"
    assert not nb.cells[-1].get("outputs"), "the cell after the check ran"


def test_papermill_run_with_good_parameters_passes(tmp_path):
    error, cell_seconds, _, nb = _run(tmp_path, {"seeds": [3], "rates": [50, 80]})
    assert error is None and cell_seconds < 5
    assert "checked: [3] [50.0, 80.0]" in nb.cells[-1].outputs[0]["text"]
