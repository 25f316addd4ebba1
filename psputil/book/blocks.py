"""Page outputs for the book's notebooks: notes, the claims table, data tables, figure captions.

Each is a ``Block`` with an HTML form (shown by Jupyter and the built book) and a MyST
markdown form. Narrow screens (390 px): the claims table *reflows* (below 640 px each row
becomes a card whose cells carry their column name, a ``<style>`` rule in the block); the
numeric tables *scroll* sideways in a container whose scrollbar is always drawn.
"""

import html
import math
import re

STATES = ("supported", "not supported", "inconclusive", "not tested")
VERDICT_TEXT = {s: s for s in STATES}  # state -> label shown
CLAIM_COLUMNS = ("claim", "paper's value", "ours", "regime tested", "verdict", "test applied")
_CLAIMS_CSS = """<style>
.psp-claims{border-collapse:collapse;width:100%;font-size:.88em}
.psp-claims th,.psp-claims td{border-top:1px solid #d0d7de;padding:.35em .5em;vertical-align:top;text-align:left}
.psp-claims .psp-small{font-size:.9em;color:#444}
.psp-claims details summary{cursor:pointer}
.psp-state{font-weight:600;white-space:nowrap}
.psp-supported{color:#1a7f37}.psp-not-supported{color:#b42318}
.psp-inconclusive{color:#8a5a00}.psp-not-tested{color:#57606a}
@media (max-width:640px){
.psp-claims,.psp-claims tbody,.psp-claims tr,.psp-claims td{display:block;width:100%;box-sizing:border-box}
.psp-claims thead{display:none}
.psp-claims tr{border-top:2px solid #8c959f;padding:.3em 0}
.psp-claims td{border:0;padding:.15em .3em !important}
.psp-claims td:not(:empty)::before{content:attr(data-label) ": ";font-weight:600}
.psp-claims td:empty{display:none}}
</style>"""
_SCROLL_CSS = """<style>
.psp-scroll{overflow-x:scroll;max-width:100%;padding-bottom:4px;scrollbar-width:thin;scrollbar-color:#8c959f #eaeef2}
.psp-scroll::-webkit-scrollbar{height:8px}.psp-scroll::-webkit-scrollbar-thumb{background:#8c959f;border-radius:4px}
.psp-scroll::-webkit-scrollbar-track{background:#eaeef2}
.psp-scroll table{border-collapse:collapse;font-size:.88em;white-space:nowrap}
.psp-scroll th,.psp-scroll td{padding:.25em .6em;border-top:1px solid #d0d7de;text-align:right}
.psp-scroll th:first-child,.psp-scroll td:first-child{text-align:left}
</style>"""


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
    """An admonition box (``kind``: note, tip, warning, important); lines starting with "- " become list items."""
    if kind not in ("note", "tip", "warning", "important"):
        raise ValueError(f"unknown admonition kind {kind!r}; use note, tip, warning or important")
    body = _lines_html(str(text).splitlines())
    html_text = f'<div class="admonition {kind}"><p class="admonition-title">{html.escape(title)}</p>{body}</div>'
    return Block(html_text, f"```{{admonition}} {title}\n:class: {kind}\n{text}\n```")


def missing_data_note(error, what=None):
    """A warning box saying which data set is missing and how to get it (the loader's ``FileNotFoundError``)."""
    message = str(error.args[0] if getattr(error, "args", None) else error)
    title = f"Data missing: {what} skipped" if what else "Data missing: skipped"
    return note(message + "\n\nRe-run this notebook once the data set is in place.", title=title, kind="warning")


def claims_table(verdicts, depth=2):
    """The conclusions table: claim, paper's value (and where), ours (mean, interval, n), regime, verdict, test.

    Args:
        verdicts: ``experiments.stats.Verdict``s (C1-C6); their parts follow as indented rows
            down to `depth` levels. A part's paper value and regime are shown only where they
            differ from its parent's.
    """
    rows = []
    for verdict in verdicts:
        _rows(verdict, None, 0, depth, rows)
    head = "".join(f"<th>{c}</th>" for c in CLAIM_COLUMNS)
    body = "".join(
        f'<tr class="psp-row-{level}">' + "".join(
            f'<td data-label="{c}"{_indent(level) if i == 0 else ""}>{cell}</td>'
            for i, (c, cell) in enumerate(zip(CLAIM_COLUMNS, cells_html))) + "</tr>"
        for level, cells_html, _ in rows)
    html_text = f'{_CLAIMS_CSS}<table class="psp-claims"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    markdown = ["| " + " | ".join(CLAIM_COLUMNS) + " |", "|" + "---|" * len(CLAIM_COLUMNS)]
    markdown += ["| " + " | ".join(_md(c) for c in text) + " |" for _, _, text in rows]
    return Block(html_text, "\n".join(markdown))


