"""The analyses of Sections 5.2 and 5.3 of one pair (G, 1-S) at one compression rate, cached in the run store.

A ``Pair`` is G (one LOBSTER run's best network at the first level reaching a rate)
and its 1-S (the dense run of the same seed pruned in one shot to G's exact sparsity,
rewound and retrained). ``plane`` evaluates, in one ``landscape.evaluate_grid`` pass on
a seeded subset of the training set, the loss, error, PSP L2 norm and first- and
second-order PSP-entropy on the plane through G (0, 0) and 1-S (1, 0), and the
per-neuron first-order entropies of both solutions (Fig. 2a, 3, 4); its random
direction v spans all parameters ("all") or only the union of G's and 1-S's surviving
weights ("masked": no point of the plane revives a weight both pruned). The top Hessian
eigenvalues of G and 1-S (Fig. 2b) and the checks of both minima (gradient norm,
eigenpair residuals, loss profile, dead neurons, entropies over live neurons) are
``experiments.minima``. Sections 5.2, 5.3 and the conclusions share them.
"""

import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

from psputil import checks, landscape, pruning, psp
from psputil.experiments import runs
from psputil.pruning import lobster
from psputil.experiments.units import DenseRun, LobsterRun, OneShotRun, load_splits
from psputil.metrics import Error, Loss

MAP_NAMES = ("loss", "error", "psp_l2", "psp_entropy1", "psp_entropy2")
DIRECTIONS = ("all", "masked")  # v over all parameters, or over the union of both solutions' surviving weights


@dataclass(frozen=True)
class Pair:
    """G of `lobster` at the first level reaching `rate`, and 1-S from `dense` at G's exact sparsity."""

    VERSION: ClassVar[int] = 1

    lobster: LobsterRun
    rate: float  # requested compression rate, percent
    dense: DenseRun  # the dense run 1-S prunes (same seed as the LOBSTER run)

    def __post_init__(self):
        checks.number("rate", self.rate, 0, 100, high_open=True)


def pair(setup, rate, seed):
    """The ``Pair`` of `setup` at `rate` for LOBSTER seed `seed` (1-S from the dense run of that seed)."""
    return Pair(setup.lobster_run(seed), float(checks.number("rate", rate, 0, 100, high_open=True)),
                setup.dense_run(seed))


@dataclass(frozen=True)
class PlaneConfig:
    """What defines the plane analyses of one pair."""

    STAGE: ClassVar[str] = "plane"  # its folder in the run store
    VERSION: ClassVar[int] = 1

    pair: Pair
    a_range: tuple = (-0.5, 1.5)  # along u = 1-S - G; must contain 0 and 1 on the grid
    b_range: tuple = (-1.0, 1.0)  # along v, in units of |u|; must contain 0 on the grid
    points: tuple = (9, 9)  # grid points along a and along b
    train_samples: Optional[int] = 1000  # seeded subset of the training split (None: all)
    seed: int = 0  # training subset and plane direction v
    entropy2_layers: Optional[tuple] = None  # relu paths of the second-order maps (None: all)
    eps: float = 0.0  # probability clamp of the entropies
    direction: str = "all"  # "all" | "masked": v restricted to the union of G's and 1-S's masks

    def __post_init__(self):
        a, b = self.axes()
        for name, values, wanted in (("a_range", a, (0.0, 1.0)), ("b_range", b, (0.0,))):
            for w in wanted:
                if not np.isclose(values, w, atol=1e-9).any():
                    raise ValueError(f"{name} {getattr(self, name)} with points {self.points} misses {w} on the grid; "
                                     "choose ranges and points whose grid contains G (0, 0) and 1-S (1, 0)")
        checks.integer("train_samples", self.train_samples, 1, optional=True)
        checks.integer("seed", self.seed, 0)
        checks.names("entropy2_layers", self.entropy2_layers, optional=True)
        checks.number("eps", self.eps, 0, 0.5, high_open=True)
        checks.choice("direction", self.direction, DIRECTIONS)

    def axes(self):
        """(a values, b values) of the grid as float64 numpy arrays."""
        if not isinstance(self.points, tuple) or len(self.points) != 2:
            raise ValueError(f"points must be two grid counts (along a, along b), got {self.points!r}")
        for name, value in (("a_range", self.a_range), ("b_range", self.b_range)):
            if not isinstance(value, tuple) or len(value) != 2:
                raise ValueError(f"{name} must be (low, high), got {value!r}")
            checks.numbers_list(name, list(value))
        checks.numbers_list("points", list(self.points), 1, integers=True)
        return np.linspace(*self.a_range, self.points[0]), np.linspace(*self.b_range, self.points[1])


def reached(ctx, setup, rates, seeds):
    """The requested rates every LOBSTER seed reached, and those some seed did not: (reached, skipped)."""
    summaries = runs.lobster(ctx, [setup.lobster_run(s) for s in seeds])
    top = min(max((row["sparsity"] for row in s["levels"]), default=0.0) for s in summaries)
    wanted = sorted(float(r) for r in rates)
    return [r for r in wanted if r <= top], [r for r in wanted if r > top]


