"""Intervals over seeds, the test set's own sampling error, the decision rule and the ``Verdict`` type.

An ``Estimate`` is a paired difference (or ratio) over seeds with a 95 % interval that
adds two independent sources of noise in quadrature:

* seed to seed: Student's t over the per-seed paired differences (t, not a bootstrap:
  with 2-10 seeds a percentile bootstrap interval is too narrow; with 2 it is [min, max]);
* the test set: every network is scored on the same m test images, a draw that averaging
  over seeds cannot remove. For a difference of two error rates p_a, p_b on the same
  images the variance is (p_ab + p_ba - (p_a - p_b)^2) / m, p_ab and p_ba the shares of
  images exactly one network gets wrong; we keep no per-image predictions, and
  p_ab + p_ba <= p_a + p_b, so we use the upper bound (p_a + p_b - (p_a - p_b)^2) / m.

The two half widths (t quantile times the seed standard error, z quantile times the
test-set one) are added in quadrature. With one seed there is no seed term: an error
difference keeps the test-set term alone (said in ``Estimate.method``), any other quantity
has no interval and is inconclusive.

The decision rule (``above``, ``below``, ``within``): supported when the whole interval
lies on the claimed side of the margin, not supported when it lies wholly on the other
side, inconclusive when it contains the margin; not tested when there is no estimate.
"""

import math
import numbers
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import scipy.stats

STATES = ("supported", "not supported", "inconclusive", "not tested")
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """Our value: mean of per-seed paired differences (unit "pt") or geometric mean of ratios ("ratio")."""

    what: str  # "G − lottery test error"
    unit: str  # "pt" (percentage points), "ratio" (G / 1-S) or "rho" (rank correlation)
    mean: float
    low: Optional[float]  # 95 % interval; None when there is none (n = 1, no test-set term)
    high: Optional[float]
    n: int  # independent units the interval rests on (LOBSTER seeds, seed pairs, clusters)
    method: str  # how the interval was formed

    def text(self):
        """"G − lottery test error = +0.40 pt, 95 % CI [-0.21 pt, +1.01 pt], n = 3" or "..., n = 1 (no interval)"."""
        head = f"{self.what} = {number(self.mean, self.unit)}"
        if self.low is None:
            return f"{head}, n = {self.n} (no interval)"
        return f"{head}, 95 % CI [{number(self.low, self.unit)}, {number(self.high, self.unit)}], n = {self.n}"


@dataclass(frozen=True)
class Regime:
    """The compression tested (G's sparsity, % pruned, mean over seeds) against the paper's."""

    ours: Optional[float]
    paper: Optional[float]
    where: str  # where the paper gives its rate ("" when it gives none)
    reached: Optional[bool]  # None: the paper names no rate for this setup
    rule: str  # the slack applied, in words
    key: str = ""  # the ``paper`` value giving the paper's rate ("" when none)

    def text(self):
        ours = "not computed" if self.ours is None else f"{self.ours:.2f} % pruned"
        if self.paper is None:
            return f"{ours}; the paper names no rate here"
        verdict = "reached" if self.reached else "not reached"
        return f"{ours} vs paper {self.paper:g} % ({self.where}): {verdict}"


@dataclass(frozen=True)
class Verdict:
    """A claim's (or a part's) computed state with everything a reader needs to check it.

    ``n`` gives the runs per role ("G", "1-S", "lottery", ...); for a verdict made of parts,
    the smallest n of any part. ``per_seed`` maps a role or quantity to {seed: value(s)}.
    """

    id: str
    claim: str
    state: str
    reason: str  # why this state, in one sentence
    test: str  # the test applied, in words, margins included
    paper: tuple = ()  # ``paper.PaperValue``s
    ours: Optional[Estimate] = None
    regime: Optional[Regime] = None
    n: dict = field(default_factory=dict)
    test_size: Optional[int] = None  # test images each error rate is measured on
    per_seed: dict = field(default_factory=dict)
    parts: tuple = ()

    def __post_init__(self):
        if self.state not in STATES:
            raise ValueError(f"verdict {self.id}: state must be one of {STATES}, got {self.state!r}")


