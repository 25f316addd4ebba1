"""The HTML of an executed book: a mirror of book/ holding the executed notebooks, and Jupyter Book's build.

``mirror`` links every entry of ``book/`` into a folder that already holds executed
notebooks (``reproduce`` writes them to ``_build/<profile>/executed``), keeping those; ``build``
runs Jupyter Book 1.x on such a folder with the repository's ``_config.yml`` and ``_toc.yml``,
as ``jupyter-book build`` does, into the HTML folder asked for.
"""

import subprocess
import sys
from pathlib import Path

from psputil import paths

CONFIG = paths.REPO_ROOT / "_config.yml"
TOC = paths.REPO_ROOT / "_toc.yml"


def mirror(book, executed=None):
    """Link every entry of book/ into `executed`, keeping the executed notebooks already there."""
    if executed is None:
        raise ValueError("executed must name the folder to mirror book/ into, e.g. executed_dir(profile)")
    executed = Path(executed)
    executed.mkdir(parents=True, exist_ok=True)
    for link in executed.iterdir():
        if link.is_symlink() and not link.exists():  # its source left book/
            link.unlink()
    for entry in Path(book).iterdir():
        link = executed / entry.name
        if entry.name in ("_build", ".ipynb_checkpoints") or (link.is_file() and not link.is_symlink()):
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


# Jupyter Book's own build (jupyter-book build <source> --config --toc), with the HTML folder chosen.
_SPHINX = """import sys
from jupyter_book.sphinx import build_sphinx
source, html, config, toc, strict = sys.argv[1:]
result = build_sphinx(source, html, path_config=config, noconfig=True, builder="html",
                      confoverrides={"external_toc_path": toc, "latex_individualpages": False},
                      warningiserror=strict == "1")
sys.exit(1 if isinstance(result, Exception) else result)  # Sphinx has printed the error
"""


def build(source, strict=False, config=CONFIG, toc=TOC, quiet=False, html=None):
    """Build `source` into HTML as ``jupyter-book build`` does; returns the exit code.

    Args:
        html: the HTML folder (default: ``_build/html`` beside the config file, where a plain
            ``jupyter-book build`` writes); Sphinx's doctrees go beside it.
    """
    html = Path(html) if html is not None else Path(config).parent / "_build" / "html"
    command = [sys.executable, "-c", _SPHINX, str(source), str(html), str(config), str(toc), "1" if strict else "0"]
    output = subprocess.DEVNULL if quiet else None
    return subprocess.run(command, cwd=Path(config).parent, stdout=output).returncode
