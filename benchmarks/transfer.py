"""Wall time of the transfer chapter (book/transfer.ipynb) in the quick profile, with its result.

Runs the chapter with papermill exactly as ``python -m psputil reproduce`` does (the
quick parameter files), against the default run store so the G, 1-S, dense and
control runs the other chapters cached are reused; then runs it a second time, when
every unit is cached, as the baseline of pure notebook overhead. Prints both wall
times, the ratio to the 10-minute goal, and the chapter's rank correlations and
verdict as the executed notebook shows them.

Run: ``python benchmarks/transfer.py`` (``--once`` skips the cached re-run).
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from psputil.book import cli

GOAL_SECONDS = 600.0


def run_chapter(out):
    """Execute the chapter with the quick profile into `out`; returns the wall time in seconds."""
    import papermill

    os.environ["TQDM_DISABLE"] = "1"
    start = time.perf_counter()
    papermill.execute_notebook(
        str(cli.BOOK / "transfer.ipynb"), str(out), parameters=cli.parameters("quick", "transfer"),
        cwd=str(cli.BOOK), kernel_name="python3", progress_bar=False, log_output=False,
    )
    return time.perf_counter() - start


def findings(notebook):
    """The markdown of the chapter's correlation and verdict notes."""
    import nbformat

    texts = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown", "")
            if "Rank correlations" in text or "Verdict" in text or "| C6 |" in text:
                texts.append(re.sub(r"```\{admonition\} |```|:class: \w+\n", "", text).strip())
    return texts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="skip the second (all cached) run")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    first = run_chapter(folder / "first.ipynb")
    print(f"transfer chapter, quick profile, first run : {first:7.1f} s "
          f"({first / GOAL_SECONDS:.2f} x the {GOAL_SECONDS / 60:.0f}-minute goal)")
    if not args.once:
        second = run_chapter(folder / "second.ipynb")
        print(f"transfer chapter, quick profile, all cached: {second:7.1f} s (first / cached = {first / second:.1f})")
    for text in findings(folder / "first.ipynb"):
        print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
