"""Section 5.1 of one setup gathered from the cached runs: Fig. 1's curves and the inputs of claims C1 and C2.

``pruning_curves`` computes (or loads) every LOBSTER run of the given seeds, the dense
run of each seed, and the three retraining controls from each LOBSTER run's own masks
at the milestones every run reached, then returns them in the shapes
``book.figures.error_vs_compression`` and ``claims.c1``/``c2`` take.
"""

from psputil import checks
from psputil.experiments import analysis, claims, runs
from psputil.experiments.units import load_splits
from psputil.pruning import oneshot


def pruning_curves(ctx, setup, seeds, control_seeds, rates=None):
    """Fig. 1 and C1/C2 of one setup.

    Args:
        ctx: the ``Context``.
        setup: a ``setups.Setup``.
        seeds: LOBSTER seeds (each with the dense run of the same seed).
        control_seeds: seeds of every control kind at every milestone of every LOBSTER run.
        rates: milestones in percent (None: ``setup.milestones``).

    Returns:
        dict: "curve" (figure input: "G" seed -> levels, "controls" kind -> [{"sparsity", "values"}],
        "dense" [test errors]), "claims" (the C1/C2 input of ``claims.from_control_summaries``),
        "milestones" (rates every run reached, on distinct levels), "skipped" (the other rates),
        "summaries" (seed -> LOBSTER summary), "configs" (every stage config drawn, for captions),
        "test_size" (images in the test split), "seconds" (summed compute time of the runs).
    """
    seeds = checks.numbers_list("seeds", list(seeds), 0, integers=True)
    control_seeds = checks.numbers_list("control_seeds", list(control_seeds), 0, integers=True)
    lobster_runs = [setup.lobster_run(s) for s in seeds]
    summaries = dict(zip(seeds, runs.lobster(ctx, lobster_runs)))
    reached, skipped = analysis.distinct_rates(ctx, setup, setup.milestones if rates is None else rates, seeds)
    dense_runs = [setup.dense_run(s) for s in seeds]
    dense = runs.dense(ctx, dense_runs)
    control_runs = [setup.control_run(s, rate, kind, c) for s in seeds for rate in reached
                    for kind in oneshot.CONTROL_KINDS for c in control_seeds]
    results = dict(zip(control_runs, runs.controls(ctx, control_runs)))
    by_seed = {s: runs.control_summary(ctx, setup, s, reached, control_seeds) for s in seeds}
    test_size = _test_size(setup)
    curve = {
        "G": {s: [{"sparsity": row["sparsity"], "test_error": row["best"]["test_error"]} for row in summary["levels"]]
              for s, summary in summaries.items()},
        "controls": {kind: [{"sparsity": _mean([by_seed[s][rate]["sparsity"] for s in seeds]),
                             "values": [v for s in seeds for v in by_seed[s][rate][kind]["values"]]}
                            for rate in reached] for kind in oneshot.CONTROL_KINDS},
        "dense": [d["test_error"] for d in dense],
    }
    histories = [h for summary in summaries.values() for h in summary["history"]]
    histories += [h for d in dense for h in d["history"]] + [h for r in results.values() for h in r["history"]]
    return {"curve": curve, "claims": claims.from_control_summaries(by_seed, test_size), "milestones": reached,
            "skipped": skipped, "summaries": summaries, "configs": lobster_runs + dense_runs + control_runs,
            "test_size": test_size, "seconds": sum(h.get("seconds", 0.0) for h in histories)}


def pruning_curves_of(ctx, setups, seeds, control_seeds, rates=None):
    """``pruning_curves`` of several setups, {name: result} in the order of `setups` ({name: Setup}).

    The LOBSTER runs of every setup go to the executor as one sweep, then the dense runs as
    another, so a process pool keeps all its workers busy across setups (per setup there are
    only as many LOBSTER runs as seeds). Results are the same as setup by setup.
    """
    seeds = checks.numbers_list("seeds", list(seeds), 0, integers=True)
    checks.numbers_list("control_seeds", list(control_seeds), 0, integers=True)  # before hours of LOBSTER
    if rates is not None:
        checks.numbers_list("rates", list(rates), 0, 100)
    setups = dict(setups)
    runs.lobster(ctx, [s.lobster_run(seed) for s in setups.values() for seed in seeds])
    runs.dense(ctx, [s.dense_run(seed) for s in setups.values() for seed in seeds])
    return {name: pruning_curves(ctx, s, seeds, control_seeds, rates) for name, s in setups.items()}


def layer_sparsity_at(summaries, rate):
    """Per-layer sparsity of G at the first level reaching `rate`, per LOBSTER seed: {seed: (sparsity, layers)}."""
    out = {}
    for seed, summary in summaries.items():
        row = next((level for level in summary["levels"] if level["sparsity"] >= rate), None)
        if row is not None:
            out[seed] = (row["sparsity"], row["layer_sparsity"])
    return out


def _test_size(setup):
    return len(load_splits(setup.data).test)


def _mean(values):
    return sum(values) / len(values) if values else float("nan")
