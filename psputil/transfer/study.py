"""The transfer study of a book run: every (source setup, target) pair, its sources resolved and probed.

The driver side of ``psputil.transfer.units``: it computes or loads every source
through the cached experiments (``psputil.experiments.runs``), then sweeps the probe
units on the context's executor, handing each unit its source's state and mask.
Shared by the transfer chapter and the conclusions (claim C6).

Sources are paired by seed: for each seed s, the untrained network and the dense run
of seed s, G and 1-S of LOBSTER seed s (``analysis.pair``), and the "reinit" and
"random" controls from that G's mask (control seed 0). Rows that share s share one
LOBSTER run, which the C6 statistics treat as one cluster.
"""

import dataclasses
import functools
from dataclasses import dataclass, field

from psputil import checks, models, pruning
from psputil.data import DataConfig
from psputil.experiments import analysis, runs, setups
from psputil.experiments.units import load_splits
from psputil.scale import sweep
from psputil.transfer import units
from psputil.transfer.probe import FINETUNE, PROBE

# Default target of a source data set: the other grey 28x28 data set (CIFAR-10 has none).
DEFAULT_TARGETS = {"mnist-5k": "fashion-mnist", "mnist": "fashion-mnist", "fashion-mnist": "mnist-5k"}
TRANSFER = "transfer"


@dataclass
class Study:
    """Rows of every probed source, and what was left out and why."""

    rows: list = field(default_factory=list)
    runs: list = field(default_factory=list)  # the ``units.TransferRun`` behind the rows (their run keys)
    skipped_rates: dict = field(default_factory=dict)  # pair label -> milestones some seed never reached
    no_target: list = field(default_factory=list)  # setups without a same-shape target
    missing: list = field(default_factory=list)  # (pair label, FileNotFoundError) of missing data

    @property
    def pairs(self):
        return sorted({f"{r['setup']} -> {r['target']}" for r in self.rows})


def target_config(name, profile="quick"):
    """The target ``DataConfig`` of data set `name` in `profile` (smoke: tiny; quick: CPU minutes)."""
    checks.choice("target data set", name, ("mnist-5k", "mnist", "fashion-mnist", "cifar10"))
    checks.choice("profile", profile, setups.PROFILES)
    if profile == "paper":
        return DataConfig("mnist" if name == "mnist-5k" else name)
    if profile == "smoke":
        return DataConfig(name, valid_fraction=0.01 if name != "mnist-5k" else 0.1, train_size=600, test_size=300)
    return DataConfig(name) if name == "mnist-5k" else DataConfig(name, valid_fraction=0.05, train_size=3000,
                                                                    test_size=2000)


def default_pairs(setup_names, profile="quick"):
    """(source setup name, target data set) for each setup with a default target, and the skipped setups."""
    pairs, skipped = [], []
    for name in setup_names:
        target = DEFAULT_TARGETS.get(setups.setup(name, profile).data.name)
        (pairs.append((name, target)) if target else skipped.append(name))
    return pairs, skipped


def sources(setup, rates, seeds, kinds=units.SOURCE_KINDS):
    """The ``Source``s of one setup, paired by seed (see the module docstring)."""
    kinds = checks.names("kinds", list(kinds), units.SOURCE_KINDS)
    out = []
    for seed in checks.numbers_list("seeds", list(seeds), 0, integers=True):
        common = {"model": setup.model, "data": setup.data}
        if "init" in kinds:
            out.append(units.Source("init", seed=seed, **common))
        if "dense" in kinds:
            out.append(units.Source("dense", origin=setup.dense_run(seed), **common))
        for rate in rates:
            pair = analysis.pair(setup, rate, seed)
            out += [units.Source(kind, origin=pair, **common) for kind in ("G", "1-S") if kind in kinds]
            out += [units.Source(kind, origin=setup.control_run(seed, rate, kind, 0), **common)
                    for kind in ("reinit", "random") if kind in kinds]
    return out


def resolve(ctx, source):
    """The state dict and mask of a source, computed or loaded through the cached experiments."""
    if source.kind == "init":
        model = models.build(source.model, seed=source.seed)
        return model.state_dict(), pruning.full_mask(model)
    if source.kind == "dense":
        state = runs.dense(ctx, [source.origin])[0]["state"]
        return state, pruning.full_mask(runs.ready_model(source.model, state, "cpu"))
    if source.kind == "G":
        checkpoint, _ = runs.level(ctx, source.origin.lobster, source.origin.rate)
        return checkpoint["state"], checkpoint["mask"]
    if source.kind == "1-S":
        result = runs.oneshot_runs(ctx, [analysis.oneshot_run(ctx, source.origin)])[0]
        return result["state"], result["mask"]
    result = runs.controls(ctx, [source.origin])[0]
    return result["state"], result["mask"]


