"""The section notebooks: executed with the smoke profile into a temporary store, built with -W.

``build_smoke_book`` runs every toc notebook with papermill (smoke parameters,
PSPUTIL_STORE pointing at a temporary folder) and builds the HTML with warnings as
errors, once per test session; ``test_browser.py`` serves the same build.
"""

import json
import os
import re
import shutil

import nbformat
import pytest
import torch

from psputil import paths, store

from psputil.experiments import analysis

from psputil.book import pages as book

from psputil.book import cli

from psputil.experiments import runs as experiments

REPO = paths.REPO_ROOT
SECTIONS = ("section5_1", "section5_2", "section5_3", "transfer", "conclusions")
PLANE_KEYS = ("landscape_setup", "grid_points", "train_samples", "entropy2_layers", "points_per_pass")
_BUILT = {}


def build_smoke_book(root):
    """Execute the toc's notebooks with the smoke profile and build them with -W; returns (html, executed, store).

    Layout under `root`: _config.yml, _toc.yml, book/ (a copy), executed/, store/, _build/html.
    """
    if "html" in _BUILT:
        return _BUILT["html"], _BUILT["executed"], _BUILT["store"]
    source, executed, runs = root / "book", root / "executed", root / "store"
    shutil.copytree(REPO / "book", source, symlinks=True, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints", "_toc.yml"))
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copy(REPO / "_toc.yml", root / "_toc.yml")
    (source / "_toc.yml").symlink_to(root / "_toc.yml")
    names = cli.toc_notebooks(root / "_toc.yml", source)
    assert all(n in names for n in SECTIONS), f"the toc lacks sections: {names}"
    previous = os.environ.get("PSPUTIL_STORE")
    os.environ["PSPUTIL_STORE"] = str(runs)  # inherited by the kernels
    try:
        for name in names:
            cli.execute(name, "smoke", book=source, executed=executed)
    finally:
        if previous is None:
            os.environ.pop("PSPUTIL_STORE", None)
        else:
            os.environ["PSPUTIL_STORE"] = previous
    cli.mirror(source, executed)
    code = cli.build(executed, strict=True, config=root / "_config.yml", toc=root / "_toc.yml", quiet=True)
    assert code == 0, "jupyter-book build -W of the smoke book failed"
    _BUILT.update(html=root / "_build" / "html", executed=executed, store=runs)
    return _BUILT["html"], executed, runs


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    return build_smoke_book(tmp_path_factory.mktemp("smoke-book"))


def _widget_state(page):
    match = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', page, re.S)
    assert match, "no widget state in the page"
    return json.loads(match.group(1))["state"]


# --- parameters ---------------------------------------------------------------------


def _defaults(name):
    nb = nbformat.read(REPO / "book" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {}
    exec(cell.source, {}, values)
    return values


def test_parameters_cells_hold_the_quick_values_of_every_key():
    for name in SECTIONS:
        quick = cli.parameters("quick", name)
        defaults = _defaults(name)
        assert {k: defaults.get(k) for k in quick} == quick, f"{name}: parameters cell differs from the quick files"
        assert {"executor", "workers", "ray_address"} <= set(defaults)


def test_plane_parameters_agree_across_the_sections_that_share_the_cache():
    for profile in book.PROFILES:
        values = [{k: cli.parameters(profile, n)[k] for k in PLANE_KEYS} for n in ("section5_2", "section5_3", "conclusions")]
        assert values[0] == values[1] == values[2], f"{profile}: plane parameters differ between notebooks"
        s = book.parse_setup(values[0]["landscape_setup"], profile)
        analysis.PlaneConfig(s, 50.0, points=tuple(values[0]["grid_points"]))  # G and 1-S lie on the grid


def test_plane_config_rejects_a_grid_without_g_or_1s():
    s = experiments.setup("lenet300-mnist", "smoke")
    with pytest.raises(ValueError, match="a_range .* misses 1.0"):
        analysis.PlaneConfig(s, 30.0, a_range=(0.0, 1.2), points=(4, 3))
    with pytest.raises(ValueError, match="a_range .* misses 0.0"):
        analysis.PlaneConfig(s, 30.0, points=(4, 3))
    with pytest.raises(ValueError, match="b_range .* misses 0.0"):
        analysis.PlaneConfig(s, 30.0, points=(5, 4))


# --- the executed smoke book ----------------------------------------------------------


def test_every_section_ran_with_the_smoke_parameters(smoke_book):
    _, executed, _ = smoke_book
    smoke = cli.parameters("smoke")
    for name in SECTIONS:
        nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        assert nb.metadata["papermill"]["parameters"]["rates"] == smoke["rates"]
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], f"{name} has errors"
        assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], f"{name} wrote to stderr"
        text = json.dumps(nb.metadata.get("widgets", {}))
        assert "TqdmModel" not in text and "FloatProgressModel" not in text


