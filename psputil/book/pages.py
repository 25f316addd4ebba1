"""The notebooks' shared setup in one call, and the widgets and run facts every page uses.

A section notebook starts with::

    page = pages.start("section5_1", globals())   # parameters checked, context, data, commit
    ...                                            # compute through page.ctx, plot
    page.figure(1, "Test error against compression.", results=runs, seconds=pages.seconds(summaries))

``start`` checks the notebook's parameters (``params.check``), uses one torch thread on the
CPU, makes the ``Context`` (store, device, executor, progress: ``psputil.scale.context``;
progress goes to $PSPUTIL_PROGRESS, which ``reproduce`` prints on the terminal), resolves
the setups whose data sets are on disk (the others become notes; ``download`` fetches
them), and records the start time and the git commit. The ``Page`` it returns draws
numbered provenance captions under figures (``figure``), the folded "About this run" line
(``run_info``) and shuts the executor down (``close``). ``rate_slider`` turns one
pre-rendered figure per compression rate into a slider linked to a ``Stack`` in the
browser (``jslink``), so the static HTML needs no kernel.
"""

import base64
import html
import io
import time
from dataclasses import dataclass, field

from psputil.book import blocks, params, provenance
from psputil.book.blocks import missing_data_note, note

PROFILES = ("smoke", "quick", "paper")


# --- the page ---------------------------------------------------------------------------------


