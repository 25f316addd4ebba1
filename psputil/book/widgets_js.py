"""Serve the ipywidgets JavaScript from the book itself, and a Sphinx extension that does it.

The HTML book has no kernel: compression-rate sliders are widgets whose state is
saved in the executed notebooks and rendered in the browser by
``@jupyter-widgets/html-manager``. myst-nb loads that bundle from a CDN by default;
this module fetches a pinned version with ``npm pack`` into ``.cache/widgets-js/widgets/``
(git-ignored: third-party code is never committed) and serves it as ``_static/widgets/``,
so the pages work offline; MathJax likewise (``_static/mathjax/``). Not under
``book/_static/``: Jupyter Book adds every ``.js`` file found there to every page.

As a Sphinx extension (``sphinx: extra_extensions: [psputil.book.widgets_js]`` in
``_config.yml``) it runs at ``config-inited``, before myst-nb reads
``nb_ipywidgets_js``, so both ``jupyter-book build book`` and
``python -m psputil reproduce`` use it. An offline book must be complete: where npm is
absent or fails, the build stops with an error saying why and how to fix it, unless
``PSPUTIL_WIDGETS_CDN=1`` opts in to myst-nb's and Sphinx's CDN defaults (pages that
then need the network; the build log says so). Packages are unpacked member by member:
only regular files whose paths stay inside the target are written. It also removes duplicated
inline ``<script>`` tags (sphinx-thebe's and sphinx-togglebutton's configuration,
included twice by Jupyter Book 1.0.4), sets the theme's default colour mode (an
empty one makes pydata-sphinx-theme log an error on a first visit), sets
``TQDM_DISABLE=1`` for kernels the build starts, so no tqdm bar becomes widget state,
gives every slider handle an accessible name and value (``SLIDER_LABELS``), and serves
the book's own CSS (``static/psputil.css``).
"""

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from psputil import paths

log = logging.getLogger(__name__)

PACKAGE = "@jupyter-widgets/html-manager"
VERSION = "1.0.15"  # 1.x renders ipywidgets 8 (controls/base 2.0.0); pinned for reproducible pages
MATHJAX_VERSION = "3.2.2"  # Sphinx's default MathJax major version, served locally too
CACHE = paths.REPO_ROOT / ".cache" / "widgets-js"  # git-ignored; added to html_static_path
DEFAULT_TARGET = CACHE / "widgets"  # served as _static/widgets/
MATHJAX_TARGET = CACHE / "mathjax"  # served as _static/mathjax/
STAMP = "VERSION"  # file in a target naming the fetched package and version
STATIC = Path(__file__).parent / "static"  # the book's own CSS, served as _static/psputil.css
CDN_OPT_IN = "PSPUTIL_WIDGETS_CDN"  # "1": build with CDN scripts when the files cannot be fetched
_FONTS = (".woff2", ".woff", ".ttf", ".eot", ".svg")


def _widget_files(name):
    """Where a file of the html-manager package goes in the target (None: not served).

    We serve the standalone bundle (built-in widgets, no require.js needed), its licence
    notices, and the icon fonts it loads relative to its own URL.
    """
    if name in ("dist/embed.js", "dist/embed.js.LICENSE.txt", "LICENSE") or (
        name.startswith("dist/") and name.endswith(_FONTS)
    ):
        return Path(name).name
    return None


def _mathjax_files(name):
    """Where a file of the mathjax package goes: the combined TeX/MathML bundle and its CHTML fonts."""
    if name in ("es5/tex-mml-chtml.js", "LICENSE") or name.startswith("es5/output/chtml/fonts/woff-v2/"):
        return name.removeprefix("es5/")
    return None


def fetch(target=DEFAULT_TARGET, version=VERSION, npm="npm", timeout=180, package=PACKAGE, select=_widget_files):
    """Fetch an npm package's served files into `target` with ``npm pack`` (skipped when already there).

    Args:
        target: folder to fill (the selected files and a VERSION stamp).
        version: exact version of the package.
        npm: name or path of the npm executable.
        timeout: seconds allowed for ``npm pack``.
        package: npm package name (default: the widget bundle ``@jupyter-widgets/html-manager``).
        select: maps a path inside the package to its path in `target`, or None to skip it.

    Returns:
        The target ``Path`` when the files are there, or None when npm is missing or
        failed (the reason is logged; ``fetch_or_reason`` returns it).

    Raises:
        ValueError: the package holds a member that would be written outside `target`.
    """
    return fetch_or_reason(target, version, npm, timeout, package, select)[0]


