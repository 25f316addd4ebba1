"""Rank correlation with a bootstrap confidence interval (for the transfer chapter).

``spearman`` is Spearman's rho: the Pearson correlation of the average ranks (ties
share the mean of the ranks they span), as ``scipy.stats.spearmanr``.
``bootstrap_spearman`` resamples the observations with replacement, optionally
within groups (strata: e.g. one source/target pair each, whose accuracies live on
different scales); the statistic is then the mean over groups of the within-group
rho, and the interval is the percentile interval of the resampled statistic.
"""

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankCorrelation:
    """A rank correlation, its percentile bootstrap interval and what it rests on.

    Attributes:
        rho: Spearman's rho of the data (mean over groups of the within-group rho).
        low, high: bounds of the `level` percentile bootstrap interval (nan if none).
        n: observations; groups: number of groups; level: e.g. 0.95.
        resamples: bootstrap resamples drawn; used: those with a defined rho (a
            resample whose x or y is constant within a group has none).
    """

    rho: float
    low: float
    high: float
    n: int
    groups: int
    level: float
    resamples: int
    used: int

    def excludes_zero(self):
        """+1 if the interval lies above 0, -1 if below, 0 if it contains 0 or is undefined."""
        if math.isnan(self.low) or math.isnan(self.high):
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def rankdata(values):
    """1-based ranks of a 1-D array; tied values get the mean of the ranks they span."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"rankdata takes a 1-D array, got shape {values.shape}")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first index of each run of ties
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x, y):
    """Spearman's rho of two equally long 1-D sequences (nan when either is constant)."""
    x, y = _pair(x, y)
    rx, ry = rankdata(x) - (len(x) + 1) / 2.0, rankdata(y) - (len(y) + 1) / 2.0
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else math.nan


def bootstrap_spearman(x, y, groups=None, resamples=2000, level=0.95, seed=0):
    """Spearman's rho with a percentile bootstrap interval, optionally stratified by group.

    Args:
        x, y: 1-D sequences of equal length (at least 3 observations per group).
        groups: None (one group) or a label per observation; observations are resampled
            within their group and the statistic is the mean of the within-group rhos.
        resamples: number of bootstrap resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``RankCorrelation``.
    """
    x, y = _pair(x, y)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95; got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    labels = np.zeros(len(x), dtype=int) if groups is None else np.asarray(groups)
    if labels.shape != x.shape:
        raise ValueError(f"groups must give one label per observation ({len(x)}), got {labels.shape}")
    members = [np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())]
    small = [len(m) for m in members if len(m) < 3]
    if small:
        raise ValueError(f"every group needs at least 3 observations for a rank correlation; got group sizes {small}")
    rho = float(np.mean([spearman(x[m], y[m]) for m in members]))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        picks = [m[rng.integers(0, len(m), len(m))] for m in members]
        stats[r] = np.mean([spearman(x[p], y[p]) for p in picks])
    stats = stats[~np.isnan(stats)]
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(stats, [tail, 100 - tail]) if len(stats) else (math.nan, math.nan))
    return RankCorrelation(rho, float(low), float(high), len(x), len(members), level, resamples, len(stats))


def _pair(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D sequences of equal length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"a rank correlation needs at least 2 observations, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite numbers (no nan or inf)")
    return x, y