@dataclass
class Page:
    """One notebook run: its checked parameters, context, setups, and what its captions record.

    Attributes:
        notebook: the notebook's name ("section5_1").
        params: the notebook's own parameters, checked and normalised (``params.check``).
        ctx: the ``Context`` (store, device, executor, progress) experiments run through.
        setups: setup name -> ``experiments.Setup`` for the setups whose data sets are on disk.
        missing: setup name -> a note Block saying which data set is missing and how to get it.
        commit, dirty: the git commit checked out and whether files differed from it.
        started_at: local start time (text); ``elapsed()`` gives the seconds since.
    """

    notebook: str
    params: dict
    ctx: object
    setups: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)
    commit: str = "unknown"
    dirty: bool = False
    started: float = field(default_factory=time.perf_counter)
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    data: dict = field(default_factory=dict)  # DataConfig -> provenance record, filled as needed
    closed: bool = False

    @property
    def profile(self):
        """The profile this page runs ("smoke", "quick" or "paper")."""
        return self.params["profile"]

    def elapsed(self):
        """Seconds since ``start``."""
        return time.perf_counter() - self.started

    def notes(self):
        """The missing-data notes one after the other, or None when every data set is there."""
        return blocks.join(*self.missing.values()) if self.missing else None

    def figure(self, number, caption, results=(), seconds=None, data=None, seeds=None):
        """A numbered caption with the provenance of a figure (``blocks.figure_caption``).

        Args:
            number: figure number (1, or "2a").
            caption: what the figure shows.
            results: the stage configs whose stored results the figure draws (``units.LobsterRun``,
                ``analysis.PlaneConfig``, ...), or ``(stage, config)`` pairs for stages their type
                does not name (``("curvature", plane_config)``): their run keys are listed.
            seconds: the wall time of the computation behind the figure: a number of seconds,
                or stored results (dicts with "seconds" or an epoch "history", or lists of them)
                whose recorded times are summed (``pages.seconds``).
            data: the data sets drawn: setup names, ``DataConfig``s or data set names (default:
                the data configs inside `results`).
            seeds: the seeds shown: a list, or text such as "LOBSTER 0, 1, 2; controls 0, 1"
                (default: the page's ``seeds`` parameter, else the seeds of `results`).

        Raises:
            ValueError: `seconds` missing or not a time, or a result whose stage is unknown.
        """
        if seconds is None:
            raise ValueError("figure() needs seconds: the wall time of the computation it draws (a number, or the "
                             "stored results whose 'seconds'/'history' pages.seconds sums)")
        results = list(results)
        configs = [item[1] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) else item
                   for item in results]
        chosen = provenance.data_configs(configs) if data is None else [self._data_config(d) for d in _listed(data)]
        if seeds is None:
            seeds = self.params.get("seeds") or sorted({c.seed for c in configs
                                                        if isinstance(getattr(c, "seed", None), int)})
        facts = {
            "commit": provenance.commit_label(self.commit, self.dirty),
            "run_keys": provenance.run_keys(results),
            "profile": self.profile,
            "seeds": list(seeds) if isinstance(seeds, (list, tuple)) else seeds,
            "data": [self._data_record(c) for c in chosen] or [{"name": "none", "size": "no", "checksum": "-"}],
            "device": self._device_text(),
            "wall_time": provenance.seconds(seconds),
            "versions": provenance.versions(),
        }
        return blocks.figure_caption(number, caption, facts)

    def run_info(self, extra=None):
        """The folded "About this run" line: profile, device, executor, parameters, commit, versions, wall time.

        Args:
            extra: optional mapping of further facts to list.
        """
        commit = provenance.commit_label(self.commit, self.dirty)
        summary = (f"About this run: {self.profile} profile, {self._device_text()}, "
                   f"{_duration(self.elapsed())}, commit {commit}")
        executor = self.ctx.executor
        facts = {
            "notebook": self.notebook,
            "profile": self.profile,
            "device": self._device_text(),
            "executor": f"{executor.name} ({getattr(executor, 'workers', 1)} worker(s))",
            "run store": str(self.ctx.store.root),
            "commit": self.commit + (" with uncommitted changes (shown as a final +)" if self.dirty else ""),
            "started": self.started_at,
            "wall time of the page": _duration(self.elapsed()),
            **{f"parameter {name}": value for name, value in self.params.items()},
            "re-run": f"python -m psputil papermill-command --profile {self.profile} {self.notebook}",
            **provenance.versions(),
            **(extra or {}),
        }
        lines = "\n".join(f"- {key}: `{value}`" for key, value in facts.items())
        return blocks.details(summary, note(lines, title="About this run", kind="tip"))

    def close(self):
        """Shut the executor down (pool processes, a Ray instance the page started); safe to call twice."""
        if not self.closed:
            self.ctx.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _device_text(self):
        from psputil import devices

        return devices.environment(self.ctx.device)["device"]

    def _data_config(self, value):
        from psputil import data

        if isinstance(value, data.DataConfig):
            return value
        if value in self.setups:
            return self.setups[value].data
        if isinstance(value, str) and value in params.SETUP_NAMES:
            return parse_setup(value, self.profile).data
        return data.DataConfig(data.info(value).name)

    def _data_record(self, config):
        """{"name", "size", "checksum"} of a data config (``data.fingerprint``), computed once per page."""
        if config not in self.data:
            self.data[config] = _fingerprint(config)
        return self.data[config]


def start(notebook, namespace, setups=None, store=None):
    """The shared setup of a book notebook; returns its ``Page``.

    Args:
        notebook: the notebook's name, as in ``params.NOTEBOOKS`` ("section5_1").
        namespace: the notebook's ``globals()`` (its parameters cell, and what papermill injected).
        setups: setup names to resolve (default: the notebook's ``setups``, ``landscape_setup`` and
            the sources of ``pairs``, those it has).
        store: the run store (a ``RunStore`` or folder; default $PSPUTIL_STORE or <repo>/runs).

    Raises:
        ValueError: a bad or unknown parameter (see ``params.check``), an unusable device or executor.
    """
    import torch

    from psputil import devices
    from psputil.scale import context

    values = params.check(namespace, notebook)
    if devices.resolve(values["device"]).type == "cpu":
        torch.set_num_threads(1)  # small models: one thread is faster than two contending ones
    commit, dirty = provenance.git_commit()
    ctx = context.make(store=store, device=values["device"], executor=values["executor"],
                       workers=values["workers"], address=values["ray_address"])
    page = Page(notebook, values, ctx, commit=commit, dirty=dirty)
    try:
        for name in _setup_names(values) if setups is None else list(setups):
            setup = parse_setup(name, page.profile)
            try:
                page.data[setup.data] = _fingerprint(setup.data, download=values["download"], missing_ok=False)
            except FileNotFoundError as error:
                page.missing[name] = missing_data_note(error, name)
                continue
            page.setups[name] = setup
    except BaseException:
        page.close()
        raise
    return page