def number(x, unit):
    """One number formatted for its unit: "+0.40 pt", "0.163×", "+0.52"."""
    if x is None or not math.isfinite(x):
        return "n/a"
    x = float(x) + 0.0  # no "-0.00"
    if unit == "pt":
        return f"{x:+.2f} pt"
    if unit == "ratio":
        return f"{x:#.3g}×"
    return f"{x:+.2f}"


def binomial_se(p, m):
    """Standard error, in points, of an error rate of `p` percent measured on `m` test images."""
    p = _percent("p", p) / 100.0
    return 100.0 * math.sqrt(p * (1 - p) / _size(m))


def difference_se(p_a, p_b, m, discordant=None):
    """Test-set standard error, in points, of p_a - p_b (error rates in percent) on the same `m` images.

    Args:
        discordant: percent of images exactly one of the two networks gets wrong, when known
            (exact paired variance); None uses its upper bound p_a + p_b (module docstring).
    """
    a, b = _percent("p_a", p_a) / 100.0, _percent("p_b", p_b) / 100.0
    both = a + b if discordant is None else _percent("discordant", discordant) / 100.0
    return 100.0 * math.sqrt(max(both - (a - b) ** 2, 0.0) / _size(m))


def half_width(se_seed=None, df=None, se_test=0.0, level=LEVEL):
    """Half width of the interval: t(df) * se_seed and z * se_test added in quadrature; None if neither exists."""
    parts = []
    if se_seed is not None and df is not None and df >= 1:
        parts.append(scipy.stats.t.ppf(0.5 + level / 2, df) * se_seed)
    if se_test > 0:
        parts.append(scipy.stats.norm.ppf(0.5 + level / 2) * se_test)
    return math.hypot(*parts) if parts else None


def paired(a, b, what, unit="pt", se_test=0.0, level=LEVEL):
    """Mean of a - b (unit "pt") or geometric mean of a / b (unit "ratio") paired by seed, with its interval.

    Args:
        a, b: {seed: value or list of values}; lists (e.g. control runs of one LOBSTER seed) are
            averaged within the seed. Seeds in both count. With one common seed, a side with
            several values lends its spread to a side with one (same training noise assumed).
        se_test: test-set standard error of the difference (``difference_se``), "pt" only.

    Returns:
        ``Estimate``, or None when no seed is in both.

    Raises:
        ValueError: a ratio of values that are not positive.
    """
    a, b = _lists(a, unit), _lists(b, unit)
    common = [s for s in a if s in b]
    if not common:
        return None
    if len(common) >= 2:
        diffs = [np.mean(a[s]) - np.mean(b[s]) for s in common]
        mean, se, df = float(np.mean(diffs)), float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))), len(diffs) - 1
        how = f"t over {len(diffs)} seeds"
    else:
        xa, xb = a[common[0]], b[common[0]]
        mean = float(np.mean(xa) - np.mean(xb))
        spread = [np.var(x, ddof=1) for x in (xa, xb) if len(x) >= 2]
        se, df, how = None, None, "one seed"
        if spread:
            var = max(spread)  # the side with one run borrows the other's spread
            se = math.sqrt(sum(var / len(x) for x in (xa, xb)))
            df = min(len(x) for x in (xa, xb) if len(x) >= 2) - 1
            how = f"one LOBSTER seed: t over {df + 1} runs, the larger run-to-run spread assumed for both sides"
    half = half_width(se, df, se_test if unit == "pt" else 0.0, level)
    if unit == "pt" and se_test > 0:
        how += " + test-set term" if se is not None else " (test-set term only: seed variation unmeasured)"
    low, high = (None, None) if half is None else (mean - half, mean + half)
    if unit == "ratio":
        mean, low, high = math.exp(mean), *(None if x is None else math.exp(x) for x in (low, high))
    return Estimate(what, unit, mean, low, high, len(common), how)


def above(estimate, bound):
    """Claimed side: above `bound`. Returns (state, reason)."""
    return _side(estimate, bound, +1)