def fetch_or_reason(target=DEFAULT_TARGET, version=VERSION, npm="npm", timeout=180, package=PACKAGE,
                    select=_widget_files):
    """As ``fetch``, but returns (target or None, why it is None: "" when fetched)."""
    target = Path(target)
    if is_fetched(target, version, package):
        return target, ""
    executable = shutil.which(npm)
    if executable is None:
        return _failed(f"npm ({npm}) not found")
    with tempfile.TemporaryDirectory(prefix="psputil-npm-") as scratch:
        command = [executable, "pack", f"{package}@{version}", "--pack-destination", scratch, "--silent",
                   "--fetch-retries=1", "--fetch-timeout=30000"]  # fail fast offline
        try:
            subprocess.run(command, cwd=scratch, check=True, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", "") or error
            return _failed(f"npm pack {package}@{version} failed ({str(detail).strip()[:300]})")
        tarballs = list(Path(scratch).glob("*.tgz"))
        if len(tarballs) != 1:
            return _failed(f"npm pack {package}@{version} produced {len(tarballs)} tarballs")
        _unpack(tarballs[0], target, f"{package}@{version}", select)
    return target, ""


def _failed(reason):
    log.info("%s", reason)
    return None, reason


def is_fetched(target=DEFAULT_TARGET, version=VERSION, package=PACKAGE):
    """Whether `target` holds the files of exactly `package` at `version`."""
    stamp = Path(target) / STAMP
    return stamp.is_file() and stamp.read_text().strip() == f"{package}@{version}"


def _unpack(tarball, target, stamp, select):
    """Copy the selected files of the package into `target`, replacing what was there.

    Raises:
        ValueError: a selected member is a link or not a regular file, or its destination is
            absolute or leaves `target` (``..``); nothing is written then.
    """
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            chosen = [(member, select(member.name.removeprefix("package/")))
                      for member in archive.getmembers() if not member.isdir()]
            chosen = [(member, destination) for member, destination in chosen if destination is not None]
            for member, destination in chosen:  # every member is checked before the first is written
                _check_member(member, destination, partial, tarball)
            for member, destination in chosen:
                (partial / destination).parent.mkdir(parents=True, exist_ok=True)
                (partial / destination).write_bytes(archive.extractfile(member).read())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / STAMP).write_text(stamp + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)


def _check_member(member, destination, folder, tarball):
    """Refuse a package member that is not a plain file or whose destination leaves `folder`."""
    where = f"{tarball}: member {member.name!r}"
    if not member.isfile():
        raise ValueError(f"{where} is a {'link' if member.issym() or member.islnk() else 'special file'}, "
                         "not a regular file; refusing to unpack the package")
    data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.12, 3.11.4, 3.10.12, 3.9.17, 3.8.17
    if data_filter is not None:
        try:
            data_filter(member, str(folder))
        except tarfile.FilterError as error:
            raise ValueError(f"{where} is refused by tarfile's data filter ({error})") from None
    relative = Path(destination)
    inside = (folder / relative).resolve().is_relative_to(folder.resolve())
    if relative.is_absolute() or ".." in relative.parts or not inside:
        raise ValueError(f"{where} would be written to {destination!r}, outside {folder}; refusing to unpack "
                         "the package")


def ipywidgets_js(target=DEFAULT_TARGET, version=VERSION):
    """The ``nb_ipywidgets_js`` value for myst-nb: the local bundle, or None if not fetched."""
    if not is_fetched(target, version):
        return None
    # Relative paths are resolved under the HTML _static/ folder by Sphinx.
    return {f"{target.name}/embed.js": {}}


# --- Sphinx extension ---------------------------------------------------------------


