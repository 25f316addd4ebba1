"""G and 1-S checked as minima and measured (Sections 5.2, 5.3): the facts of one pair, cached in the run store.

For each solution of an ``analysis.Pair`` (G and 1-S), on the seeded training subset: the
training loss and error, the norm of the gradient of the mean training loss on the
surviving weights (a minimum has ~0), the top-k eigenvalues of the masked Hessian with
each eigenpair's residual ``||H v - lambda v||`` (how far a Ritz pair is from an exact
one), the PSP L2 norm, first- and second-order PSP-entropy over all neurons and over
live neurons (not always off), and the always-off / always-on neurons per layer; on the
test split its error. Per pair, the training loss along u = 1-S - G (a 1-D profile
through both solutions). Every part records its wall time in seconds (the book's captions
show it). ``claim_pairs`` gives these facts for several seeds in the shape
``claims.c3``/``c4``/``c5`` take; ``control_activity`` gives the dead-neuron fractions of
the retraining controls.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch.nn.functional as F

from psputil import checks, hessian, landscape, pruning, psp, train
from psputil.experiments import analysis, runs
from psputil.experiments.units import load_splits
from psputil.metrics import Error, Loss
from psputil.pruning import oneshot

FACTS = "facts"  # the stage name in the run store
HESSIAN_TOL = 1e-4  # ARPACK's relative stopping rule for the eigenpairs (see hessian.largest_eigenvalues)
CLAIM_KEYS = ("train_loss", "top_eigenvalue", "test_error", "psp_l2", "entropy1", "entropy2", "entropy1_live",
              "entropy2_live", "test_size")
ROLES = ("G", "1-S")


@dataclass(frozen=True)
class FactsConfig:
    """What the facts of one pair depend on (the run key of stage ``FACTS``)."""

    STAGE: ClassVar[str] = "facts"  # its folder in the run store
    VERSION: ClassVar[int] = 1

    pair: analysis.Pair
    train_samples: Optional[int] = 1000  # seeded subset of the training split (None: all)
    seed: int = 0  # training subset and Lanczos start vector
    eps: float = 0.0  # probability clamp of the entropies
    hessian_k: int = 5
    entropy2_layers: Optional[tuple] = None  # relu paths of second-order entropy (None: all)
    profile_range: tuple = (-0.5, 1.5)  # the loss profile along u, a from..to; must hold 0 and 1 on the grid
    profile_points: int = 21

    def __post_init__(self):
        if not isinstance(self.pair, analysis.Pair):
            raise ValueError(f"pair must be an analysis.Pair (analysis.pair(setup, rate, seed)), got {self.pair!r}")
        checks.integer("train_samples", self.train_samples, 1, optional=True)
        checks.integer("seed", self.seed, 0)
        checks.number("eps", self.eps, 0, 0.5, high_open=True)
        checks.integer("hessian_k", self.hessian_k, 1)
        checks.names("entropy2_layers", self.entropy2_layers, optional=True)
        a = self.profile()
        if not all(np.isclose(a, w, atol=1e-9).any() for w in (0.0, 1.0)):
            raise ValueError(f"profile_range {self.profile_range} with {self.profile_points} points misses G (a = 0) "
                             "or 1-S (a = 1); choose a range and a count whose grid holds both, e.g. (-0.5, 1.5), 21")

    @classmethod
    def from_plane(cls, config, **changes):
        """The facts config sharing a ``PlaneConfig``'s pair, subset, seed, eps and second-order layers."""
        fields = dict(pair=config.pair, train_samples=config.train_samples, seed=config.seed, eps=config.eps,
                      entropy2_layers=config.entropy2_layers)
        return cls(**{**fields, **changes})

    def profile(self):
        """The a values of the loss profile, float64 numpy."""
        if not isinstance(self.profile_range, tuple) or len(self.profile_range) != 2:
            raise ValueError(f"profile_range must be (low, high), got {self.profile_range!r}")
        checks.numbers_list("profile_range", list(self.profile_range))
        checks.integer("profile_points", self.profile_points, 2)
        return np.linspace(*self.profile_range, self.profile_points)


def facts(ctx, config, batch_size=500):
    """The facts of G and 1-S of one pair, computed once and then loaded from the store.

    Args:
        ctx: a ``scale.context.Context``.
        config: a ``FactsConfig``.
        batch_size: samples per pass (speed and memory only; not part of the key).

    Returns:
        dict: "G", "1-S" (``solution_facts`` of each), "profile" (``loss_profile``), "sparsity"
        (G's % pruned; 1-S is pruned to the same), "samples" (training subset), "test_size",
        "entropy2_layers" (list, or "all"), "seconds" (wall time of the whole computation, the
        upstream LOBSTER, dense and 1-S runs excluded).
    """
    if not isinstance(config, FactsConfig):
        raise ValueError(f"config must be a FactsConfig, got {type(config).__name__}")
    return ctx.store.cached(FACTS, config, "result", lambda: _compute(ctx, config, batch_size))


