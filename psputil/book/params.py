"""Every parameter of the book's notebooks in one schema, checked before any work.

One flat file per profile, ``book/params/<profile>.yaml``, holds every parameter once;
``NOTEBOOKS`` says which of them each notebook takes (its ``parameters`` cell defines
exactly those, with the quick values). ``pages.start`` (or ``params.check(globals(),
"section5_1")``) checks a notebook's own parameters; names of the other notebooks that
papermill injected from the same file are accepted and ignored, and a name in no
notebook's schema (a typo such as ``sedes``) is refused. ``python -m psputil reproduce``
checks the whole file with the same schema before it starts a kernel. A bad value raises
one ``ValueError`` naming the parameter, the value, what is valid and the papermill
syntax that sets it. Lists go through ``-y`` (papermill's ``-p`` passes text and single
numbers, never lists).

This module imports neither torch nor scipy (a notebook fails on a bad value in well under a
second), so it holds its own copies of the names it checks: profiles, setups, data sets, ReLU
layers and the plane's ranges; ``tests/test_inputs_params.py`` pins each to its source.
"""

import ast
import difflib
import re
from dataclasses import dataclass
from typing import Callable

from psputil import checks
from psputil.scale.executors import EXECUTOR_NAMES, check_address

# Copies of names defined in modules that import torch or scipy (pinned by tests): the profiles
# (experiments.PROFILES, book.pages.PROFILES), experiments.SETUP_NAMES, data.DATASET_NAMES, the
# ReLU module paths of models.build(name), and PlaneConfig's a_range/b_range.
PROFILES = ("smoke", "quick", "paper")
SETUP_NAMES = ("lenet300-mnist", "lenet5-mnist", "lenet5-fashion", "resnet32-cifar10")
DATASET_NAMES = ("mnist-5k", "mnist", "fashion-mnist", "cifar10", "cifar10-synthetic")
RELU_LAYERS = {
    "lenet300": ("relu1", "relu2"),
    "lenet5": ("relu1", "relu2", "relu3"),
    "resnet32": ("relu1",) + tuple(f"layer{s}.{b}.relu{k}" for s in (1, 2, 3) for b in range(5) for k in (1, 2)),
}
A_RANGE, B_RANGE = (-0.5, 1.5), (-1.0, 1.0)  # the plane's grid: G at a = 0, 1-S at a = 1, both at b = 0

_TEXT = "papermill -p passes text and single numbers, never lists"


@dataclass(frozen=True)
class Parameter:
    """One notebook parameter: what it means, what is valid, and its check."""

    name: str
    meaning: str  # what it sets (and what None means)
    valid: str  # what is valid, in words
    example: str  # a valid value in YAML, for the papermill hint
    check: Callable  # (name, value) -> the normalised value; ValueError saying what is wrong

    def papermill(self):
        """The papermill option that sets a valid value of this parameter."""
        if self.example.startswith("[") or self.example == "null":
            return f"-y '{self.name}: {self.example}'"
        return f"-p {self.name} {self.example}"


def available_devices():
    """The devices this machine's torch can use (``devices.available``; imported here, so other checks stay torch-free)."""
    from psputil import devices

    return devices.available()


def check_device(name, value):
    """A device this machine's torch can use: "auto", "cpu", or a CUDA device it has ("cuda", "cuda:N")."""
    if value in ("auto", "cpu"):
        return value
    if isinstance(value, str) and re.fullmatch(r"cuda(:\d+)?", value) and value in available_devices():
        return value
    valid = available_devices()
    note = "" if "cuda" in valid else " (no CUDA device here)"
    raise ValueError(f"unknown device {value!r}; valid here: {', '.join(valid)}{note}")


def _list_or_none(check):
    return lambda name, value: None if value is None else check(name, value)


def _names(valid):
    return lambda name, value: list(checks.names(name, value, valid=valid))


def _seeds(name, value):
    seeds = list(checks.numbers_list(name, value, low=0, integers=True))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"{name} must be distinct seeds, got {', '.join(map(str, repeated))} more than once")
    return seeds


def _rate(name, value):
    if value is None:
        return None
    return float(checks.number(name, value, low=0, high=100, low_open=True, high_open=True))


def _rates(name, value):
    rates = checks.numbers_list(name, value, low=0, high=100, low_open=True, high_open=True)
    return [float(r) for r in rates]


def _optional_text(name, value):
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{name} must be None or a non-empty string, got {value!r}")
    return value


