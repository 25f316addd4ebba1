"""The analyses of Sections 5.2 and 5.3 of one (setup, compression rate), cached in the run store.

``plane`` evaluates, in one ``landscape.evaluate_grid`` pass on a seeded subset of
the training set, the loss, error, PSP L2 norm and first- and second-order
PSP-entropy on the plane through G (0, 0) and 1-S (1, 0), and the per-neuron
first-order entropies of both solutions (Fig. 2a, 3, 4). ``curvature`` gives the
top Hessian eigenvalues of the training loss of G and 1-S, each restricted to its own
mask (Fig. 2b). Both are keyed by a ``PlaneConfig``, so Sections 5.2, 5.3 and the
conclusions share one computation.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from psputil import devices, hessian, landscape, psp, pruning

from psputil.experiments import runs as experiments

from psputil.pruning import oneshot
from psputil.experiments.runs import Setup
from psputil.metrics import Error, Loss

MAP_NAMES = ("loss", "error", "psp_l2", "psp_entropy1", "psp_entropy2")


@dataclass(frozen=True)
class PlaneConfig:
    """What defines the plane analyses of one setup at one compression milestone."""

    setup: Setup
    rate: float  # requested milestone (percent); G is LOBSTER's first event reaching it
    a_range: tuple = (-0.5, 1.5)  # along u = 1-S - G; must contain 0 and 1 on the grid
    b_range: tuple = (-1.0, 1.0)  # along v, in units of |u|; must contain 0 on the grid
    points: tuple = (9, 9)  # grid points along a and along b
    train_samples: Optional[int] = 1000  # seeded subset of the training split (None: all)
    seed: int = 0  # training subset and plane direction v
    oneshot_seeds: tuple = (0,)  # 1-S is the best (lowest validation loss) of these seeds
    lobster_seed: int = 0
    entropy2_layers: Optional[tuple] = None  # relu paths of the second-order maps (None: all)
    eps: float = 0.0  # probability clamp of the entropies
    hessian_k: int = 5

    def __post_init__(self):
        a, b = self.axes()
        for name, values, wanted in (("a_range", a, (0.0, 1.0)), ("b_range", b, (0.0,))):
            for w in wanted:
                if not np.isclose(values, w, atol=1e-9).any():
                    raise ValueError(f"{name} {getattr(self, name)} with points {self.points} misses {w} on the grid; "
                                     "choose ranges and points whose grid contains G (0, 0) and 1-S (1, 0)")

    def axes(self):
        """(a values, b values) of the grid as float64 numpy arrays."""
        if len(self.points) != 2 or min(self.points) < 1:
            raise ValueError(f"points must be two positive counts (along a, along b), got {self.points}")
        return np.linspace(*self.a_range, self.points[0]), np.linspace(*self.b_range, self.points[1])


def milestones(setup, rates=None, lobster_seed=0, store=None, device="auto", progress=False):
    """The requested milestones LOBSTER reached, and those it did not: (reached, skipped).

    Args:
        rates: compression rates in percent (None or empty: ``setup.milestones``).
    """
    summary = experiments.lobster_run(setup, lobster_seed, store, device, progress)
    top = max((e["sparsity"] for e in summary["events"]), default=0.0)
    wanted = sorted(float(r) for r in (rates or setup.milestones))
    return [r for r in wanted if r <= top], [r for r in wanted if r > top]


def pruning_curves(setup, rates=None, seeds=(0,), store=None, device="auto", executor=None, progress=False):
    """Everything Fig. 1 shows for one setup (cached upstream): LOBSTER, the controls, dense training.

    Returns:
        dict: "events" (LOBSTER's pruning events, seed 0), "milestones" and "skipped" (as
        ``milestones``), "controls" (``experiments.controls`` at the reached milestones),
        "dense" ({"mean", "std", "n", "values"} of the dense test error over `seeds`).
    """
    reached, skipped = milestones(setup, rates, 0, store, device, progress)
    controls = experiments.controls(setup, reached, list(seeds), 0, store, device, progress, executor=executor)
    dense = [experiments.dense_run(setup, seed, store, device, progress)["test_error"] for seed in seeds]
    return {"events": experiments.lobster_run(setup, 0, store, device, progress)["events"], "milestones": reached,
            "skipped": skipped, "controls": controls, "dense": oneshot.summarize(dense)}


def plane_configs(setup, rates=None, seeds=(0,), points=(9, 9), train_samples=1000, entropy2_layers=None,
                  store=None, device="auto", progress=False):
    """``PlaneConfig`` per reached milestone (the book's Sections 5.2, 5.3 and conclusions share them).

    Returns: (dict milestone -> PlaneConfig, skipped milestones).
    """
    reached, skipped = milestones(setup, rates, 0, store, device, progress)
    layers = None if entropy2_layers is None else tuple(entropy2_layers)
    configs = {r: PlaneConfig(setup, r, points=tuple(points), train_samples=train_samples, oneshot_seeds=tuple(seeds),
                              entropy2_layers=layers) for r in reached}
    return configs, skipped


def solutions(config, store=None, device="auto", progress=False):
    """G and 1-S of a config: ((model, mask, event row), (model, mask, info)); cached upstream."""
    s = config.setup
    g = experiments.g_model(s, config.rate, config.lobster_seed, store, device, progress)
    one = experiments.oneshot_model(s, config.rate, config.oneshot_seeds, config.lobster_seed, store, device, progress)
    return g, one


def train_subset(config, device="auto"):
    """The seeded training subset the plane and the Hessian are computed on."""
    splits = experiments._splits(config.setup.data, str(devices.resolve(device)))
    return splits.train.subset(config.train_samples, config.seed)


def plane(config, store=None, device="auto", batch_size=500, points_per_pass=4, progress=False):
    """Maps on the plane through G and 1-S plus both solutions' facts, cached in the store.

    Args:
        config: a ``PlaneConfig``.
        batch_size, points_per_pass: speed only (not part of the key).

    Returns:
        dict: "a", "b" (1-D tensors), "maps" (name -> (len b, len a) float64 tensor, entry
        [i, j] at (a[j], b[i]); names ``MAP_NAMES``), "g" and "oneshot" (sparsity, test error,
        layer sparsity, plane coordinates, and "entropy1": per_layer, per_neuron, per_class of
        first-order PSP-entropy on the subset), "entropy2_layers", "samples".
    """
    store = experiments._store(store)
    return store.cached("plane", config, "result",
                        lambda: _compute_plane(config, store, device, batch_size, points_per_pass, progress))


def curvature(config, store=None, device="auto", progress=False):
    """Top-k Hessian eigenvalues of the training loss (same subset) of G and 1-S, each on its mask.

    Returns: dict "g", "oneshot" -> list of floats (descending), "samples".
    """
    store = experiments._store(store)

    def compute():
        (g, g_mask, _), (one, one_mask, _) = solutions(config, store, device, progress)
        subset = train_subset(config, device)
        batches = list(subset.batches(500))
        out = {"samples": len(subset)}
        for key, model, mask in (("g", g, g_mask), ("oneshot", one, one_mask)):
            out[key] = hessian.top_eigenvalues(model, F.cross_entropy, batches, k=config.hessian_k, mask=mask,
                                               seed=config.seed)
        return out

    return store.cached("curvature", config, "result", compute)


def at(result, name, a, b=0.0):
    """Value of map `name` of a ``plane`` result at the grid point (a, b) (G: (0, 0), 1-S: (1, 0))."""
    j = int(np.argmin(np.abs(result["a"].numpy() - a)))
    i = int(np.argmin(np.abs(result["b"].numpy() - b)))
    if abs(float(result["a"][j]) - a) > 1e-9 or abs(float(result["b"][i]) - b) > 1e-9:
        raise ValueError(f"({a}, {b}) is not a grid point of this plane")
    return float(result["maps"][name][i, j])


def _compute_plane(config, store, device, batch_size, points_per_pass, progress):
    (g, _, row), (one, _, info) = solutions(config, store, device, progress)
    subset = train_subset(config, device)
    through = landscape.plane_through(g, one, seed=config.seed)
    a, b = config.axes()
    num_classes = experiments._splits(config.setup.data, str(devices.resolve(device))).num_classes
    metrics = [Loss(), Error(), psp.PSPL2(),
               psp.PSPEntropy(1, num_classes, config.eps),
               psp.PSPEntropy(2, num_classes, config.eps, layers=config.entropy2_layers)]
    maps = landscape.evaluate_grid(through, a, b, subset, metrics, batch_size, points_per_pass, progress=progress)
    out = {"a": torch.from_numpy(a), "b": torch.from_numpy(b), "samples": len(subset),
           "maps": {name: torch.from_numpy(maps[name]) for name in MAP_NAMES},
           "entropy2_layers": list(config.entropy2_layers) if config.entropy2_layers is not None else "all"}
    facts = {"g": (g, row["test_error"], row["sparsity"]), "oneshot": (one, info["test_error"], info["sparsity"])}
    for key, (model, test_error, sparsity) in facts.items():
        first = psp.entropy(model, subset.batches(batch_size), 1, num_classes, config.eps)
        out[key] = {"test_error": float(test_error), "sparsity": float(sparsity),
                    "layer_sparsity": pruning.layer_sparsity(model),
                    "coordinates": [float(c) for c in through.coordinates(model)],
                    "entropy1": {"total": first.total, "per_layer": first.per_layer,
                                 "per_neuron": first.per_neuron, "per_class": first.per_class}}
    return out