conclusions_table = claims_table


def data_table(entries, columns, caption=None, css_class=""):
    """A numeric table in a sideways-scrolling container; columns whose every cell is empty are dropped.

    Args:
        entries: list of dicts.
        columns: (key, title, format) triples; format is a ``str.format`` pattern or a callable.
            A cell is empty when its value is missing, None, nan or "".
    """
    kept = [(k, t, f) for k, t, f in columns if any(_cell(e.get(k), f) for e in entries)]
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in kept)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(e.get(k), f))}</td>" for k, _, f in kept) + "</tr>"
                   for e in entries)
    return _scroll_table(head, body, caption, css_class, [t for _, t, _ in kept],
                         [[_cell(e.get(k), f) for k, _, f in kept] for e in entries])


def pivot_table(entries, rows, column, value, fmt="{:.2f}", row_titles=None, column_order=None, caption=None):
    """A pivot: one line per distinct value of the `rows` keys, one column per value of `column`.

    Columns with no value are dropped. Raises ValueError when two entries fall in one cell.
    """
    cells, lines, found = {}, {}, []
    for e in entries:
        line, col = tuple(e.get(k) for k in rows), e.get(column)
        if (line, col) in cells:
            raise ValueError(f"two entries for row {line} and column {col!r}; pivot needs one per cell")
        cells[(line, col)] = _cell(e.get(value), fmt)
        lines.setdefault(line, None)
        found += [col] if col not in found else []
    order = [c for c in (column_order or ()) if c in found] + [c for c in found if c not in (column_order or ())]
    order = [c for c in order if any(cells.get((line, c)) for line in lines)]
    titles = list(row_titles or rows) + [str(c) for c in order]
    table = [[_cell(v, "{}" if not isinstance(v, float) else "{:g}") for v in line] + [cells.get((line, c), "")
                                                                                        for c in order]
             for line in lines]
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in table)
    return _scroll_table(head, body, caption, "psp-pivot", titles, table)


def details(summary, block):
    """`block` folded under a one-line ``<details>`` summary."""
    return Block(f"<details><summary>{html.escape(summary)}</summary>{block.html}</details>",
                 f"```{{dropdown}} {summary}\n{block.markdown}\n```")


def join(*parts):
    """Blocks one after the other."""
    return Block("".join(p.html for p in parts), "\n\n".join(p.markdown for p in parts))


PROVENANCE_KEYS = ("commit", "run_keys", "profile", "seeds", "data", "device", "wall_time")


def figure_caption(number, text, provenance):
    """A numbered caption ("Figure 3: ...") and a provenance line; library versions fold into ``<details>``.

    Args:
        number: figure number (int or str such as "2a").
        text: the caption.
        provenance: dict with "commit", "run_keys" (list of "stage/key" strings), "profile",
            "seeds", "data" (list of {"name", "size" (images), "checksum"}), "device",
            "wall_time" (seconds the computation took), optional "versions" (name -> version).

    Raises:
        ValueError: a provenance key is missing (the message lists them).
    """
    missing = [k for k in PROVENANCE_KEYS if k not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {', '.join(missing)}; needs {', '.join(PROVENANCE_KEYS)} "
                         "(and optionally versions)")
    p = provenance
    keys = [str(k) for k in p["run_keys"]]
    data = [p["data"]] if hasattr(p["data"], "get") else list(p["data"])
    sets = ", ".join(f"{d['name']} ({_count(d.get('size'))} images, checksum {str(d.get('checksum', '?'))[:12]})"
                     for d in data)
    seeds = ", ".join(map(str, p["seeds"])) if isinstance(p["seeds"], (list, tuple)) else str(p["seeds"])
    facts = [("commit", str(p["commit"])[:12]), ("profile", p["profile"]), ("seeds", seeds), ("data", sets),
             ("device", p["device"]), ("computed in", _duration(p["wall_time"])),
             ("runs", _listed_keys(keys))]
    line = " · ".join(f"{name} {html.escape(str(value))}" for name, value in facts)
    versions = "; ".join(f"{k} {v}" for k, v in (p.get("versions") or {}).items()) or "not recorded"
    html_text = (f'<div class="psp-caption" role="note"><p><strong>Figure {html.escape(str(number))}:</strong> '
                 f'{html.escape(text)}</p><p style="font-size:.85em;color:#444;overflow-wrap:anywhere">{line}</p>'
                 f'<details style="font-size:.85em"><summary>Library versions and full run keys</summary>'
                 f'<p>{html.escape(versions)}</p><p style="overflow-wrap:anywhere">{html.escape(", ".join(keys))}</p>'
                 "</details></div>")
    markdown = f"**Figure {number}:** {text}\n\n{' · '.join(f'{n} {v}' for n, v in facts)}\n\nversions: {versions}"
    return Block(html_text, markdown)