def _on_grid(lo, hi, points, wanted):
    """Whether ``linspace(lo, hi, points)`` holds `wanted` (as ``numpy.isclose`` would find it)."""
    if points == 1:
        return abs(lo - wanted) <= 1e-9
    step = (wanted - lo) / (hi - lo) * (points - 1)
    return 0 <= round(step) <= points - 1 and abs(step - round(step)) <= 1e-9 * (points - 1)


def _grid_counts(lo, hi, wanted, how_many=4):
    return [n for n in range(1, 64) if all(_on_grid(lo, hi, n, w) for w in wanted)][:how_many]


def _grid_points(name, value):
    points = checks.numbers_list(name, value, low=1, integers=True)
    if len(points) != 2:
        raise ValueError(f"{name} must be two counts [along a, along b], got {list(points)}")
    for index, (axis, (lo, hi), wanted) in enumerate((("a", A_RANGE, (0.0, 1.0)), ("b", B_RANGE, (0.0,)))):
        if not all(_on_grid(lo, hi, points[index], w) for w in wanted):
            counts = ", ".join(map(str, _grid_counts(lo, hi, wanted)))
            raise ValueError(f"{name}[{index}] = {points[index]} points along {axis} over [{lo}, {hi}] miss "
                             f"{' and '.join(f'{w:g}' for w in wanted)} (G and 1-S must lie on the grid); "
                             f"valid counts along {axis}: {counts} and so on")
    return list(points)


def _pairs(name, value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be None or a non-empty list of [source setup, target data set] pairs, "
                         f"got {value!r}")
    out = []
    for index, pair in enumerate(value):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{name}[{index}] must be a pair [source setup, target data set], got {pair!r}")
        checks.choice(f"{name}[{index}] source setup", pair[0], SETUP_NAMES)
        checks.choice(f"{name}[{index}] target data set", pair[1], DATASET_NAMES)
        out.append([pair[0], pair[1]])
    return out


def _integer(low, optional=False):
    return lambda name, value: checks.integer(name, value, low=low, optional=optional)


_SCHEMA = (
    # how and where a notebook runs (every notebook)
    Parameter("profile", "the parameter set (smoke: tests, quick: a CPU, paper: a GPU)",
              f"one of {', '.join(PROFILES)}", "quick", lambda n, v: checks.choice("profile", v, PROFILES)),
    Parameter("device", "where tensors live (auto: CUDA when present)", "auto, cpu, or a CUDA device of this "
              "machine (cuda, cuda:N)", "auto", check_device),
    Parameter("download", "let torchvision download missing data sets", "True or False", "True",
              lambda n, v: checks.flag(n, v)),
    Parameter("executor", "where independent runs go", f"one of {', '.join(EXECUTOR_NAMES)}", "in-process",
              lambda n, v: checks.choice("executor", v, EXECUTOR_NAMES)),
    Parameter("workers", "process-pool size or CPUs of a local Ray instance (None: all cores)",
              "None or an integer >= 1", "2", _integer(1, optional=True)),
    Parameter("ray_address", "the Ray cluster to join (None: a local instance); only with executor ray",
              "None or an address such as host:6379 or ray://host:10001", "host:6379",
              lambda n, v: check_address(v)),
    # the experiments of Section 5.1 (and the seeds the later sections pair)
    Parameter("setups", "the experimental setups of Section 5.1 and the transfer chapter",
              f"a non-empty list of setup names from {', '.join(SETUP_NAMES)}", '["lenet300-mnist"]',
              _names(SETUP_NAMES)),
    Parameter("seeds", "LOBSTER runs, each with its paired dense run and 1-S (same seed)",
              "a non-empty list of distinct integers >= 0", "[0, 1, 2]", _seeds),
    Parameter("control_seeds", "seeds of each retraining control (lottery, new init, random mask) at each "
              "milestone", "a non-empty list of distinct integers >= 0", "[0, 1]", _seeds),
    Parameter("rates", "compression milestones in percent (None: each setup's own)",
              "None, or a non-empty list of percentages in (0, 100)", "[80.0, 95.0]", _list_or_none(_rates)),
    # the loss plane of Sections 5.2 and 5.3 (one cached grid, shared with the conclusions)
    Parameter("landscape_setup", "the setup whose loss plane Sections 5.2, 5.3 and the conclusions map",
              f"one setup name from {', '.join(SETUP_NAMES)}", "lenet5-mnist",
              lambda n, v: checks.choice("setup", v, SETUP_NAMES)),
    Parameter("plane_rate", "compression rate (percent) of the plane and the Hessian (None: the highest "
              "milestone every seed reached)", "None or a percentage in (0, 100)", "95.0", _rate),
    Parameter("grid_points", "grid points along a (G -> 1-S) and along b (the random direction)",
              f"two counts [along a, along b] whose grids over a in [{A_RANGE[0]}, {A_RANGE[1]}] and b in "
              f"[{B_RANGE[0]}, {B_RANGE[1]}] hold G (0, 0) and 1-S (1, 0): along a "
              f"{', '.join(map(str, _grid_counts(*A_RANGE, (0.0, 1.0))))} and so on; along b "
              f"{', '.join(map(str, _grid_counts(*B_RANGE, (0.0,))))} and so on",
              "[9, 9]", _grid_points),
    Parameter("train_samples", "seeded subset of the training split the maps and the Hessian use (None: all)",
              "None or an integer >= 1", "1000", _integer(1, optional=True)),
    Parameter("entropy2_layers", "ReLU layers of the second-order entropy maps (None: all)",
              "None, or a non-empty list of ReLU module paths of the landscape setup's model", '["relu3"]',
              _list_or_none(_names(None))),
    Parameter("points_per_pass", "grid points per vmapped pass (speed only)", "an integer >= 1", "4",
              _integer(1)),
    # the transfer chapter (shared with the conclusions' claim C6)
    Parameter("pairs", "[source setup, target data set] pairs of the transfer study (None: each setup to "
              "its default target)", f"None, or a non-empty list of pairs [setup, data set] with setups from "
              f"{', '.join(SETUP_NAMES)} and data sets from {', '.join(DATASET_NAMES)}",
              '[["lenet5-mnist", "fashion-mnist"]]', _list_or_none(_pairs)),
    Parameter("transfer_seeds", "the seeds (of `seeds`) whose G, 1-S, dense and untrained networks are the "
              "transfer sources (None: every seed)", "None, or a non-empty list of distinct integers >= 0 "
              "that `seeds` holds", "[0]", _list_or_none(_seeds)),
    Parameter("finetune_epochs", "epochs of fine-tuning the whole masked network after the probe (0: none)",
              "an integer >= 0", "0", _integer(0)),
    Parameter("entropy_samples", "test samples per data set for the transfer entropies", "an integer >= 1",
              "1000", _integer(1)),
    Parameter("order2_max_neurons", "second-order entropy only on layers this small (None: all)",
              "None or an integer >= 1", "4096", _integer(1, optional=True)),
    Parameter("resamples", "bootstrap resamples of the rank correlation", "an integer >= 1", "2000",
              _integer(1)),
)
SCHEMA = {p.name: p for p in _SCHEMA}

