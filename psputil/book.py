"""Support for the book's notebooks: rate sliders that work without a kernel, run info, notes, claims.

A section notebook calls these after its computations: ``rate_slider`` turns one
pre-rendered figure per compression rate into a slider linked to a ``Stack`` in the
browser (``jslink``), so the static HTML needs no kernel; ``start_run``/``run_info``
record the device, library versions, profile and wall time; ``missing_data_note``
turns a data loader's ``FileNotFoundError`` into a note on the page; ``claims_table``
renders the verdicts of this run.
"""

import base64
import html
import io
import platform
import time
from dataclasses import dataclass, field
from typing import Optional

PROFILES = ("smoke", "quick", "paper")


# --- compression-rate slider --------------------------------------------------------


def rate_slider(figures, description="pruned", dpi=100, close=True, selected=0):
    """A slider over compression rates that switches pre-rendered figures, linked in the browser.

    Args:
        figures: mapping rate label -> matplotlib Figure, PNG bytes, or an HTML string,
            in slider order. Non-string labels are formatted with ``format_rate``.
        description: text in front of the slider.
        dpi: resolution of rendered matplotlib figures.
        close: close matplotlib figures after rendering (so they are not shown twice).
        selected: index of the figure shown first (negative counts from the end: -1 the last).

    Returns:
        ``ipywidgets.VBox([slider, stack])``; ``.slider``, ``.stack`` and ``.link``
        (the ``jslink`` from the slider's ``index`` to the stack's ``selected_index``)
        are attached to it.
    """
    import ipywidgets as widgets

    if not hasattr(figures, "items") or len(figures) == 0:
        raise ValueError("figures must be a non-empty mapping rate label -> figure, PNG bytes or HTML string")
    labels, pages = [], []
    for rate, figure in figures.items():
        label = rate if isinstance(rate, str) else format_rate(rate)
        if label in labels:
            raise ValueError(f"duplicate rate label {label!r}; labels must be distinct")
        labels.append(label)
        pages.append(_page(figure, dpi, close))
    if not -len(labels) <= selected < len(labels):
        raise ValueError(f"selected must index one of the {len(labels)} figures, got {selected}")
    selected %= len(labels)
    slider = widgets.SelectionSlider(
        options=labels, index=selected, description=description, continuous_update=True,
        style={"description_width": "initial"}, layout=widgets.Layout(width="min(100%, 36rem)"),
    )
    stack = widgets.Stack(pages, selected_index=selected)
    link = widgets.jslink((slider, "index"), (stack, "selected_index"))
    box = widgets.VBox([slider, stack])
    box.slider, box.stack, box.link = slider, stack, link
    return box


def format_rate(rate):
    """A compression-rate label: percent of pruned parameters with two decimals ("99.57 %")."""
    return f"{float(rate):.2f} %"


def figure_png(figure, dpi=100, close=True):
    """PNG bytes of a matplotlib figure (closed afterwards unless close=False)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return buffer.getvalue()


def _page(figure, dpi, close):
    import ipywidgets as widgets

    layout = widgets.Layout(max_width="100%", height="auto")
    if isinstance(figure, bytes):
        return widgets.Image(value=figure, format="png", layout=layout)
    if isinstance(figure, str):
        return widgets.HTML(value=figure)
    if hasattr(figure, "savefig"):
        return widgets.Image(value=figure_png(figure, dpi, close), format="png", layout=layout)
    raise ValueError(f"a figure must be a matplotlib Figure, PNG bytes or an HTML string, got {type(figure).__name__}")


# --- rich outputs: notes and tables -------------------------------------------------


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


# --- run information ----------------------------------------------------------------


@dataclass
class Run:
    """What a notebook run was: profile, resolved device, and when it started."""

    profile: str
    device: object  # torch.device
    started: float = field(default_factory=time.perf_counter)  # perf_counter seconds
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))

    def elapsed(self):
        """Seconds since the run started."""
        return time.perf_counter() - self.started


def start_run(profile, device="auto"):
    """Start timing a notebook run; `device` "auto" picks CUDA when present.

    Raises ValueError for an unknown profile or an unavailable device.
    """
    from psputil import devices

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    return Run(profile=profile, device=devices.resolve(device))


def run_info(run, extra=None):
    """A note with the device, library versions, profile and wall time of `run` so far.

    Args:
        run: the ``Run`` from ``start_run``.
        extra: optional mapping of further facts (e.g. seeds, setups) to list.
    """
    from psputil import devices

    facts = {"profile": run.profile, **devices.environment(run.device)}
    for module in ("numpy", "scipy", "matplotlib", "ipywidgets", "psputil"):
        facts[module] = _version(module)
    facts["platform"] = platform.platform(terse=True)
    facts["started"] = run.started_at
    facts["wall time"] = _duration(run.elapsed())
    facts.update(extra or {})
    lines = "\n".join(f"- {key}: `{value}`" for key, value in facts.items())
    return note(lines, title="About this run", kind="tip")


def _version(module):
    import importlib

    try:
        return importlib.import_module(module).__version__
    except (ImportError, AttributeError):
        return "not installed"


def _duration(seconds):
    minutes, seconds = divmod(seconds, 60)
    return f"{int(minutes)} min {seconds:.1f} s" if minutes else f"{seconds:.1f} s"


def png_html(png, alt="figure"):
    """An <img> tag embedding PNG bytes (for HTML pages of a slider)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:100%"/>'


def available_setups(names, profile, download=False, device="cpu"):
    """The setups of `names` whose data sets load: (dict name -> Setup, dict name -> missing-data note).

    Loading here also fetches a missing data set when `download` is true, so the
    experiments that load it later find it. Unknown names raise ValueError.
    """
    from psputil import data

    found, missing = {}, {}
    for name in names:
        setup = parse_setup(name, profile)
        try:
            data.load(setup.data, device, download=download)
        except FileNotFoundError as error:
            missing[name] = missing_data_note(error, name)
            continue
        found[name] = setup
    return found, missing


def parse_setup(name, profile="quick"):
    """The ``experiments.Setup`` of a setup name ("lenet5-mnist", ...) for `profile` (which picks the data).

    Raises ValueError naming the valid setups or profiles.
    """
    from psputil import experiments

    return experiments.setup(str(name), profile)
