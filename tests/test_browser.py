"""The built demo book in headless Chromium, offline: no console errors, and the rate slider switches figures.

Serves the book on 127.0.0.1, aborts every request to any other host, and needs
Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and Playwright's Python
package (never ``playwright install``: we use the system browser).
"""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

try:
    from test_book import build_demo_book
    from test_sections import build_smoke_book
except ImportError:  # tests/ imported as a package
    from tests.test_book import build_demo_book
    from tests.test_sections import build_smoke_book

from psputil.book import pages as book

from psputil.book import cli

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed (pip install playwright)")
if not CHROMIUM.is_file() and shutil.which("chromium") is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Base URL of the demo book served on 127.0.0.1."""
    html = build_demo_book(tmp_path_factory.mktemp("demo-book"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        path = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=ARGS)
        yield browser
        browser.close()


def _open(browser, site, page_name):
    """Open a page offline; returns (page, console errors, blocked URLs)."""
    page = browser.new_page()
    errors, blocked = [], []

    def route(request_route):
        if request_route.request.url.startswith(site):
            request_route.continue_()
        else:
            blocked.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(site + page_name)
    # "load", not "networkidle": a widget image's blob: URL can stay pending in Chromium for good
    page.wait_for_load_state("load")
    return page, errors, blocked


@pytest.mark.parametrize("page_name", ["intro.html", "references.html"])
def test_text_pages_have_no_errors_offline(browser, site, page_name):
    page, errors, blocked = _open(browser, site, page_name)
    if page_name == "intro.html":  # MathJax served by the book renders the formula
        page.wait_for_selector("mjx-container", timeout=15000)
    page.close()
    assert errors == [], f"console errors on {page_name}: {errors}"
    assert blocked == [], f"{page_name} asked for other hosts: {blocked}"


def test_rate_slider_switches_the_figure_offline(browser, site):
    page, errors, blocked = _open(browser, site, "widget_demo.html")
    image = page.locator(".widget-vbox .widget-box img.widget-image")
    image.first.wait_for(state="visible", timeout=20000)
    readout = page.locator(".widget-slider .widget-readout").first
    rates = cli.parameters("smoke")["rates"] or [50.0, 80.0]  # the demo's own rates when the profile has none
    assert readout.inner_text().strip() == book.format_rate(rates[0])
    first_src = image.first.get_attribute("src")
    first_shot = image.first.screenshot()

    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "(src) => { const i = document.querySelector('.widget-vbox .widget-box img.widget-image');"
        " return i && i.src !== src && i.complete && i.naturalWidth > 0; }",
        arg=first_src, timeout=10000,
    )
    assert readout.inner_text().strip() == book.format_rate(rates[1])
    assert image.count() == 1  # the stack shows one figure at a time
    assert image.first.screenshot() != first_shot
    page.close()
    assert errors == [], f"console errors on the demo page: {errors}"
    assert blocked == [], f"the demo page asked for other hosts: {blocked}"


# --- the section pages of the smoke book ----------------------------------------------


@pytest.fixture(scope="module")
def sections_site(tmp_path_factory):
    """Base URL of the smoke book (the section notebooks) served on 127.0.0.1."""
    html, _, _ = build_smoke_book(tmp_path_factory.mktemp("smoke-book"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _visible_figure(page):
    """(src, screenshot) of the visible image of the first rate slider's stack."""
    image = page.locator(".widget-vbox").first.locator("img:visible").first
    image.wait_for(state="visible", timeout=20000)
    return image.get_attribute("src"), image.screenshot()


@pytest.mark.parametrize("page_name", ["section5_1.html", "section5_2.html"])  # the pages with a rate slider
def test_section_slider_switches_the_figure_offline(browser, sections_site, page_name):
    page, errors, blocked = _open(browser, sections_site, page_name)
    first_src, first_shot = _visible_figure(page)
    readout = page.locator(".widget-slider .widget-readout").first
    before = readout.inner_text().strip()
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    # 5.1 starts at the lowest milestone, 5.2 and 5.3 at the highest
    page.keyboard.press("ArrowRight" if page_name == "section5_1.html" else "ArrowLeft")
    page.wait_for_function(
        "(src) => [...document.querySelector('.widget-vbox').querySelectorAll('img')]"
        ".some(i => i.offsetParent !== null && i.src !== src && i.complete && i.naturalWidth > 0)",
        arg=first_src, timeout=10000,
    )
    assert readout.inner_text().strip() != before
    src, shot = _visible_figure(page)
    assert src != first_src and shot != first_shot
    page.close()
    assert errors == [], f"console errors on {page_name}: {errors}"
    assert blocked == [], f"{page_name} asked for other hosts: {blocked}"


def test_conclusions_page_shows_the_claims_offline(browser, sections_site):
    page, errors, blocked = _open(browser, sections_site, "conclusions.html")
    claims = page.locator("table.psp-claims tbody tr.psp-row-0 td:first-child strong").all_inner_texts()
    assert claims == ["C1", "C2", "C3", "C4", "C5", "C6"]  # C6: the transfer chapter
    states = page.locator("table.psp-claims tbody tr.psp-row-0 .psp-state").all_inner_texts()
    assert len(states) == 6 and set(states) <= {"supported", "not supported", "inconclusive", "not tested"}
    page.close()
    assert errors == [] and blocked == [], (errors, blocked)
