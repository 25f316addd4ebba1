"""The notebooks' shared setup (``pages.start``, ``Page``), figure provenance, data fingerprints, citation labels."""

import re
import time

import nbformat
import papermill
import pytest
import torch
import yaml

from psputil import data, paths, store
from psputil.book import bibliography, cli, pages, params, provenance
from psputil.experiments import analysis, setups

REPO = paths.REPO_ROOT


def _namespace(profile="smoke", notebook="section5_1", **changes):
    """A notebook namespace as papermill leaves it: the profile file's values of the notebook, then `changes`."""
    namespace = {"__builtins__": {}, "_ih": [""]}
    namespace.update(cli.parameters(profile, notebook))
    namespace.update(device="cpu", **changes)
    return namespace


@pytest.fixture
def page(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPUTIL_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("PSPUTIL_PROGRESS", raising=False)
    threads = torch.get_num_threads()
    started = pages.start("section5_1", _namespace())
    yield started
    started.close()
    torch.set_num_threads(threads)


# --- start ---------------------------------------------------------------------------------------


def test_start_checks_makes_the_context_and_resolves_the_setups(page, tmp_path):
    smoke = cli.parameters("smoke", "section5_1")
    assert page.params == {**smoke, "device": "cpu"} and page.profile == "smoke" and page.notebook == "section5_1"
    assert page.ctx.device == torch.device("cpu") and torch.get_num_threads() == 1
    assert page.ctx.store.root == tmp_path / "store" and page.ctx.executor.name == "in-process"
    assert not page.ctx.progress.path and not page.ctx.progress.bar  # no $PSPUTIL_PROGRESS: silent
    assert page.setups == {"lenet300-mnist": setups.setup("lenet300-mnist", "smoke")} and page.missing == {}
    assert page.notes() is None
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", page.commit) and page.elapsed() > 0
    config = page.setups["lenet300-mnist"].data
    assert page.data[config]["checksum"] == data.fingerprint(data.load(config))["checksum"]


def test_start_refuses_bad_parameters_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPUTIL_STORE", str(tmp_path / "store"))
    with pytest.raises(ValueError, match="parameter seeds = 0 is not valid"):
        pages.start("section5_1", _namespace(seeds=0))
    namespace = _namespace()
    namespace["_ih"].append("# Parameters\nsedes = [0]\ngrid_points = [9, 9]\n")
    with pytest.raises(ValueError, match="unknown parameter.*'sedes'"):
        pages.start("section5_1", namespace)
    with pytest.raises(ValueError, match="unknown notebook 'section9'"):
        pages.start("section9", namespace)
    assert not (tmp_path / "store").exists()


def test_missing_data_becomes_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPUTIL_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("PSPUTIL_DATA", str(tmp_path / "data"))
    with pages.start("section5_1", _namespace("quick", setups=["lenet300-mnist", "resnet32-cifar10"])) as page:
        assert list(page.setups) == ["lenet300-mnist"] and list(page.missing) == ["resnet32-cifar10"]
        note = page.notes()._repr_html_()
        assert "Data missing: resnet32-cifar10 skipped" in note and str(tmp_path / "data") in note
    assert page.closed


def test_start_resolves_the_setups_each_notebook_names(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPUTIL_STORE", str(tmp_path / "store"))
    with pages.start("section5_2", _namespace("smoke", "section5_2")) as page:
        assert list(page.setups) == [cli.parameters("smoke")["landscape_setup"]]
    with pages.start("methods", _namespace("smoke", "methods"), setups=[]) as page:
        assert page.setups == {} and set(page.params) == set(params.RUN)


# --- figure captions and the run line --------------------------------------------------------------


def test_figure_caption_names_commit_runs_data_seeds_device_and_compute_time(page):
    setup = page.setups["lenet300-mnist"]
    runs = [setup.lobster_run(0), setup.lobster_run(1)]
    plane = analysis.PlaneConfig(analysis.pair(setup, 30.0, 0), points=(5, 3))
    summaries = [{"history": [{"seconds": 30.0}, {"seconds": 45.0}]}, {"seconds": 15.5}]
    caption = page.figure(3, "Test error against compression.", results=[*runs, ("curvature", plane)],
                          seconds=pages.seconds(summaries))
    html = caption._repr_html_()
    assert "<strong>Figure 3:</strong> Test error against compression." in html
    assert f"commit {provenance.commit_label(page.commit, page.dirty)}" in html
    for key in [f"lobster/{store.key(r)}" for r in runs] + [f"curvature/{store.key(plane)}"]:
        assert key in html and f"{key.split('/')[0]}/{key.split('/')[1][:12]}" in html
    fingerprint = data.fingerprint(data.load(setup.data))
    assert f"mnist-5k ({provenance.size_text(fingerprint)} images, checksum {fingerprint['checksum'][:12]})" in html
    assert "profile smoke" in html and "seeds 0, 1" in html and "device cpu" in html
    assert "computed in 1 min 30 s" in html  # 30 + 45 + 15.5 seconds of compute, not the page's time
    assert "<summary>Library versions and full run keys</summary>" in html and f"torch {torch.__version__}" in html


def test_figure_needs_the_compute_time_and_known_stages(page):
    run = page.setups["lenet300-mnist"].lobster_run(0)
    with pytest.raises(ValueError, match="figure\\(\\) needs seconds"):
        page.figure(1, "x", results=[run])
    with pytest.raises(ValueError, match="Pair declares no run-store STAGE; pass \\(stage, config\\)"):
        page.figure(1, "x", results=[analysis.pair(page.setups["lenet300-mnist"], 30.0, 0)], seconds=1)
    caption = page.figure("2a", "Data named explicitly.", seconds=2.0, data=["lenet300-mnist", "fashion-mnist"],
                          seeds=[7])._repr_html_()
    assert "Figure 2a:" in caption and "seeds 7" in caption and "fashion-mnist (" in caption and "runs none" in caption


def test_run_info_is_one_folded_line_with_parameters_versions_and_commit(page):
    block = page.run_info(extra={"note": "demo"})
    html = block._repr_html_()
    assert html.startswith("<details><summary>About this run: smoke profile, cpu")
    for text in ("parameter seeds: <code>[0, 1]</code>", f"torch: <code>{torch.__version__}", "note: <code>demo",
                 "python -m psputil papermill-command --profile smoke section5_1", f"commit: <code>{page.commit}"):
        assert text in html
    assert block._repr_markdown_().startswith("```{dropdown} About this run")


def test_close_shuts_the_executor_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPUTIL_STORE", str(tmp_path / "store"))
    page = pages.start("methods", _namespace("smoke", "methods", executor="process-pool", workers=1), setups=[])
    closed = []
    page.ctx.executor.close = lambda: closed.append(True)
    page.close()
    page.close()
    assert closed == [True]


# --- provenance helpers ---------------------------------------------------------------------------


def test_fingerprint_is_a_checksum_of_exactly_the_split_tensors():
    config = data.DataConfig("mnist-5k", train_size=600, test_size=300)
    first, again = data.fingerprint(data.load(config)), data.fingerprint(data.load(config))
    assert first == again and (first["train"], first["valid"], first["test"], first["size"]) == (600, 400, 300, 1300)
    assert re.fullmatch(r"[0-9a-f]{16}", first["checksum"])
    other = data.DataConfig("mnist-5k", train_size=600, test_size=300, split_seed=1)
    assert data.fingerprint(data.load(other)) != first
    splits = data.load(config)
    splits.test.images[0, 0, 0, 0] += 1e-6
    assert data.fingerprint(splits)["checksum"] != first["checksum"]
    with pytest.raises(ValueError, match="fingerprint needs the DataSplits"):
        data.fingerprint(config)


def test_split_sizes_computed_as_the_loader_splits():
    checked = 0
    for profile in setups.PROFILES:
        for name in setups.SETUP_NAMES:
            config = setups.setup(name, profile).data
            computed, loaded = provenance.split_sizes(config, load=False), provenance.split_sizes(config)
            assert computed["measured"] is False
            if loaded["measured"]:
                assert {**loaded, "measured": False} == computed, (profile, name)
                checked += 1
    assert checked >= 6  # mnist-5k and synthetic CIFAR-10 need no download
    assert provenance.size_text({"train": 3600, "valid": 400, "test": 1000}) == "3,600 train / 400 valid / 1,000 test"


def test_seconds_run_keys_and_data_configs():
    assert provenance.seconds([{"history": [{"seconds": 1.5}, {"lr": 0.1}]}, 2, {"seconds": 0.5}, {}]) == 4.0
    with pytest.raises(ValueError, match="finite number >= 0"):
        provenance.seconds(-1)
    setup = setups.setup("lenet5-fashion", "quick")
    control = setup.control_run(0, 90.0, "random", 1)
    assert provenance.run_keys([control, control]) == [f"control/{store.key(control)}"]
    assert provenance.data_configs([control, setup.dense_run(0)]) == [setup.data]
    assert provenance.commit_label("0123456789abcdef", True) == "0123456789a+"


# --- papermill without the CLI ----------------------------------------------------------------------


def test_start_runs_under_papermill_with_the_whole_profile_file(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell(params.parameters_cell("methods", cli.parameters("quick")),
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('from psputil.book import pages\n'
                                  'page = pages.start("methods", globals(), setups=[])\n'
                                  'print(page.profile, sorted(page.params), page.ctx.store.root)\npage.close()'),
    ]
    nbformat.write(nb, tmp_path / "methods.ipynb")
    injected = yaml.safe_load((REPO / "book" / "params" / "smoke.yaml").read_text())  # what -f smoke.yaml injects
    started = time.perf_counter()
    papermill.execute_notebook(str(tmp_path / "methods.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={**injected, "device": "cpu"}, kernel_name="python3", progress_bar=False,
                               cwd=str(tmp_path))
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    text = out.cells[-1].outputs[0]["text"]
    assert text.startswith("smoke ['device', 'download', 'executor', 'profile', 'ray_address', 'workers']")
    assert time.perf_counter() - started < 60


# --- the References list ----------------------------------------------------------------------------


def test_bibliography_labels_read_like_the_citations():
    from pybtex.database import parse_file

    entries = parse_file(str(REPO / "book" / "references.bib")).entries
    labels = {key: bibliography.author_year(entry) for key, entry in entries.items()}
    assert labels["frankle2019lottery"] == "Frankle and Carbin, 2019"
    assert labels["tartaglione2020pruning"] == "Tartaglione et al., 2020"
    assert labels["pearlmutter1994fast"] == "Pearlmutter, 1994"
    assert len(set(labels.values())) == len(labels)
    style = bibliography.AuthorYearLabels()
    assert list(style.format_labels([entries["frankle2019lottery"]] * 2)) == ["Frankle and Carbin, 2019a",
                                                                            "Frankle and Carbin, 2019b"]
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert "psputil.book.bibliography" in config["sphinx"]["extra_extensions"]
    assert config["sphinx"]["config"]["bibtex_default_style"] == bibliography.NAME
    assert "{cite}" not in (REPO / "book" / "references.md").read_text()  # no note meant for authors
    assert not any("cited by the paper" in str(e.fields.get("note", "")) for e in entries.values())


def test_text_formats_numbers_keeps_strings_and_names_what_is_missing():
    assert pages.text(1.234, "{:.2f} %", missing="not run") == "1.23 %"
    assert pages.text("ran", "{:.2f} %") == "ran"
    assert pages.text(None, missing="not run") == "not run"
    assert pages.text(float("nan")) == "not computed"
