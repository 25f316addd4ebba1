"""Pages as a reader sees them, in headless Chromium at 1366 and 390 px, offline.

Two small books: the demo book of ``test_book.py`` (a slider, captioned figures, a claims
table, a wide table) and a book of the real introduction, the Methods and deviations page
(executed with the smoke profile) and the References; and the section pages of the smoke
book of ``test_sections.py`` (the last test, which needs the section notebooks to run).
Checks: every figure has a numbered caption with a commit and run keys; tables reflow or
scroll visibly at phone width and the page never scrolls sideways; the slider announces its
label and value to screen readers; citation labels in the text and in the References agree;
no console errors, no request leaves the machine. Needs Chromium and Playwright's Python package, as ``test_browser.py``.
"""

import functools
import http.server
import os
import re
import shutil
import threading

import pytest

try:
    from test_book import build_demo_book
    from test_browser import ARGS, CHROMIUM, _open, _QuietHandler
except ImportError:  # tests/ imported as a package
    from tests.test_book import build_demo_book
    from tests.test_browser import ARGS, CHROMIUM, _open, _QuietHandler

from psputil import paths
from psputil.book import cli

REPO = paths.REPO_ROOT
WIDTHS = (1366, 390)
sync_api = pytest.importorskip("playwright.sync_api")
_BUILT = {}


def build_methods_book(root):
    """intro.md, methods.ipynb (executed: smoke profile, a fresh store) and the References, built with -W."""
    if "html" in _BUILT:
        return _BUILT["html"]
    source = root / "book"
    source.mkdir(parents=True)
    for name in ("intro.md", "methods.ipynb", "references.md", "references.bib"):
        shutil.copy(REPO / "book" / name, source / name)
    shutil.copytree(REPO / "book" / "params", source / "params")
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: methods\n  - file: references\n")
    (source / "_toc.yml").symlink_to(root / "_toc.yml")
    previous = os.environ.get("PSPUTIL_STORE")
    os.environ["PSPUTIL_STORE"] = str(root / "store")  # inherited by the kernel
    try:
        cli.execute("methods", "smoke", device="cpu", book=source, executed=root / "executed")
    finally:
        if previous is None:
            os.environ.pop("PSPUTIL_STORE", None)
        else:
            os.environ["PSPUTIL_STORE"] = previous
    cli.mirror(source, root / "executed")
    code = cli.build(root / "executed", strict=True, config=root / "_config.yml", toc=root / "_toc.yml", quiet=True)
    assert code == 0, "jupyter-book build -W of the methods book failed"
    _BUILT["html"] = root / "_build" / "html"
    return _BUILT["html"]


def _serve(html):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """{"demo": base URL, "methods": base URL} of the two books served on 127.0.0.1."""
    servers, urls = [], {}
    for name, build in (("demo", build_demo_book), ("methods", build_methods_book)):
        server, urls[name] = _serve(build(tmp_path_factory.mktemp(f"{name}-book")))
        servers.append(server)
    yield urls
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        path = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=ARGS)
        yield browser
        browser.close()


def _visit(browser, sites, book, page_name, width):
    page, errors, blocked = _open(browser, sites[book], page_name)
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(300)  # reflow after the resize
    return page, errors, blocked


PAGES = [("demo", "widget_demo.html"), ("methods", "intro.html"), ("methods", "methods.html"),
         ("methods", "references.html")]

# Every table: fits the page, or sits in a container that scrolls sideways with its bar always drawn.
_TABLES = """() => {
  const width = document.documentElement.clientWidth, bad = [];
  for (const table of document.querySelectorAll("main table, article table")) {
    const box = table.getBoundingClientRect();
    if (box.width === 0) continue;  // folded away
    let node = table.parentElement, scroller = null;
    while (node && node !== document.body) {
      const overflow = getComputedStyle(node).overflowX;
      if (overflow === "auto" || overflow === "scroll") { scroller = node; break; }
      node = node.parentElement;
    }
    const fits = box.left >= -1 && box.right <= width + 1;
    if (scroller && scroller.scrollWidth > scroller.clientWidth + 1) {
      if (getComputedStyle(scroller).overflowX !== "scroll") bad.push(`${table.className}: scrolls with a hidden bar`);
    } else if (!fits) {
      bad.push(`${table.className}: ${Math.round(box.width)} px wide, cut off`);
    }
  }
  return {page: document.documentElement.scrollWidth, width, bad};
}"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("book, page_name", PAGES)
def test_tables_reflow_or_scroll_visibly_and_pages_never_scroll_sideways(browser, sites, book, page_name, width):
    page, errors, blocked = _visit(browser, sites, book, page_name, width)
    result = page.evaluate(_TABLES)
    page.close()
    assert result["page"] <= result["width"], f"{page_name} scrolls sideways at {width} px: {result}"
    assert result["bad"] == [], f"{page_name} at {width} px: {result['bad']}"
    assert errors == [] and blocked == [], (errors, blocked)


# A figure is a static image in a cell's output or a widget (a slider's figures); its cell must caption it.
_CAPTIONS = """() => {
  const out = [];
  for (const cell of document.querySelectorAll("div.cell")) {
    const output = cell.querySelector(".cell_output");
    if (!output) continue;
    const figures = output.querySelectorAll("img:not(.widget-image), .widget-vbox").length;
    if (!figures) continue;
    const captions = [...output.querySelectorAll(".psp-caption")].map(c => {
      const box = c.getBoundingClientRect();
      return {text: c.innerText, inside: box.right <= document.documentElement.clientWidth + 1};
    });
    out.push({figures, captions});
  }
  return out;
}"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("book, page_name, count", [("demo", "widget_demo.html", 2), ("methods", "methods.html", 1)])
def test_every_figure_has_a_numbered_caption_with_commit_and_run_keys(browser, sites, book, page_name, count, width):
    page, errors, blocked = _visit(browser, sites, book, page_name, width)
    page.locator(".widget-vbox").first.wait_for(state="attached", timeout=20000) if book == "demo" else None
    cells = page.evaluate(_CAPTIONS)
    page.close()
    assert len(cells) == count, cells
    for cell in cells:
        assert cell["captions"], f"a figure without a caption on {page_name}: {cell}"
        for caption in cell["captions"]:
            assert re.search(r"^Figure \w+:", caption["text"], re.M), caption
            assert re.search(r"commit ([0-9a-f]{12}|[0-9a-f]{11}\+|unknown)", caption["text"]), caption
            assert re.search(r"runs (\w+/[0-9a-f]{12})(, \w+/[0-9a-f]{12})*", caption["text"]), caption
            assert caption["inside"], f"caption cut off at {width} px: {caption}"
    assert errors == [] and blocked == [], (errors, blocked)


