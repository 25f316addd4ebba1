"""The book's support code: rate sliders, notes, the reproduce CLI, the toc, and a small book built with -W.

The shared setup of the notebooks (``pages.start``, ``Page``) and provenance: ``test_pages.py``.
"""

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402

from psputil import paths  # noqa: E402

from psputil.book import pages as book

from psputil.book import cli

from psputil.book import widgets_js

REPO = paths.REPO_ROOT
DEMO = Path(__file__).parent / "data" / "widget_demo.ipynb"
_BUILT = {}


def build_demo_book(root):
    """Execute the demo notebook with the smoke profile through the CLI's functions and build it with -W.

    Layout under `root`: _config.yml (the repository's), _toc.yml, book/ (intro,
    references, params, the demo), executed/ (the mirror the build reads), _build/html.
    Returns the HTML folder. Built once per test session.
    """
    if "html" in _BUILT:
        return _BUILT["html"]
    source = root / "book"
    source.mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book" / "params", source / "params")
    shutil.copy(REPO / "book" / "references.bib", source / "references.bib")
    shutil.copy(REPO / "book" / "references.md", source / "references.md")
    shutil.copy(DEMO, source / "widget_demo.ipynb")
    (source / "intro.md").write_text("# Demo book\n\nAfter {cite}`frankle2019lottery`; math: $H_b(p)$.\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: widget_demo\n  - file: references\n")
    (source / "_toc.yml").symlink_to(root / "_toc.yml")
    assert cli.toc_notebooks(root / "_toc.yml", source) == ["widget_demo"]
    executed = root / "executed"
    cli.execute("widget_demo", "smoke", book=source, executed=executed)
    cli.mirror(source, executed)
    code = cli.build(executed, strict=True, config=root / "_config.yml", toc=root / "_toc.yml", quiet=True)
    assert code == 0, "jupyter-book build -W of the demo book failed"
    _BUILT["html"] = root / "_build" / "html"
    return _BUILT["html"]


@pytest.fixture(scope="module")
def demo_html(tmp_path_factory):
    return build_demo_book(tmp_path_factory.mktemp("demo-book"))


def _figure(value):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, value])
    return fig


# --- the slider ---------------------------------------------------------------------


def test_rate_slider_links_slider_index_to_stack():
    import ipywidgets as widgets

    box = book.rate_slider({50.0: _figure(1), 90: _figure(2), "99.57 %": b"\x89PNG fake"})
    slider, stack = box.children
    assert isinstance(slider, widgets.SelectionSlider) and isinstance(stack, widgets.Stack)
    assert list(slider.options) == ["50.00 %", "90.00 %", "99.57 %"]
    assert len(stack.children) == 3 and all(isinstance(c, widgets.Image) for c in stack.children)
    values = [bytes(c.value) for c in stack.children]
    assert values[2] == b"\x89PNG fake"
    assert values[0].startswith(b"\x89PNG") and values[0] != values[1]
    link = box.link
    assert type(link).__name__ == "Link" and link._model_name == "LinkModel"
    assert link.source == (slider, "index") and link.target == (stack, "selected_index")
    assert slider.index == 0 and stack.selected_index == 0
    assert plt.get_fignums() == []  # rendered figures are closed, so they are not shown twice
    # what a screen reader announces (copied to the handle's aria-label in the book: test_browser_pages.py)
    assert slider.description_allow_html is False and slider.tooltip == "pruned: compression rate of the figure below"
    assert book.rate_slider({50: b"a"}, description="milestone", label="G milestone").slider.tooltip == "G milestone"


def test_rate_slider_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty mapping"):
        book.rate_slider({})
    with pytest.raises(ValueError, match="duplicate rate label"):
        book.rate_slider({50: b"a", "50.00 %": b"b"})
    with pytest.raises(ValueError, match="matplotlib Figure, PNG bytes or an HTML string"):
        book.rate_slider({50: 3.0})
    with pytest.raises(ValueError, match="description must be non-empty text"):
        book.rate_slider({50: b"a"}, description="")


# --- notes, claims, run info --------------------------------------------------------


def test_missing_data_note_lists_how_to_get_the_data(tmp_path):
    from psputil import data

    with pytest.raises(FileNotFoundError) as caught:
        data.load("cifar10", root=tmp_path)
    note = book.missing_data_note(caught.value, "resnet32/cifar10")
    html = note._repr_html_()
    assert 'class="admonition warning"' in html and "resnet32/cifar10 skipped" in html
    assert "<li>" in html and "download=True" in html and str(tmp_path) in html
    assert note._repr_markdown_().startswith("```{admonition} Data missing")


def test_parse_setup():
    from psputil.experiments import setups

    assert book.parse_setup("lenet5-fashion") == setups.setup("lenet5-fashion", "quick")
    assert book.parse_setup("lenet5-mnist", "smoke").data.name == "mnist-5k"
    assert book.parse_setup("lenet5-mnist", "paper").data.name == "mnist"
    with pytest.raises(ValueError, match="lenet300-mnist"):
        book.parse_setup("lenet5/mnist")


def test_rate_slider_starts_at_the_selected_figure():
    box = book.rate_slider({50: b"a", 80: b"b", 90: b"c"}, selected=-1)
    assert box.slider.index == 2 and box.stack.selected_index == 2
    with pytest.raises(ValueError, match="selected must index"):
        book.rate_slider({50: b"a"}, selected=1)


# --- profiles and the CLI -----------------------------------------------------------