RUN = ("profile", "device", "download", "executor", "workers", "ray_address")
EXPERIMENTS = ("setups", "seeds", "control_seeds", "rates")
PLANE = ("landscape_setup", "plane_rate", "grid_points", "train_samples", "entropy2_layers", "points_per_pass")
TRANSFER = ("pairs", "transfer_seeds", "finetune_epochs", "entropy_samples", "order2_max_neurons", "resamples")
# The parameters of each notebook of the book: its `parameters` cell defines exactly these, in this order,
# with the values of book/params/quick.yaml (pinned by tests/test_inputs_params.py).
NOTEBOOKS = {
    "methods": RUN,
    "section5_1": RUN + EXPERIMENTS,
    "section5_2": RUN + ("seeds", "rates") + PLANE,
    "section5_3": RUN + ("seeds", "rates") + PLANE,
    "transfer": RUN + ("setups", "seeds", "rates") + TRANSFER,
    "conclusions": RUN + EXPERIMENTS + PLANE + TRANSFER,
}
ALL = tuple(SCHEMA)  # every parameter of the book: what a profile file holds


def parameters_of(notebook):
    """The parameter names `notebook` takes (None: every parameter of the book, as a profile file holds them)."""
    if notebook is None:
        return ALL
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; the book's notebooks: {', '.join(NOTEBOOKS)} "
                         "(a new notebook needs its entry in psputil.book.params.NOTEBOOKS)")
    return NOTEBOOKS[notebook]