def seconds(*results):
    """The compute time recorded in stored results: their "seconds", or the sum over their epoch "history"."""
    return provenance.seconds(results)


def _setup_names(values):
    names = list(values.get("setups") or [])
    if values.get("landscape_setup"):
        names.append(values["landscape_setup"])
    names += [source for source, _ in values.get("pairs") or []]
    return list(dict.fromkeys(names))


def _duration(seconds):
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes else f"{rest:.1f} s"


def _listed(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _fingerprint(config, download=False, missing_ok=True):
    """Caption record of a data config: name, split sizes and checksum (``data.fingerprint``)."""
    from psputil import data

    try:
        splits = data.load(config, "cpu", download=download)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return {"name": config.name, "size": "no", "checksum": "- (not on this machine)"}
    facts = data.fingerprint(splits)
    return {"name": facts["name"], "size": provenance.size_text(facts), "checksum": facts["checksum"]}


# --- compression-rate slider --------------------------------------------------------


def rate_slider(figures, description="pruned", dpi=100, close=True, selected=0, label=None):
    """A slider over compression rates that switches pre-rendered figures, linked in the browser.

    Args:
        figures: mapping rate label -> matplotlib Figure, PNG bytes, or an HTML string,
            in slider order. Non-string labels are formatted with ``format_rate``.
        description: text in front of the slider (plain text, never HTML).
        label: what the slider announces to screen readers (its tooltip; the book's pages copy
            it to the slider handle's ``aria-label``, ``widgets_js.SLIDER_LABELS``); default:
            "<description>: compression rate of the figure below".
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
        text = rate if isinstance(rate, str) else format_rate(rate)
        if text in labels:
            raise ValueError(f"duplicate rate label {text!r}; labels must be distinct")
        labels.append(text)
        pages.append(_page(figure, dpi, close))
    if not -len(labels) <= selected < len(labels):
        raise ValueError(f"selected must index one of the {len(labels)} figures, got {selected}")
    selected %= len(labels)
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"description must be non-empty text, got {description!r}")
    label = label or f"{description}: compression rate of the figure below"
    slider = widgets.SelectionSlider(
        options=labels, index=selected, description=description, description_allow_html=False, tooltip=label,
        continuous_update=True, style={"description_width": "initial"}, layout=widgets.Layout(width="min(100%, 36rem)"),
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


def png_html(png, alt="figure"):
    """An <img> tag embedding PNG bytes (for HTML pages of a slider)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:100%"/>'


def parse_setup(name, profile="quick"):
    """The ``experiments.Setup`` of a setup name ("lenet5-mnist", ...) for `profile` (which picks the data).

    Raises ValueError naming the valid setups or profiles.
    """
    from psputil.experiments import setups

    return setups.setup(str(name), profile)


def text(value, fmt="{:.2f}", missing="not computed"):
    """A computed value as prose text: a number formatted with `fmt`, a string as is, None/NaN as `missing`."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and value != value):
        return missing
    return fmt.format(value)


def say(name, value, fmt="{:.2f}", missing="not computed"):
    """Glue a computed value as text for the page's prose (``{glue:text}`name```), never a typed-in number.

    Args:
        value: a number (formatted with `fmt`), a string (as is), or None/NaN (`missing`); see `text`.
    """
    from myst_nb import glue

    glue(name, text(value, fmt, missing), display=False)


def show(figure):
    """Display a matplotlib figure once and close it (so the notebook does not draw it a second time)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(figure)
    plt.close(figure)