def claim_pairs(ctx, setup, rate, seeds, batch_size=500, **options):
    """The facts of the pairs of several LOBSTER seeds at `rate`, in the shape ``claims.c3/c4/c5`` take.

    Args:
        setup: an ``experiments.setups.Setup``.
        rate: compression rate (percent); G is the first level reaching it.
        seeds: LOBSTER seeds (each paired with the 1-S of the same seed).
        options: other ``FactsConfig`` fields (train_samples, seed, eps, hessian_k, entropy2_layers, ...).

    Returns:
        {seed: {"sparsity": G's % pruned, "G": facts, "1-S": facts}} with facts holding only
        ``CLAIM_KEYS`` (train_loss, top_eigenvalue, test_error, psp_l2, entropy1, entropy2,
        entropy1_live, entropy2_live, test_size); pass ``test_size`` on to ``claims.c3``.

    Raises:
        ValueError: a seed whose LOBSTER run never reached `rate` (see ``analysis.reached``).
    """
    seeds = checks.numbers_list("seeds", list(seeds), 0, integers=True)
    out = {}
    for seed in seeds:
        result = facts(ctx, FactsConfig(analysis.pair(setup, rate, seed), **options), batch_size)
        out[seed] = {"sparsity": result["sparsity"],
                     **{role: {k: result[role][k] for k in CLAIM_KEYS} for role in ROLES}}
    return out


def solution_facts(model, mask, train_split, test_split, num_classes, k=5, seed=0, eps=0.0, entropy2_layers=None,
                   batch_size=500):
    """Facts of one solution: scores, gradient norm, Hessian eigenpairs, PSP L2 norm, entropies, dead neurons.

    Args:
        model: the network (left unchanged; evaluated in eval mode).
        mask: its mask (dict name -> bool tensor, True = surviving); gradient and Hessian are
            restricted to it.
        train_split: the ``TensorSplit`` (on the model's device) every training-side fact uses.
        test_split: the test ``TensorSplit`` (on the model's device).
        num_classes: classes of the data set.
        k, seed: eigenpairs and the Lanczos start vector's seed.
        eps, entropy2_layers: the entropies' clamp and the relu paths of second order (None: all).
        batch_size: samples per pass.

    Returns:
        dict: "sparsity" (%), "layer_sparsity"; "test_error" (%), "test_loss", "test_size";
        "train_loss" (nats), "train_error" (%), "train_samples"; "grad_norm" (of the mean
        training loss, surviving weights); "eigenvalues" (k, descending), "top_eigenvalue",
        "residuals" (``||H v - lambda v||``), "relative_residuals" (divided by |lambda|), "hvps";
        "psp_l2", "entropy1", "entropy2", "entropy1_live", "entropy2_live" (bits; live = over
        neurons that are not always off, pairs of live neurons for second order); "per_layer"
        ({"psp_l2", "entropy1", ...} -> layer -> value); "entropy1_per_neuron" (layer -> (N,)
        tensor, all neurons); "dead_neurons" (layer -> {"off", "on"} fractions, what
        ``book.figures.dead_neurons`` draws); "activity" (``psp.ActivityResult.to_dict()``);
        "seconds" ({"scores", "gradient", "hessian", "psp"} wall times).
    """
    seconds = {}
    out = {"sparsity": pruning.sparsity(model), "layer_sparsity": pruning.layer_sparsity(model)}
    with _timed(seconds, "scores"):
        out["test_loss"], out["test_error"] = train.evaluate(model, test_split, batch_size)
        out["train_loss"], out["train_error"] = train.evaluate(model, train_split, batch_size)
    out["test_size"], out["train_samples"] = len(test_split), len(train_split)
    batches = list(train_split.batches(batch_size))
    with _timed(seconds, "gradient"):
        out["grad_norm"] = hessian.gradient_norm(model, F.cross_entropy, batches, mask=mask)
    with _timed(seconds, "hessian"):
        pairs = hessian.top_eigenpairs(model, F.cross_entropy, batches, k=k, mask=mask, seed=seed, tol=HESSIAN_TOL)
    out.update(eigenvalues=list(pairs.values), top_eigenvalue=pairs.values[0], residuals=list(pairs.residuals),
               relative_residuals=[r / max(abs(v), 1e-30) for r, v in zip(pairs.residuals, pairs.values)],
               hvps=int(pairs.hvps))
    with _timed(seconds, "psp"):
        out.update(psp_measures(model, batches, num_classes, eps, entropy2_layers))
    out["seconds"] = seconds
    return out