def below(estimate, bound):
    """Claimed side: below `bound`. Returns (state, reason)."""
    return _side(estimate, bound, -1)


def within(estimate, low, high):
    """Claimed: inside [low, high] (equivalence). Supported when the interval lies inside, not supported
    when it lies wholly outside, inconclusive when it crosses an edge. Returns (state, reason)."""
    missing = _missing(estimate)
    if missing:
        return missing
    u = estimate.unit
    band = f"[{number(low, u)}, {number(high, u)}]"
    if low <= estimate.low and estimate.high <= high:
        return "supported", f"the interval lies inside {band}"
    if estimate.high < low or estimate.low > high:
        return "not supported", f"the interval lies outside {band}"
    return "inconclusive", f"the interval crosses an edge of {band}"


def combine(parts, how="all"):
    """State of a verdict made of parts: (state, reason).

    how="all": every part is needed (a conjunction): any part not supported makes it not
    supported, else any part not tested makes it not tested, else any inconclusive part makes
    it inconclusive. how="each": parts are replications (setups); parts not tested are left
    out, and the rest decide as for "all"; not tested when no part was tested.
    """
    if how not in ("all", "each"):
        raise ValueError(f"how must be 'all' or 'each', got {how!r}")
    states = [p.state for p in parts]
    if how == "each":
        states = [s for s in states if s != "not tested"]
    if not states:
        return "not tested", "no part could be tested"
    names = _short_ids([p.id for p in parts])
    untested = [names[p.id] for p in parts if p.state == "not tested"]
    left_out = f" (not tested: {', '.join(untested)})" if how == "each" and untested else ""
    for state in ("not supported", "not tested", "inconclusive"):
        if state in states:
            return state, f"{state}: {', '.join(names[p.id] for p in parts if p.state == state)}{left_out}"
    return "supported", f"every {'tested ' if how == 'each' else ''}part is supported{left_out}"


def _short_ids(ids):
    """Id -> the id without the leading " · " segments every id shares ("C1 · a · x" -> "x")."""
    split = [i.split(" · ") for i in ids]
    shared = 0
    while all(len(s) > shared + 1 and s[shared] == split[0][shared] for s in split):
        shared += 1
    return {i: " · ".join(s[shared:]) for i, s in zip(ids, split)}


def smallest_n(parts):
    """Role -> the smallest n of any part (what a verdict made of parts reports)."""
    out = {}
    for part in parts:
        for role, count in part.n.items():
            out[role] = min(out.get(role, count), count)
    return out


def _side(estimate, bound, sign):
    missing = _missing(estimate)
    if missing:
        return missing
    side, other = ("above", "below") if sign > 0 else ("below", "above")
    b = number(bound, estimate.unit)
    if (estimate.low > bound) if sign > 0 else (estimate.high < bound):
        return "supported", f"the interval lies {side} {b}"
    if (estimate.high < bound) if sign > 0 else (estimate.low > bound):
        return "not supported", f"the interval lies {other} {b}"
    return "inconclusive", f"the interval contains {b} (within noise)"


def _missing(estimate):
    if estimate is None:
        return "not tested", "inputs missing"
    if estimate.low is None:
        return "inconclusive", f"n = {estimate.n}: no interval, so noise cannot be told from an effect"
    return None


def _lists(values, unit):
    if not hasattr(values, "items"):
        raise ValueError(f"expected a mapping seed -> value(s), got {type(values).__name__}")
    out = {}
    for seed, v in values.items():
        v = [float(x) for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]
        v = [x for x in v if math.isfinite(x)]
        if unit == "ratio":
            if any(x <= 0 for x in v):
                raise ValueError(f"a ratio needs positive values; seed {seed!r} has {v}")
            v = [math.log(x) for x in v]
        if v:
            out[seed] = v
    return out


def _percent(name, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 100:
        raise ValueError(f"{name} must be an error rate in percent, in [0, 100]; got {p!r}")
    return float(p)


def _size(m):
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(f"the test-set size must be a positive integer number of images, got {m!r}")
    return int(m)