def distinct_rates(ctx, setup, rates, seeds):
    """(rates every seed reached that fall on distinct levels of the first seed's run, skipped rates).

    Two rates on one level would give the same G (and the same masks) twice.
    """
    candidates, skipped = reached(ctx, setup, rates, seeds)
    levels = runs.lobster(ctx, [setup.lobster_run(seeds[0])])[0]["levels"]
    out, seen = [], set()
    for rate in candidates:
        index = lobster.level_at(levels, rate)
        (skipped if index in seen else out).append(rate)
        seen.add(index)
    return out, sorted(skipped)


def oneshot_run(ctx, config_pair):
    """The ``OneShotRun`` of a pair: its dense run pruned to G's exact sparsity."""
    _, row = runs.level(ctx, config_pair.lobster, config_pair.rate)
    return OneShotRun(config_pair.dense, float(row["sparsity"]))


def solutions(ctx, config_pair):
    """G and 1-S of a pair: ((model, mask, level row), (model, mask, info)); cached upstream."""
    g = runs.g_model(ctx, config_pair.lobster, config_pair.rate)
    return g, runs.oneshot_model(ctx, oneshot_run(ctx, config_pair))


def train_subset(ctx, config):
    """The seeded training subset the plane and the Hessian are computed on."""
    splits = load_splits(config.pair.lobster.data, ctx.device_name)
    return splits.train.subset(config.train_samples, config.seed)


def plane(ctx, config, batch_size=500, points_per_pass=4):
    """Maps on the plane through G and 1-S plus both solutions' facts, cached in the store.

    Args:
        config: a ``PlaneConfig``.
        batch_size, points_per_pass: speed only (not part of the key).

    Returns:
        dict: "a", "b" (1-D tensors), "maps" (name -> (len b, len a) float64 tensor, entry
        [i, j] at (a[j], b[i]); names ``MAP_NAMES``), "g" and "oneshot" (sparsity, test error,
        layer sparsity, plane coordinates, and "entropy1": per_layer, per_neuron, per_class of
        first-order PSP-entropy on the subset), "entropy2_layers", "samples", "direction"
        ("all" or "masked"), "seconds" (wall time of this computation, upstream runs excluded:
        {"maps", "facts", "total"}).
    """
    return ctx.store.cached("plane", config, "result", lambda: _compute_plane(ctx, config, batch_size, points_per_pass))


def at(result, name, a, b=0.0):
    """Value of map `name` of a ``plane`` result at the grid point (a, b) (G: (0, 0), 1-S: (1, 0))."""
    j = int(np.argmin(np.abs(result["a"].numpy() - a)))
    i = int(np.argmin(np.abs(result["b"].numpy() - b)))
    if abs(float(result["a"][j]) - a) > 1e-9 or abs(float(result["b"][i]) - b) > 1e-9:
        raise ValueError(f"({a}, {b}) is not a grid point of this plane")
    return float(result["maps"][name][i, j])


def _compute_plane(ctx, config, batch_size, points_per_pass):
    (g, g_mask, row), (one, one_mask, info) = solutions(ctx, config.pair)
    start = time.perf_counter()  # the computation itself, not the upstream runs it may have had to train
    subset = train_subset(ctx, config)
    mask = landscape.union_mask(g_mask, one_mask) if config.direction == "masked" else None
    through = landscape.plane_through(g, one, seed=config.seed, mask=mask)
    a, b = config.axes()
    num_classes = load_splits(config.pair.lobster.data, ctx.device_name).num_classes
    metrics = [Loss(), Error(), psp.PSPL2(),
               psp.PSPEntropy(1, num_classes, config.eps),
               psp.PSPEntropy(2, num_classes, config.eps, layers=config.entropy2_layers)]
    maps = landscape.evaluate_grid(through, a, b, subset, metrics, batch_size, points_per_pass)
    seconds = {"maps": time.perf_counter() - start}
    out = {"a": torch.from_numpy(a), "b": torch.from_numpy(b), "samples": len(subset), "direction": config.direction,
           "maps": {name: torch.from_numpy(maps[name]) for name in MAP_NAMES},
           "entropy2_layers": list(config.entropy2_layers) if config.entropy2_layers is not None else "all"}
    facts = {"g": (g, row["best"]["test_error"], row["sparsity"]), "oneshot": (one, info["test_error"], info["sparsity"])}
    for key, (model, test_error, sparsity) in facts.items():
        first = psp.entropy(model, subset.batches(batch_size), 1, num_classes, config.eps)
        out[key] = {"test_error": float(test_error), "sparsity": float(sparsity),
                    "layer_sparsity": pruning.layer_sparsity(model),
                    "coordinates": [float(c) for c in through.coordinates(model)],
                    "entropy1": {"total": first.total, "per_layer": first.per_layer,
                                 "per_neuron": first.per_neuron, "per_class": first.per_class}}
    seconds["total"] = time.perf_counter() - start
    seconds["facts"] = seconds["total"] - seconds["maps"]
    out["seconds"] = seconds
    return out
