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

from psputil import paths
from psputil.book import cli
from psputil.book import pages as book
from psputil.experiments import analysis, minima, plane_study, setups, units
from psputil.scale import context

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


def test_plane_parameters_of_every_profile_put_g_and_1s_on_the_grid():
    for profile in book.PROFILES:
        values = cli.parameters(profile, "section5_2")
        assert values == {k: v for k, v in cli.parameters(profile, "section5_3").items() if k in values}
        s = setups.setup(values["landscape_setup"], profile)
        layers = values["entropy2_layers"]
        analysis.PlaneConfig(analysis.pair(s, 50.0, 0), points=tuple(values["grid_points"]),
                             train_samples=values["train_samples"],
                             entropy2_layers=None if layers is None else tuple(layers))


def test_plane_config_rejects_a_grid_without_g_or_1s():
    pair = analysis.pair(setups.setup("lenet300-mnist", "smoke"), 30.0, 0)
    with pytest.raises(ValueError, match="a_range .* misses 1.0"):
        analysis.PlaneConfig(pair, a_range=(0.0, 1.2), points=(4, 3))
    with pytest.raises(ValueError, match="a_range .* misses 0.0"):
        analysis.PlaneConfig(pair, points=(4, 3))
    with pytest.raises(ValueError, match="b_range .* misses 0.0"):
        analysis.PlaneConfig(pair, points=(5, 4))


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
    for stage in ("lobster", "dense", "oneshot", "control", "plane", "facts", "transfer"):
        assert (runs / stage).is_dir() and any((runs / stage).iterdir()), f"nothing stored for {stage}"
    params = cli.parameters("smoke", "section5_2")
    s = setups.setup(params["landscape_setup"], "smoke")

    def fail(*args, **kwargs):
        raise AssertionError("the sections did not store this result")

    for module, name in ((analysis, "_compute_plane"), (minima, "_compute"), (units, "compute_control"),
                         (units, "compute_lobster"), (units, "compute_oneshot"), (units, "compute_dense")):
        monkeypatch.setattr(module, name, fail)
    ctx = context.make(store=runs, device="cpu")
    study = plane_study.plane_study(ctx, s, params["seeds"], params["rates"], params["plane_rate"],
                                    params["grid_points"], params["train_samples"], params["entropy2_layers"])
    assert study.rate == max(study.milestones) and set(study.facts) == set(params["seeds"])
    na, nb = params["grid_points"]
    for result in (*study.planes.values(), *study.slider.values()):
        assert set(result["maps"]) == set(analysis.MAP_NAMES)
        assert all(m.shape == (nb, na) and torch.isfinite(m).all() for m in result["maps"].values())
        assert result["samples"] == params["train_samples"]
        for key in ("g", "oneshot"):
            assert set(result[key]) >= {"test_error", "sparsity", "layer_sparsity", "coordinates", "entropy1"}
            assert set(result[key]["entropy1"]["per_layer"]) == {"relu1", "relu2"}
        assert result["g"]["coordinates"] == pytest.approx([0, 0], abs=1e-6)
        assert result["oneshot"]["coordinates"] == pytest.approx([1, 0], abs=1e-6)
        assert analysis.at(result, "error", 1) >= 0 and analysis.at(result, "psp_entropy1", 0) > 0
    for facts in study.facts.values():
        for role in minima.ROLES:
            eigenvalues = facts[role]["eigenvalues"]
            assert len(eigenvalues) == 5 and eigenvalues == sorted(eigenvalues, reverse=True)


def test_built_html_has_every_figure_and_the_claims_table(smoke_book):
    html, _, _ = smoke_book
    pages = {name: (html / f"{name}.html").read_text() for name in SECTIONS}
    assert re.search(r'<img[^>]+src="[^"]*\.png"', pages["section5_1"]), "Fig. 1 is missing"
    for name in ("section5_1", "section5_2"):  # a rate slider each, one picture per milestone it offers
        state = _widget_state(pages[name])
        models = [v["model_name"] for v in state.values()]
        assert models.count("SelectionSliderModel") == 1 and models.count("LinkModel") == 1, name
        slider = next(v["state"] for v in state.values() if v["model_name"] == "SelectionSliderModel")
        stack = next(v["state"] for v in state.values() if v["model_name"] == "StackModel")
        assert len(slider["_options_labels"]) >= 2 and len(stack["children"]) == len(slider["_options_labels"])
        assert "FloatProgressModel" not in models and "About this run" in pages[name]
    slider = next(v["state"] for v in _widget_state(pages["section5_2"]).values()
                  if v["model_name"] == "SelectionSliderModel")
    assert slider["index"] == len(slider["_options_labels"]) - 1  # the plane slider starts at the highest rate
    table = re.search(r'<table class="psp-claims">.*?</table>', pages["conclusions"], re.S)
    assert table, "no claims table on the conclusions page"
    claims = re.findall(r'<tr class="psp-row-0"><td data-label="claim"><strong>(C\d)</strong>', table.group(0))
    assert claims == [f"C{i}" for i in range(1, 7)]  # C6: the transfer chapter
    states = re.findall(r'<tr class="psp-row-0">.*?<span class="psp-state [\w-]+">([a-z ]+)</span>', table.group(0))
    assert len(states) == 6 and set(states) <= {"supported", "not supported", "inconclusive", "not tested"}
