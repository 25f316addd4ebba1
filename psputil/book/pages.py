"""Support for the book's notebooks: rate sliders that work without a kernel, run info, notes, claims.

A section notebook calls these after its computations: ``rate_slider`` turns one
pre-rendered figure per compression rate into a slider linked to a ``Stack`` in the
browser (``jslink``), so the static HTML needs no kernel; ``start_run``/``run_info``
record the device, library versions, profile and wall time; ``missing_data_note``
turns a data loader's ``FileNotFoundError`` into a note on the page; ``claims_table``
renders the verdicts of this run (the page outputs live in ``psputil.blocks``, re-exported here).
"""

import base64
import html
import io
import platform
import time
from dataclasses import dataclass, field

from psputil.book.blocks import missing_data_note, note

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
    from psputil.experiments import runs as experiments

    return experiments.setup(str(name), profile)