@pytest.mark.parametrize("width", WIDTHS)
def test_slider_announces_its_label_and_value(browser, sites, width):
    page, errors, blocked = _visit(browser, sites, "demo", "widget_demo.html", width)
    rates = cli.parameters("smoke")["rates"] or [50.0, 80.0]  # the demo notebook's own fallback
    handle = page.get_by_role("slider", name="pruned: compression rate of the figure below")
    handle.wait_for(state="visible", timeout=20000)
    sync_api.expect(handle).to_have_accessible_name("pruned: compression rate of the figure below")
    sync_api.expect(handle).to_have_attribute("aria-valuetext", f"{rates[0]:.2f} %")
    handle.focus()
    page.keyboard.press("ArrowRight")
    sync_api.expect(handle).to_have_attribute("aria-valuetext", f"{rates[1]:.2f} %")
    page.close()
    assert errors == [] and blocked == [], (errors, blocked)


def test_citations_and_references_use_the_same_labels(browser, sites):
    page, errors, blocked = _visit(browser, sites, "methods", "intro.html", 1366)
    cited = page.evaluate("""() => [...document.querySelectorAll('a[href^="references.html#"]')]
        .map(a => [a.getAttribute("href").split("#")[1], a.innerText.trim()])""")
    page.close()
    page, more_errors, more_blocked = _visit(browser, sites, "methods", "references.html", 1366)
    labels = page.evaluate("""(ids) => ids.map(id => {
        const entry = document.getElementById(id);
        const label = entry && entry.querySelector(".label");
        return label ? label.innerText.replace(/[\\[\\]]/g, "").trim() : null; })""", [i for i, _ in cited])
    page.close()
    assert len(cited) >= 8
    for (target, text), label in zip(cited, labels):
        assert label == text, f"the text cites {text!r} but the References label it {label!r} ({target})"
    assert errors == more_errors == [] and blocked == more_blocked == []


def test_methods_page_states_the_data_sizes_and_the_lr_decision_with_computed_numbers(browser, sites):
    page, errors, blocked = _visit(browser, sites, "methods", "methods.html", 1366)
    text = page.inner_text("main")
    page.close()
    assert "Methods and deviations" in text and "smoke profile" in text
    assert re.search(r"reached \d+\.\d\d % pruned, with G at \d+\.\d\d % test error, in \d+ epochs", text)
    assert re.search(r"LeNet-5 on 3,000 Fashion-MNIST training images, tested on 2,000", text)
    intro_page, intro_errors, _ = _visit(browser, sites, "methods", "intro.html", 1366)
    intro = intro_page.inner_text("main")
    intro_page.close()
    assert "complete" not in intro.split("The data behind this build")[1].split("\n\n")[0]
    assert re.search(r"subset of 3,000 training images and tests on 2,000", intro)
    assert errors == intro_errors == [] and blocked == []


# --- the section pages of the smoke book (test_sections.build_smoke_book) ------------------------------


def _sections():
    """test_sections' (build_smoke_book, SECTIONS), imported only by the test that needs the section notebooks."""
    try:
        import test_sections
    except ImportError:  # tests/ imported as a package
        from tests import test_sections
    return test_sections.build_smoke_book, test_sections.SECTIONS


@pytest.fixture(scope="module")
def sections_site(tmp_path_factory):
    build_smoke_book, sections = _sections()
    html, _, _ = build_smoke_book(tmp_path_factory.mktemp("smoke-book"))
    server, url = _serve(html)
    yield url, sections
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("width", WIDTHS)
def test_section_pages_caption_every_figure_and_fit_a_phone(browser, sections_site, width):
    url, sections = sections_site
    for name in ("methods", *sections):
        page, errors, blocked = _open(browser, url, f"{name}.html")
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)
        cells, tables = page.evaluate(_CAPTIONS), page.evaluate(_TABLES)
        page.close()
        for cell in cells:
            assert cell["captions"], f"{name}: a figure without a caption: {cell}"
            assert all(re.search(r"commit \S+ .*runs \w+/[0-9a-f]{12}", c["text"], re.S) for c in cell["captions"])
            assert all(c["inside"] for c in cell["captions"]), f"{name}: a caption cut off at {width} px"
        assert tables["page"] <= tables["width"] and tables["bad"] == [], f"{name} at {width} px: {tables}"
        assert errors == [] and blocked == [], (name, errors, blocked)
