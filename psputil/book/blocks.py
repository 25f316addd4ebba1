"""Page outputs for the book's notebooks: notes, missing-data warnings and the claims table.

Each is a ``Block`` with an HTML form (shown by Jupyter and the built book) and a MyST
markdown form.
"""

import html
from dataclasses import dataclass
from typing import Optional


class Block:
    """A piece of page output with HTML (shown by Jupyter and the book) and markdown forms."""

    def __init__(self, html_text, markdown_text):
        self.html, self.markdown = html_text, markdown_text

    def _repr_html_(self):
        return self.html

    def _repr_markdown_(self):
        return self.markdown

    def __repr__(self):
        return self.markdown


def note(text, title="Note", kind="note"):
    """An admonition box (``kind``: note, tip, warning, important) with plain-text lines.

    Lines starting with "- " (after indentation) become list items.
    """
    if kind not in ("note", "tip", "warning", "important"):
        raise ValueError(f"unknown admonition kind {kind!r}; use note, tip, warning or important")
    body = _lines_html(str(text).splitlines())
    html_text = (
        f'<div class="admonition {kind}"><p class="admonition-title">{html.escape(title)}</p>{body}</div>'
    )
    markdown_text = f"```{{admonition}} {title}\n:class: {kind}\n{text}\n```"
    return Block(html_text, markdown_text)


def _lines_html(lines):
    parts, items = [], []
    for line in lines + [""]:
        stripped = line.strip()
        if stripped.startswith("- "):
            items.append(f"<li>{_code_spans(stripped[2:])}</li>")
            continue
        if items:
            parts.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if stripped:
            parts.append(f"<p>{_code_spans(stripped)}</p>")
    return "".join(parts)


def _code_spans(text):
    """Escape text, turning `backquoted` spans into <code>."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def missing_data_note(error, what=None):
    """A warning box saying which data set is missing and how to get it (instead of failing).

    Args:
        error: the ``FileNotFoundError`` raised by ``psputil.data.load`` (its message lists
            where it looked and how to get the data).
        what: optional name of what was skipped (a setup, a figure).
    """
    message = str(error.args[0] if getattr(error, "args", None) else error)
    title = f"Data missing: {what} skipped" if what else "Data missing: skipped"
    return note(message + "\n\nRe-run this notebook once the data set is in place.", title=title, kind="warning")


@dataclass(frozen=True)
class ClaimRow:
    """One row of the claims table; ``verdict`` is computed by the caller, never typed in."""

    id: str
    claim: str
    verdict: Optional[bool]  # True supported, False not supported, None not computed in this run
    numbers: str = ""
    seeds: object = ""
    profile: str = ""
    test: str = ""  # how the verdict was decided, thresholds included


VERDICT_TEXT = {True: "supported", False: "not supported", None: "not computed"}
_COLUMNS = ("id", "claim", "verdict", "numbers", "test (thresholds)", "seeds", "profile")


def claims_table(rows):
    """An HTML/markdown table of claims with this run's verdicts.

    Args:
        rows: ``ClaimRow``s, or mappings with the keys id, claim, verdict, numbers, seeds, profile
            and optionally test.
    """
    rows = [row if isinstance(row, ClaimRow) else ClaimRow(**dict(row)) for row in rows]
    for row in rows:
        if row.verdict not in VERDICT_TEXT:
            raise ValueError(f"claim {row.id}: verdict must be True, False or None, got {row.verdict!r}")

    def cells(row):
        seeds = ", ".join(map(str, row.seeds)) if isinstance(row.seeds, (list, tuple)) else str(row.seeds)
        return [row.id, row.claim, VERDICT_TEXT[row.verdict], row.numbers, row.test, seeds, row.profile]

    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    body = "".join(
        f'<tr class="claim-{VERDICT_TEXT[r.verdict].replace(" ", "-")}">'
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells(r)) + "</tr>"
        for r in rows
    )
    html_text = f'<table class="table claims-table" style="font-size: 0.85em"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    escape = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
    markdown = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    markdown += ["| " + " | ".join(escape(c) for c in cells(r)) + " |" for r in rows]
    return Block(html_text, "\n".join(markdown))