def run_pair(ctx, setup, target, rates, seeds, kinds=units.SOURCE_KINDS, probe=PROBE, finetune=None,
             entropy_samples=1000, order2_max_neurons=4096):
    """Every source of `setup` probed on `target`: (result rows, skipped rates, the ``TransferRun``s of the rows).

    Rows are the ``compute_transfer`` results plus "setup", "seed" (the pairing seed) and, for sources
    built from a LOBSTER run (G, 1-S at G's sparsity, the controls from G's mask), "lobster_seed":
    the claim-C6 statistics cluster the rows that share one run (``analysis.clusters``).
    """
    units.check_pair(setup.model, target.name)
    load_splits(target, ctx.device_name)  # a missing target fails here, before any training
    rates, skipped = analysis.distinct_rates(ctx, setup, rates, list(seeds))
    chosen = sources(setup, rates, seeds, kinds)
    # Compute the upstream runs as sweeps first (in parallel on a pool or Ray), then resolve each source.
    runs.lobster(ctx, [setup.lobster_run(s) for s in seeds])
    runs.controls(ctx, [s.origin for s in chosen if s.kind in ("reinit", "random")])
    runs.oneshot_runs(ctx, [analysis.oneshot_run(ctx, s.origin) for s in chosen if s.kind == "1-S"])
    runs.dense(ctx, [s.origin for s in chosen if s.kind == "dense"])
    work = [units.TransferRun(s, target, probe, 0, entropy_samples, order2_max_neurons, finetune) for s in chosen]
    todo = {run for run in work if not ctx.store.has(TRANSFER, run, "result")}
    resolved = {run: dict(zip(("state", "mask"), resolve(ctx, run.source))) for run in todo}
    sweep.run_or_raise(functools.partial(units.compute_transfer, device=ctx.device_name), list(todo), TRANSFER, ctx,
                       units.resources, what=f"transfer probes {setup.name} -> {target.name}",
                       inputs=lambda run: resolved[run])
    rows = []
    for run, source, result in zip(work, chosen, sweep.results(work, TRANSFER, ctx.store)):
        seed = source.seed if source.kind == "init" else _seed_of(source.origin)
        row = {**result, "setup": setup.name, "seed": seed}
        if source.kind in ("G", "1-S", "reinit", "random"):
            row["lobster_seed"] = seed  # paired by seed: built from LOBSTER run `seed`
        rows.append(row)
    return rows, skipped, work


def study(ctx, setup_names, profile="quick", rates=None, seeds=(0,), pairs=None, finetune_epochs=0,
          entropy_samples=1000, order2_max_neurons=4096):
    """Run (or load) the transfer probes of every pair.

    Args:
        setup_names: source setup names; with ``pairs=None`` each goes to its default target.
        rates: G milestones (percent; None: each setup's milestones).
        seeds: pairing seeds (LOBSTER, dense, 1-S, init).
        pairs: explicit ``[[source setup, target data set], ...]`` instead.
        finetune_epochs: > 0 also fine-tunes the whole masked network that many epochs.

    Returns:
        ``Study``.
    """
    result = Study()
    if pairs is None:
        chosen, result.no_target = default_pairs(setup_names, profile)
    else:
        chosen = [tuple(p) for p in pairs]
    finetune = dataclasses.replace(FINETUNE, epochs=finetune_epochs) if finetune_epochs > 0 else None
    for source_name, target_name in chosen:
        setup = setups.setup(source_name, profile)
        target = target_config(target_name, profile)
        label = f"{setup.name} -> {target_name}"
        try:
            rows, skipped, work = run_pair(ctx, setup, target, setup.milestones if rates is None else rates, seeds,
                                     finetune=finetune, entropy_samples=entropy_samples,
                                     order2_max_neurons=order2_max_neurons)
        except FileNotFoundError as error:
            result.missing.append((label, error))
            continue
        result.rows += rows
        result.runs += work
        if skipped:
            result.skipped_rates[label] = skipped
    return result


def _seed_of(origin):
    """The pairing seed of a source's origin (its LOBSTER or dense seed)."""
    if isinstance(origin, analysis.Pair):
        return origin.lobster.seed
    if hasattr(origin, "lobster"):
        return origin.lobster.seed
    return origin.seed