def _config_inited(app, config):
    from sphinx.errors import ExtensionError
    from sphinx.util import logging as sphinx_logging

    logger = sphinx_logging.getLogger(__name__)
    os.environ.setdefault("TQDM_DISABLE", "1")  # kernels started by myst-nb inherit it
    cdn = os.environ.get(CDN_OPT_IN, "") == "1"
    fetched, why = fetch_or_reason(DEFAULT_TARGET)
    mathjax, why_mathjax = fetch_or_reason(MATHJAX_TARGET, MATHJAX_VERSION, package="mathjax", select=_mathjax_files)
    missing = [f"{what}: {reason}" for what, reason in ((f"{PACKAGE} {VERSION}", why), (f"MathJax {MATHJAX_VERSION}", why_mathjax))
               if reason]
    if missing and not cdn:
        raise ExtensionError(
            "[psputil.widgets_js] the book would load scripts from public CDNs and not work offline, because "
            + "; ".join(missing) + f". Fix: install npm (apt-get install npm) and let it reach the npm registry "
            f"once (the files are kept in {CACHE}), or set {CDN_OPT_IN}=1 to build pages that load them from CDNs")
    if fetched is None:
        logger.info("[psputil.widgets_js] widget JavaScript: myst-nb's CDN default (%s=1; needs network)", CDN_OPT_IN)
    else:
        config.nb_ipywidgets_js = ipywidgets_js(fetched)
        logger.info("[psputil.widgets_js] widget JavaScript: %s %s served from %s", PACKAGE, VERSION, fetched)
    if mathjax is None:
        logger.info("[psputil.widgets_js] MathJax: Sphinx's CDN default (%s=1; needs network)", CDN_OPT_IN)
    else:
        config.mathjax_path = f"{mathjax.name}/tex-mml-chtml.js"  # relative to _static/
        logger.info("[psputil.widgets_js] MathJax %s served from %s", MATHJAX_VERSION, mathjax)
    if fetched is not None or mathjax is not None:
        config.html_static_path = [*config.html_static_path, str(CACHE)]
    config.html_static_path = [*config.html_static_path, str(STATIC)]
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "light")
    config.html_context = context


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated identical <script> entries (same file or same inline body)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", script) or "", getattr(script, "priority", 0), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


# The widget bundle typesets labels with MathJax 2's ``MathJax.Hub.Queue`` whenever
# ``window.MathJax`` exists; pages with math load MathJax 3, which has no ``Hub``, and
# every widget label would throw. This maps the call onto MathJax 3's typesetPromise.
MATHJAX2_SHIM = """(function () {
  function patch(o) {
    if (o && typeof o === "object" && !o.Hub) {
      o.Hub = {Queue: function (job) {
        var mj = window.MathJax;
        if (Array.isArray(job) && job[0] === "Typeset" && mj && mj.typesetPromise) {
          mj.typesetPromise([job[2]]).catch(function () {});
        }
      }};
    }
    return o;
  }
  var current = patch(window.MathJax);
  Object.defineProperty(window, "MathJax", {configurable: true,
    get: function () { return current; }, set: function (value) { current = patch(value); }});
})();"""


# The widget bundle draws a slider as a noUiSlider handle (role "slider") beside a <label> that is
# not tied to it, so a screen reader announces a nameless slider reading "1.00". This names every
# slider handle after its widget's label (the tooltip ``pages.rate_slider`` sets, else the visible
# description) and lets it announce the readout ("95.00 %") as its value, whenever widgets render
# or move.
SLIDER_LABELS = """(function () {
  function label(widget) {
    var node = widget.querySelector(":scope > .widget-label");
    return node ? (node.title || node.textContent || "").trim() : "";
  }
  function update() {
    document.querySelectorAll(".widget-slider").forEach(function (widget) {
      var handle = widget.querySelector('[role="slider"]');
      if (!handle) { return; }
      var name = label(widget);
      if (name && handle.getAttribute("aria-label") !== name) { handle.setAttribute("aria-label", name); }
      var readout = widget.querySelector(".widget-readout");
      var value = readout ? readout.textContent.trim() : "";
      if (value && handle.getAttribute("aria-valuetext") !== value) { handle.setAttribute("aria-valuetext", value); }
    });
  }
  var pending = false;
  function schedule() {
    if (!pending) { pending = true; window.requestAnimationFrame(function () { pending = false; update(); }); }
  }
  function start() {
    update();
    new MutationObserver(schedule).observe(document.body, {childList: true, subtree: true, characterData: true,
      attributes: true, attributeFilter: ["aria-valuenow"]});
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();"""


def setup(app):
    """Sphinx entry point."""
    app.add_js_file(None, body=MATHJAX2_SHIM, priority=1)  # before MathJax and the widget bundle
    app.add_js_file(None, body=SLIDER_LABELS)
    app.add_css_file("psputil.css")
    app.connect("config-inited", _config_inited, priority=300)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
