"""The transfer chapter's analysis: clustered rank correlations, G vs 1-S per milestone, claim C6, tables.

Works on the result rows of ``psputil.transfer.units.compute_transfer`` (plain dicts with "setup",
"target", "kind", "rate", "seed", "probe_accuracy" (%), the entropies (bits) and, for sparse
sources other than G, "lobster_seed"; optional "test_size", the target's test images).

The conjecture (Sec. 6): gradually pruned networks extract features less tied to specific
classes (higher second-order PSP-entropy), which should make them better for transfer.
C6 needs both parts: (1) over the trained sources, the target probe accuracy rises with
the source's second-order entropy (Spearman rho within each pair, mean over pairs, 95 %
cluster-bootstrap interval above ``Margins.c6_rho``); (2) G's probe accuracy above 1-S's
at each (pair, milestone), paired by seed (``stats.paired`` with the test-set term).

Rows are not independent: rows that share a seed (init and batch order) or a LOBSTER run
(G, and the 1-S and controls built from its sparsity or mask) form one cluster
(``clusters``), and the bootstrap resamples whole clusters, within each source setup.
"""

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

from psputil.experiments import claims, stats

TRAINED_KINDS = ("dense", "G", "1-S", "reinit", "random")  # the sources the correlation ranks
SPARSE_KINDS = ("G", "1-S", "lottery", "reinit", "random")  # built from a LOBSTER run
ENTROPIES = ("entropy2_source", "entropy1_source", "entropy2_target", "entropy1_target")
CLAIM = claims.CLAIMS["C6"]


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho (mean over pairs of the within-pair rho) with its cluster-bootstrap interval.

    ``low``/``high`` are nan when some setup has fewer than two clusters (no interval);
    ``used`` counts the resamples with a defined rho.
    """

    rho: float
    low: float
    high: float
    n: int  # rows
    groups: int  # source/target pairs
    clusters: int  # independent replicates resampled
    level: float
    resamples: int
    used: int

    def excludes_zero(self):
        """+1 if the interval lies above 0, -1 if below, 0 if it contains 0 or is undefined."""
        if math.isnan(self.low) or math.isnan(self.high):
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def pair_label(row):
    """"lenet5-fashion -> mnist-5k" for a result row."""
    return f"{row['setup']} -> {row['target']}"


def clusters(rows):
    """A cluster number per row: rows linked by a shared seed or LOBSTER run (transitively) share one.

    A sparse row other than G without "lobster_seed" is assumed to share one LOBSTER run with
    every such row of its setup (the conservative choice).
    """
    parent = {}

    def find(key):
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for row in rows:
        own = (row["setup"], "seed", row["seed"])
        find(own)
        if row["kind"] in SPARSE_KINDS and row["kind"] != "G":
            lobster = row.get("lobster_seed")
            run = (row["setup"], "seed", lobster) if lobster is not None else (row["setup"], "lobster", None)
            parent[find(run)] = find(own)
    roots = [find((r["setup"], "seed", r["seed"])) for r in rows]
    numbers = {root: i for i, root in enumerate(dict.fromkeys(roots))}
    return [numbers[root] for root in roots]


def resample_clusters(rows, statistic, resamples=2000, seed=0):
    """Bootstrap distribution of ``statistic(weights)``, whole clusters resampled within each setup.

    Uses ``scipy.stats.bootstrap`` (vectorized) with one sample of cluster numbers per setup,
    resampled independently. `statistic` gets a (resamples, rows) array: how often each row
    was drawn in each resample (every row of a cluster as often as its cluster), and returns
    one value per resample. Returns that array, or None when a setup has fewer than two
    clusters (nothing to resample).
    """
    labels = np.array(clusters(rows))
    membership = (labels[None, :] == np.arange(labels.max() + 1)[:, None]).astype(float)  # (clusters, rows)
    by_setup = {}
    for label in range(len(membership)):
        by_setup.setdefault(rows[int(np.argmax(membership[label]))]["setup"], []).append(label)
    if not by_setup or min(len(v) for v in by_setup.values()) < 2:
        return None

    def on_clusters(*samples, axis=-1):
        samples = [np.atleast_2d(np.moveaxis(sample, axis, -1)) for sample in samples]
        counts = np.zeros((len(samples[0]), len(membership)))
        for sample in samples:
            np.add.at(counts, (np.arange(len(sample))[:, None], sample.astype(int)), 1.0)
        return statistic(counts @ membership)

    result = scipy.stats.bootstrap([np.array(v) for v in by_setup.values()], on_clusters, n_resamples=resamples,
                                   vectorized=True, paired=False, method="percentile",
                                   rng=np.random.default_rng(seed))
    return np.asarray(result.bootstrap_distribution, dtype=float).reshape(-1)


def correlation(rows, x="entropy2_source", y="probe_accuracy", kinds=TRAINED_KINDS, resamples=2000, seed=0,
                level=stats.LEVEL):
    """Spearman rho of `x` vs `y` over the rows of `kinds`: mean over pairs, clustered bootstrap interval.

    Pairs with fewer than 3 usable rows are left out. Returns a ``RankCorrelation`` or None.
    """
    usable = [r for r in rows if r["kind"] in kinds and _finite(r.get(x)) and _finite(r.get(y))]
    counts = {}
    for r in usable:
        counts[pair_label(r)] = counts.get(pair_label(r), 0) + 1
    usable = [r for r in usable if counts[pair_label(r)] >= 3]
    if not usable:
        return None
    xs, ys = np.array([r[x] for r in usable], float), np.array([r[y] for r in usable], float)
    pair_of = np.unique([pair_label(r) for r in usable], return_inverse=True)[1]
    pairs = [np.flatnonzero(pair_of == p) for p in range(pair_of.max() + 1)]

    def mean_rho(weights):
        rhos = np.stack([_spearman(xs[i], ys[i], weights[:, i]) for i in pairs], axis=1)
        with np.errstate(all="ignore"):
            return np.where(np.isfinite(rhos).any(1), np.nanmean(np.where(np.isfinite(rhos), rhos, np.nan), 1), np.nan)

    draws = resample_clusters(usable, mean_rho, resamples, seed)
    low = high = math.nan
    used = 0
    if draws is not None:
        finite = draws[np.isfinite(draws)]
        used = len(finite)
        if used:
            low, high = (float(v) for v in np.percentile(finite, [50 * (1 - level), 50 * (1 + level)]))
    return RankCorrelation(float(mean_rho(np.ones((1, len(usable))))[0]), low, high, len(usable), len(pairs),
                           len(set(clusters(usable))), level, resamples, used)


def g_minus_oneshot(rows, y="probe_accuracy"):
    """Mean over (pair, milestone) of mean G minus mean 1-S `y`: (difference, list of per-milestone differences)."""
    cells = _cells(rows, y)
    diffs = [_mean(c["G"]) - _mean(c["1-S"]) for c in cells.values()]
    return (float(np.mean(diffs)) if diffs else math.nan), diffs


def g_vs_oneshot(rows, y="probe_accuracy", test_size=None, margins=claims.Margins()):
    """One verdict per (pair, milestone): G's `y` (accuracy, %) above 1-S's, paired by seed."""
    out = []
    for (pair, rate), cell in _cells(rows, y).items():
        size = cell["test_size"] or test_size
        se = stats.difference_se(100 - _mean(cell["G"]), 100 - _mean(cell["1-S"]), size) if size else 0.0
        est = stats.paired(cell["G"], cell["1-S"], f"G − 1-S {_what(y)}", "pt", se)
        state, reason = stats.above(est, margins.c6_accuracy)
        out.append(stats.Verdict(f"C6 · {pair} · {rate:g} %", f"G transfers better than 1-S at {rate:g} %", state,
                                 reason, "", ours=est, n={"G": len(cell["G"]), "1-S": len(cell["1-S"])},
                                 test_size=size, per_seed={"G": cell["G"], "1-S": cell["1-S"]}))
    return tuple(out)


def conjecture(rows, resamples=2000, seed=0, accuracy="probe_accuracy", test_size=None, margins=claims.Margins()):
    """The computed verdict on the conjecture (claim C6) and the numbers behind it.

    Returns:
        dict: "verdict" (``stats.Verdict``), "statement" (plain text from the numbers),
        "correlation" (``RankCorrelation`` of the second-order source entropy or None),
        "correlations" (entropy name -> ``RankCorrelation`` or None), "g_minus_1s" (mean
        accuracy difference, points), "g_minus_1s_cells", "n_pairs", "seeds".
    """
    correlations = {e: correlation(rows, e, accuracy, resamples=resamples, seed=seed) for e in ENTROPIES}
    main = correlations["entropy2_source"]
    est = None
    if main is not None:
        bounds = (None, None) if math.isnan(main.low) else (main.low, main.high)
        how = (f"bootstrap over {main.clusters} clusters (seeds / LOBSTER runs) within setups, "
               f"{main.used}/{main.resamples} resamples defined" if bounds[0] is not None
               else "no interval: a setup has a single cluster (one seed / LOBSTER run)")
        est = stats.Estimate("Spearman rho(H2 source, accuracy), mean over pairs", "rho", main.rho, *bounds,
                             main.clusters, how)
    rho_state, rho_reason = stats.above(est, margins.c6_rho)
    rho_leaf = stats.Verdict("C6 · correlation", "accuracy rises with second-order entropy", rho_state, rho_reason,
                             "", ours=est, n={"rows": main.n if main else 0})
    cells = g_vs_oneshot(rows, accuracy, test_size, margins)
    state, reason = stats.combine(cells, "each") if cells else ("not tested", "no milestone with both G and 1-S")
    g_node = stats.Verdict("C6 · G vs 1-S", "G transfers better than 1-S", state, reason, "", parts=cells,
                           n=stats.smallest_n(cells))
    parts = (rho_leaf, g_node)
    state, reason = stats.combine(parts, "all")
    test = (f"rho above {margins.c6_rho:g} (95 % cluster-bootstrap interval) and, at every (pair, milestone), "
            f"G − 1-S {_what(accuracy)} above {margins.c6_accuracy:g} pt (t over seeds + test-set term)")
    verdict = stats.Verdict("C6", CLAIM, state, reason, test, n=stats.smallest_n(parts), parts=parts,
                            test_size=min([c.test_size for c in cells if c.test_size], default=None))
    diff, diffs = g_minus_oneshot(rows, accuracy)
    statement = f"C6 is {state} in our runs ({reason})."
    if est is not None:
        statement += f" {est.text()}."
    statement += "".join(f" {c.id}: {c.ours.text()} ({c.state})." for c in cells if c.ours is not None)
    return {"verdict": verdict, "statement": statement, "correlation": main, "correlations": correlations,
            "g_minus_1s": diff, "g_minus_1s_cells": diffs, "n_pairs": len({pair_label(r) for r in rows}),
            "seeds": sorted({r["seed"] for r in rows})}


def claim_row(rows, profile=None, resamples=2000, seed=0, test_size=None, margins=claims.Margins()):
    """Claim C6 as a ``stats.Verdict`` (the conclusions table renders it like C1-C5).

    `profile` is accepted for the chapter's existing call and not used (the provenance caption says it).
    """
    return conjecture(rows, resamples, seed, test_size=test_size, margins=margins)["verdict"]


def summary(rows, y="probe_accuracy"):
    """Rows averaged over seeds: one dict per (pair, kind, rate) with means, std of `y` (nan for n = 1) and n."""
    groups = {}
    for r in rows:
        groups.setdefault((pair_label(r), r["kind"], r["rate"]), []).append(r)
    out = []
    for (pair, kind, rate), members in groups.items():
        values = [m[y] for m in members]
        entry = {"pair": pair, "kind": kind, "rate": rate, "n": len(members), y: _mean(values),
                 f"{y}_std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan}
        for key in ("sparsity", "finetune_accuracy", *ENTROPIES):
            entry[key] = _mean([m.get(key) for m in members])
        out.append(entry)
    return out


def _cells(rows, y):
    cells = {}
    for r in rows:
        if r["kind"] in ("G", "1-S") and _finite(r.get(y)) and r.get("rate") is not None:
            cell = cells.setdefault((pair_label(r), float(r["rate"])), {"G": {}, "1-S": {}, "test_size": None})
            cell[r["kind"]].setdefault(r["seed"], []).append(float(r[y]))
            cell["test_size"] = r.get("test_size") or cell["test_size"]
    return {k: c for k, c in cells.items() if c["G"] and c["1-S"]}


def _spearman(x, y, weights):
    """Spearman's rho of (x, y) for each row of `weights` (how often each point is counted).

    A point counted w times takes w consecutive ranks; tied values share the mean of the
    ranks they span (groups from ``scipy.stats.rankdata(method="dense")``), so with unit
    weights this is ``scipy.stats.spearmanr``. nan where fewer than 3 points or a constant side.
    """
    ranks = []
    for values in (x, y):
        group = scipy.stats.rankdata(values, method="dense").astype(int) - 1
        per_group = weights @ np.eye(group.max() + 1)[group]  # (resamples, groups) counted points
        before = np.cumsum(per_group, axis=1) - per_group
        ranks.append((before + (per_group + 1) / 2)[:, group])
    total = weights.sum(1, keepdims=True)
    centred = [r - (weights * r).sum(1, keepdims=True) / total for r in ranks]
    cov = (weights * centred[0] * centred[1]).sum(1)
    var = [(weights * c * c).sum(1) for c in centred]
    with np.errstate(all="ignore"):
        rho = cov / np.sqrt(var[0] * var[1])
    return np.where((total[:, 0] >= 3) & (var[0] > 1e-12) & (var[1] > 1e-12), rho, np.nan)


def _what(accuracy):
    return "linear-probe accuracy" if accuracy == "probe_accuracy" else accuracy.replace("_", " ")


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values):
    if hasattr(values, "values"):
        values = [v for vs in values.values() for v in vs]
    values = [v for v in values if _finite(v)]
    return float(np.mean(values)) if values else math.nan