def test_profiles_hold_every_parameter():
    from psputil.book import params

    for profile in book.PROFILES:
        values = cli.parameters(profile)
        assert set(values) == set(params.ALL) and values["profile"] == profile
        assert all(isinstance(s, int) for s in values["seeds"] + values["control_seeds"])
        for setup in values["setups"] + [values["landscape_setup"]]:
            book.parse_setup(setup, profile)
        assert values["rates"] is None or all(isinstance(r, float) for r in values["rates"])
    with pytest.raises(ValueError, match="valid profiles|unknown profile"):
        cli.parameters("huge")


@pytest.mark.parametrize("args, message", [
    (["reproduce", "--profile", "huge"], "invalid choice: 'huge'"),
    (["reproduce", "--notebooks", "nosuch"], "unknown notebook(s) nosuch"),
    (["reproduce", "--device", "tpu9"], "unknown device 'tpu9'"),
    ([], "required: command"),
])
def test_cli_argument_errors(args, message):
    result = subprocess.run([sys.executable, "-m", "psputil", *args], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and message in result.stderr


def test_committed_notebooks_have_no_outputs_and_hide_their_parameters():
    notebooks = list((REPO / "book").rglob("*.ipynb")) + [DEMO]
    for path in notebooks:
        if "_build" in path.parts or ".ipynb_checkpoints" in path.parts:
            continue
        nb = nbformat.read(path, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path} has outputs in cells {dirty}: clear them before committing"
        assert "widgets" not in nb.metadata, f"{path} carries widget state"
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path} needs exactly one cell tagged 'parameters'"
        assert {"remove-cell", "hide-cell"} & set(tagged[0].metadata["tags"]), f"{path}: hide the parameters cell"


def test_demo_parameters_cell_holds_the_quick_values():
    from psputil.book import params

    defaults = {}
    exec(next(c for c in nbformat.read(DEMO, as_version=4).cells if "parameters" in c.metadata.get("tags", [])).source,
         {}, defaults)
    assert defaults == cli.parameters("quick", "section5_1") and tuple(defaults) == params.NOTEBOOKS["section5_1"]


def test_toc_notebooks_are_the_book_notebooks():
    listed = cli.toc_notebooks()
    on_disk = sorted(p.stem for p in (REPO / "book").glob("*.ipynb"))
    assert sorted(listed) == on_disk
    assert listed[0] == "methods"  # the methods page comes right after the introduction


def test_widget_fetch_without_npm_falls_back(tmp_path):
    assert widgets_js.fetch(tmp_path / "w", npm="no-such-npm-here") is None
    assert widgets_js.ipywidgets_js(tmp_path / "w") is None


# --- the built demo book ------------------------------------------------------------


def _widget_state(html):
    match = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', html, re.S)
    assert match, "no widget state in the page"
    return json.loads(match.group(1))["state"]


def test_demo_book_has_widget_state_figures_and_local_js(demo_html):
    page = (demo_html / "widget_demo.html").read_text()
    state = _widget_state(page)
    models = {k: v for k, v in state.items()}
    names = sorted(v["model_name"] for v in models.values())
    assert names.count("ImageModel") == 2 and "StackModel" in names and "SelectionSliderModel" in names
    link = next(v["state"] for v in models.values() if v["model_name"] == "LinkModel")
    assert link["source"][1] == "index" and link["target"][1] == "selected_index"
    pngs = [base64.b64decode(v["buffers"][0]["data"]) for v in models.values() if v["model_name"] == "ImageModel"]
    assert all(p.startswith(b"\x89PNG") for p in pngs) and pngs[0] != pngs[1]
    assert "TqdmModel" not in page and "FloatProgressModel" not in names
    assert 'type="application/vnd.jupyter.widget-view+json"' in page
    # the widget bundle and MathJax are served by the book itself when npm worked
    if widgets_js.is_fetched():
        assert '_static/widgets/embed.js' in page and "cdn.jsdelivr" not in page
        assert (demo_html / "_static" / "widgets" / "embed.js").is_file()
    if widgets_js.is_fetched(widgets_js.MATHJAX_TARGET, widgets_js.MATHJAX_VERSION, "mathjax"):
        intro = (demo_html / "intro.html").read_text()  # MathJax is loaded on pages with math only
        assert "_static/mathjax/tex-mml-chtml.js" in intro and "cdn.jsdelivr" not in intro
    assert "Data missing: resnet32/cifar10 skipped" in page and "psp-claims" in page and "About this run" in page
    caption = re.search(r'<div class="psp-caption".*?</div>', page, re.S).group(0)
    assert "Figure 1:" in caption and "commit " in caption and "runs lobster/" in caption and "checksum" in caption
    assert page.count("THEBE_JS_URL =") <= 1
    assert (demo_html / "references.html").is_file()
    executed = nbformat.read(demo_html.parents[1] / "executed" / "widget_demo.ipynb", as_version=4)
    assert executed.metadata["mystnb"] == {"execution_mode": "off"} and executed.metadata["psputil"]["profile"] == "smoke"
    assert executed.metadata["papermill"]["parameters"]["rates"] == cli.parameters("smoke")["rates"]


def test_notebook_text_has_no_control_characters():
    # "\theta" or "\rVert" written into the JSON unescaped become a tab or a line break, and MathJax
    # then shows "heta" and a broken formula (Section 5.2 had both)
    for path in sorted((REPO / "book").glob("*.ipynb")) + [DEMO]:
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            text = "".join(cell["source"])
            found = sorted({repr(ch) for ch in text if ord(ch) < 32 and ch != "\n"})
            assert not found, f"{path.name} cell {index}: control characters {', '.join(found)}"
            # a swallowed "\nabla" or "\nu" is a line break inside a source line (they end with one)
            inside = [line for line in cell["source"] if "\n" in line[:-1]]
            assert not inside, f"{path.name} cell {index}: a line break inside a source line: {inside[0][:80]!r}"