# --- helpers ---------------------------------------------------------------------------------


def _rows(verdict, parent, level, depth, out):
    label = verdict.id if parent is None else _relative(verdict.id, parent.id)
    same = parent is not None
    paper = "" if same and set(verdict.paper) <= set(parent.paper) else _paper(verdict)
    regime = verdict.regime.text() if verdict.regime and not (same and verdict.regime == parent.regime) else ""
    ours = _ours(verdict)
    state = (f'<span class="psp-state psp-{verdict.state.replace(" ", "-")}">{verdict.state}</span>'
             f'<div class="psp-small">{html.escape(verdict.reason)}</div>')
    claim = f"<strong>{html.escape(label)}</strong> {html.escape(verdict.claim)}"
    cells = [claim, paper, ours, html.escape(regime), state, html.escape(verdict.test)]
    text = [f"{label} {verdict.claim}", _strip(paper), _strip(ours), regime, f"{verdict.state}: {verdict.reason}",
            verdict.test]
    out.append((level, cells, text))
    if level < depth:
        for part in verdict.parts:
            _rows(part, verdict, level + 1, depth, out)


def _relative(ident, parent):
    """The part of `ident` after the leading " · " segments it shares with `parent` ("C1 · a · b" -> "b")."""
    mine, theirs = ident.split(" · "), parent.split(" · ")
    shared = 0
    while shared < min(len(mine), len(theirs)) and mine[shared] == theirs[shared]:
        shared += 1
    return " · ".join(mine[shared:]) or ident


def _paper(verdict):
    values = list(verdict.paper)
    if not values:
        from psputil.experiments import paper

        found = paper.FINDINGS.get(verdict.id, ())
        return "".join(f"<details><summary>no number; Sec. {s}</summary>“{html.escape(q)}”</details>"
                       for s, q in found)
    return "".join(f"<details><summary>{html.escape(v.text())} ({html.escape(v.where)})</summary>"
                   f"{html.escape(v.quantity)}: “{html.escape(v.source)}”</details>" for v in values)


def _ours(verdict):
    n = ", ".join(f"{role} {count}" for role, count in verdict.n.items())
    size = f"; test set {_count(verdict.test_size)} images" if verdict.test_size else ""
    counts = f'<div class="psp-small">n: {html.escape(n)}{size}</div>' if n or size else ""
    if verdict.ours is not None:
        return (f"{html.escape(verdict.ours.text())}<div class=\"psp-small\">{html.escape(verdict.ours.method)}</div>"
                + counts)
    if verdict.parts:
        states = [p.state for p in verdict.parts]
        tally = ", ".join(f"{states.count(s)} {s}" for s in STATES if s in states)
        return f"{len(states)} part{'s' if len(states) > 1 else ''}: {html.escape(tally)}" + counts
    return counts


def _indent(level):
    return f' style="padding-left:{0.5 + 1.2 * level:.1f}em"' if level else ""


def _scroll_table(head, body, caption, css_class, titles, table):
    cap = f'<p style="font-size:.85em;margin-top:.3em">{html.escape(caption)}</p>' if caption else ""
    html_text = (f'{_SCROLL_CSS}<div class="psp-scroll" tabindex="0" role="region" '
                 f'aria-label="table, scrolls sideways"><table class="table {css_class}"><thead><tr>{head}</tr>'
                 f'</thead><tbody>{body}</tbody></table></div>{cap}')
    markdown = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    markdown += ["| " + " | ".join(_md(c) for c in line) + " |" for line in table]
    return Block(html_text, "\n".join(markdown + ([f"\n{caption}"] if caption else [])))


def _cell(value, fmt):
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt(value) if callable(fmt) else fmt.format(value)


def _count(n):
    return f"{n:,}" if isinstance(n, int) else str(n if n is not None else "?")


def _duration(seconds):
    seconds = float(seconds)
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest:.0f} s" if minutes else f"{rest:.1f} s"


def _listed_keys(keys, shown=6):
    """The caption's short run keys: the first `shown`, then how many more the folded list holds."""
    text = ", ".join(_short(k) for k in keys[:shown]) or "none"
    return text if len(keys) <= shown else f"{text} and {len(keys) - shown} more (listed below)"


def _short(key):
    stage, _, digest = key.rpartition("/")
    return f"{stage}/{digest[:12]}" if stage else key[:12]


def _strip(text):
    return html.unescape(re.sub(r"<[^>]+>", " ", text)).split()


def _md(cell):
    text = " ".join(cell) if isinstance(cell, list) else str(cell)
    return text.replace("|", "\\|").replace("\n", " ")


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