def check(values, notebook, namespace=None):
    """Check the parameters of `notebook` in `values`; returns {name: normalised value} of its own parameters.

    Args:
        values: a notebook's ``globals()`` (names that are not parameters are ignored; every
            parameter of the notebook must be there), or the values of a parameter file (absent
            parameters keep the notebook's defaults).
        notebook: the notebook's name, e.g. "section5_2" (None: every parameter of the book, as
            a profile file holds them; every value given is checked).
        namespace: whether `values` is a notebook namespace (default: it is when it holds
            ``__builtins__``). In a namespace the names papermill injected are read from
            IPython's input history, so an unknown papermill parameter is refused as well.

    Parameters of the book's other notebooks (one profile file holds them all) are accepted
    and ignored: neither checked nor returned.

    Raises:
        ValueError: a name that is no parameter of any notebook (naming the valid ones and the
            closest match), a missing one, or a value of the wrong type or out of range: the
            message names the parameter, the value, what is valid and the papermill option
            that sets it.
    """
    names = parameters_of(notebook)
    if namespace is None:
        namespace = "__builtins__" in values
    if namespace:
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"notebook {notebook}: its parameters cell must define {', '.join(missing)}")
        given = injected_names(values)
    else:
        given = list(values)
    unknown = [n for n in given if n not in SCHEMA and not str(n).startswith("PAPERMILL_")]
    if unknown:
        raise ValueError(_unknown_message(unknown, names, notebook))
    checked = {name: check_value(name, values[name]) for name in names if name in values}
    _check_together(checked)
    return checked


def parameters_cell(notebook, values):
    """The source of `notebook`'s ``parameters`` cell: its own parameters, in schema order, one per line.

    Args:
        values: name -> value for every parameter of the notebook (e.g. the quick file's).

    Raises:
        ValueError: an unknown notebook, or a parameter of it missing from `values`.
    """
    names = parameters_of(notebook)
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"values lack {', '.join(missing)} of notebook {notebook}")
    lines = ["# Defaults: the quick profile (book/params/quick.yaml); papermill -f book/params/<profile>.yaml "
             "overrides them."]
    lines += [f"{name} = {values[name]!r}  # {SCHEMA[name].meaning}" for name in names]
    return "\n".join(lines)


def check_value(name, value):
    """One parameter's value, normalised (lists for sequences); ValueError with the papermill hint."""
    parameter = SCHEMA[name]
    try:
        return parameter.check(name, value)
    except ValueError as error:
        text = ""
        if isinstance(value, str) and parameter.example.startswith("[") and value.lstrip().startswith("["):
            text = f" (the text {value!r}, not a list: {_TEXT})"
        raise ValueError(f"parameter {name} = {value!r}{text} is not valid: {error}. Valid: {parameter.valid}. "
                         f"With papermill: {parameter.papermill()}") from None


def injected_names(namespace):
    """Names assigned by papermill's injected-parameters cell, from IPython's input history (`_ih`)."""
    history = namespace.get("_ih") or namespace.get("In") or []
    for source in reversed(list(history)):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return []
            return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                    if isinstance(t, ast.Name)]
    return []


def _check_together(values):
    """Checks across parameters: a Ray address needs the ray executor; layers of the landscape model;
    transfer seeds among the seeds."""
    if values.get("ray_address") is not None and values.get("executor", "ray") != "ray":
        raise ValueError(f"parameter ray_address = {values['ray_address']!r} needs executor ray, got executor "
                         f"{values['executor']!r}. With papermill: -p executor ray -p ray_address host:6379, "
                         "or -p ray_address None")
    layers, setup = values.get("entropy2_layers"), values.get("landscape_setup")
    if layers is not None and setup is not None:
        model = setup.split("-")[0]
        unknown = [name for name in layers if name not in RELU_LAYERS[model]]
        if unknown:
            raise ValueError(f"parameter entropy2_layers = {layers!r} is not valid: unknown ReLU layers "
                             f"{', '.join(map(repr, unknown))} of {model} (landscape_setup {setup}); valid: "
                             f"{', '.join(RELU_LAYERS[model])}, or None for all. With papermill: "
                             f"-y 'entropy2_layers: [\"{RELU_LAYERS[model][-1]}\"]'")
    chosen, seeds = values.get("transfer_seeds"), values.get("seeds")
    if chosen is not None and seeds is not None and not set(chosen) <= set(seeds):
        extra = sorted(set(chosen) - set(seeds))
        raise ValueError(f"parameter transfer_seeds = {chosen!r} is not valid: {', '.join(map(str, extra))} not in "
                         f"seeds = {seeds!r} (the transfer sources are runs of those seeds). With papermill: "
                         f"-y 'transfer_seeds: [{seeds[0]}]', or -p transfer_seeds None for every seed")


def _unknown_message(unknown, names, notebook):
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), ALL, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    where = f"notebook {notebook}" if notebook else "the notebooks"
    others = [n for n in ALL if n not in names]
    also = f"; a profile file may also hold the other notebooks' parameters ({', '.join(others)})" if others else ""
    return (f"unknown parameter(s) {', '.join(hints)} for {where}; valid: {', '.join(names)}{also}. "
            "Check the keys of the parameter file (-f) and the names given to papermill -p/-y")