def test_stored_results_have_the_expected_structure(smoke_book, monkeypatch):
    _, _, runs = smoke_book
    runs = store.RunStore(runs)
    for stage in ("lobster", "dense", "oneshot", "control", "plane", "curvature"):
        assert (runs.root / stage).is_dir() and any((runs.root / stage).iterdir()), f"nothing stored for {stage}"
    params = cli.parameters("smoke", "section5_2")
    s = book.parse_setup(params["landscape_setup"], "smoke")
    configs, _ = analysis.plane_configs(s, cli.parameters("smoke")["rates"], cli.parameters("smoke")["seeds"],
                                        params["grid_points"], params["train_samples"], params["entropy2_layers"], runs)
    assert sorted(configs) == sorted(cli.parameters("smoke")["rates"])

    def fail(*args, **kwargs):
        raise AssertionError("the sections did not store this result")

    monkeypatch.setattr(analysis, "_compute_plane", fail)
    monkeypatch.setattr(experiments, "compute_control", fail)
    for config in configs.values():
        result = analysis.plane(config, runs)
        na, nb = params["grid_points"]
        assert set(result["maps"]) == set(analysis.MAP_NAMES)
        assert all(m.shape == (nb, na) and torch.isfinite(m).all() for m in result["maps"].values())
        assert result["samples"] == params["train_samples"]
        for key in ("g", "oneshot"):
            assert set(result[key]) >= {"test_error", "sparsity", "layer_sparsity", "coordinates", "entropy1"}
            assert set(result[key]["entropy1"]["per_layer"]) == {"relu1", "relu2"}
        assert result["g"]["coordinates"] == pytest.approx([0, 0], abs=1e-6)
        assert result["oneshot"]["coordinates"] == pytest.approx([1, 0], abs=1e-6)
        assert analysis.at(result, "error", 1) >= 0 and analysis.at(result, "psp_entropy1", 0) > 0
        curvature = analysis.curvature(config, runs) if runs.has("curvature", config, "result") else None
        assert curvature is not None and len(curvature["g"]) == len(curvature["oneshot"]) == 5
        assert curvature["g"] == sorted(curvature["g"], reverse=True)
    result = experiments.controls(s, configs, cli.parameters("smoke")["seeds"], store=runs)
    assert all(result[m]["lottery"]["n"] == 1 for m in configs)


def test_built_html_has_every_figure_and_the_claims_table(smoke_book):
    html, _, _ = smoke_book
    pages = {name: (html / f"{name}.html").read_text() for name in SECTIONS}
    assert re.search(r'<img[^>]+src="[^"]*\.png"', pages["section5_1"]), "Fig. 1 is missing"
    for name, sliders in (("section5_1", 1), ("section5_2", 1), ("section5_3", 2)):
        state = _widget_state(pages[name])
        models = [v["model_name"] for v in state.values()]
        assert models.count("SelectionSliderModel") == sliders and models.count("LinkModel") == sliders, name
        stacks = [v["state"] for v in state.values() if v["model_name"] == "StackModel"]
        assert all(len(s["children"]) == len(cli.parameters("smoke")["rates"]) for s in stacks)
        assert "About this run" in pages[name]
    for name in ("section5_2", "section5_3"):  # sliders start at the highest rate
        slider = next(v["state"] for v in _widget_state(pages[name]).values() if v["model_name"] == "SelectionSliderModel")
        assert slider["index"] == len(slider["_options_labels"]) - 1
    table = re.search(r'<table class="table claims-table"[^>]*>.*?</table>', pages["conclusions"], re.S)
    assert table and all(f"<td>C{i}</td>" in table.group(0) for i in range(1, 7))  # C6: the transfer chapter
    assert re.findall(r"<td>(supported|not supported|not computed)</td>", table.group(0)).__len__() == 6
    assert "test (thresholds)" in table.group(0) and "<td>smoke</td>" in table.group(0)