def psp_measures(model, batches, num_classes, eps=0.0, entropy2_layers=None):
    """PSP L2 norm, entropies (all and live neurons) and dead/always-on neurons of one model, in one pass.

    Returns:
        dict: "psp_l2", "entropy1", "entropy2", "entropy1_live", "entropy2_live" (totals), "per_layer",
        "entropy1_per_neuron", "dead_neurons", "activity" (see ``solution_facts``).
    """
    metrics = [psp.PSPL2(), psp.Activity()]
    for neurons in ("all", "live"):
        metrics += [psp.PSPEntropy(1, num_classes, eps, neurons=neurons),
                    psp.PSPEntropy(2, num_classes, eps, layers=entropy2_layers, neurons=neurons)]
    found = psp.measure(model, batches, metrics)
    names = {"psp_l2": "psp_l2", "entropy1": "psp_entropy1", "entropy2": "psp_entropy2",
             "entropy1_live": "psp_entropy1_live", "entropy2_live": "psp_entropy2_live"}
    active = found["dead_fraction"]
    return {**{key: float(found[name].total) for key, name in names.items()},
            "per_layer": {key: dict(found[name].per_layer) for key, name in names.items()},
            "entropy1_per_neuron": {n: h.cpu() for n, h in found["psp_entropy1"].per_neuron.items()},
            "dead_neurons": active.fractions(), "activity": active.to_dict()}


def loss_profile(model_g, model_1s, split, a_values, batch_size=500, points_per_pass=4):
    """Training loss and error along u = 1-S - G (b = 0): G at a = 0, 1-S at a = 1.

    Returns:
        dict: "a" (list), "loss" (nats), "error" (%), lists in the order of `a_values`; "seconds".
    """
    start = time.perf_counter()
    line = landscape.plane_through(model_g, model_1s, seed=0)  # b = 0 only: v plays no part
    maps = landscape.evaluate_grid(line, a_values, [0.0], split, [Loss(), Error()], batch_size, points_per_pass,
                                   progress=False)
    return {"a": [float(a) for a in a_values], "loss": maps["loss"][0].tolist(), "error": maps["error"][0].tolist(),
            "seconds": time.perf_counter() - start}


def dead_neurons(architecture, states, batches, device="cpu"):
    """Always-off / always-on fractions per layer of networks given by their states.

    Args:
        architecture: model name of ``psputil.models`` (e.g. the controls' ``run.lobster.model``).
        states: state dicts (e.g. the "state" of ``runs.controls`` results).
        batches: a re-iterable collection of (inputs, targets) (read once per network).

    Returns:
        list, per state, of layer -> {"off", "on"} fractions (0-1).
    """
    batches = list(batches)
    return [psp.activity(runs.ready_model(architecture, state, device), batches).fractions() for state in states]


def control_activity(ctx, setup, lobster_seed, rate, seeds, train_samples=1000, seed=0, batch_size=500):
    """Dead and always-on neurons of the retraining controls of one LOBSTER run at one milestone.

    Measured on the training subset of ``FactsConfig(train_samples, seed)``, as G's and 1-S's;
    the controls are computed first where missing (``runs.controls``).

    Returns:
        dict kind ("lottery", "reinit", "random") -> {"runs": [layer -> {"off", "on"} per control
        seed], "mean": layer -> {"off", "on"} over the seeds, "seeds", "seconds"}.
    """
    seeds = checks.numbers_list("seeds", list(seeds), 0, integers=True)
    splits = load_splits(setup.data, ctx.device_name)
    batches = list(splits.train.subset(train_samples, seed).batches(batch_size))
    out = {}
    for kind in oneshot.CONTROL_KINDS:
        results = runs.controls(ctx, [setup.control_run(lobster_seed, rate, kind, s) for s in seeds])
        start = time.perf_counter()
        fractions = dead_neurons(setup.model, [r["state"] for r in results], batches, ctx.device)
        layers = list(fractions[0]) if fractions else []
        mean = {n: {side: float(np.mean([f[n][side] for f in fractions])) for side in ("off", "on")} for n in layers}
        out[kind] = {"runs": fractions, "mean": mean, "seeds": list(seeds), "seconds": time.perf_counter() - start}
    return out


def _compute(ctx, config, batch_size):
    (g, g_mask, row), (one, one_mask, _) = analysis.solutions(ctx, config.pair)
    start = time.perf_counter()  # the computation itself, not the upstream runs it may have had to train
    splits = load_splits(config.pair.lobster.data, ctx.device_name)
    subset = splits.train.subset(config.train_samples, config.seed)
    out = {"sparsity": float(row["sparsity"]), "samples": len(subset), "test_size": len(splits.test),
           "entropy2_layers": list(config.entropy2_layers) if config.entropy2_layers is not None else "all"}
    for role, model, mask in (("G", g, g_mask), ("1-S", one, one_mask)):
        out[role] = solution_facts(model, mask, subset, splits.test, splits.num_classes, config.hessian_k, config.seed,
                                   config.eps, config.entropy2_layers, batch_size)
    out["profile"] = loss_profile(g, one, subset, config.profile(), batch_size)
    out["seconds"] = time.perf_counter() - start
    return out


@contextmanager
def _timed(seconds, name):
    """Within the block, time it: ``seconds[name]`` = wall time in seconds."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = time.perf_counter() - start
