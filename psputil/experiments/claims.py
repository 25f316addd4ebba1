"""Verdicts of the paper's claims C1-C5 computed from this run's numbers (never typed in).

Each ``c<N>`` is a pure function of plain numbers (what ``experiments.controls``,
``analysis.plane`` and ``analysis.curvature`` return) and of ``Thresholds``; it
returns a ``Verdict``: True (supported), False (not supported) or None (this run
cannot tell: too few milestones, a missing number), the numbers behind it and the
test it applied, thresholds included. Errors are test errors in percent, so margins
are percentage points.
"""

import math
from dataclasses import dataclass, field
from typing import Optional

CLAIMS = {
    "C1": "Gradual pruning (LOBSTER) reaches higher sparsity at a given test error than retraining the structure it found",
    "C2": "Lottery rewinding recovers accuracy at low compression but fails at high compression; a new random init "
          "is only slightly worse; a random mask is worse still",
    "C3": "At the highest compression G lies in a lower-loss, narrower minimum than 1-S (larger top Hessian "
          "eigenvalue) yet generalizes slightly better",
    "C4": "G has a lower PSP L2 norm than 1-S",
    "C5": "First-order PSP-entropy of G and 1-S is comparable; second-order PSP-entropy of G is higher",
}
KINDS = ("lottery", "reinit", "random")


@dataclass(frozen=True)
class Thresholds:
    """The margins the verdicts use (percentage points of test error unless said otherwise)."""

    c1_margin: float = 0.0  # G's error must be below every control's mean error by more than this
    c2_recover: float = 1.0  # lowest milestone: lottery mean error at most G's error + this
    c2_fail: float = 1.0  # highest milestone: lottery mean error above G's error + this
    c2_slight: float = 2.0  # highest milestone: 0 <= reinit mean - lottery mean <= this
    c3_generalize: float = 0.0  # G's test error at most 1-S's + this
    c5_comparable: float = 0.10  # first order: |H_G - H_1S| / max(H_G, H_1S) at most this (relative)


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict with the numbers behind it and the test it applied."""

    id: str
    verdict: Optional[bool]
    numbers: str
    test: str
    details: dict = field(default_factory=dict)


def c1(controls, thresholds=Thresholds()):
    """C1 from the controls of every setup: at each setup's highest milestone, G beats every control.

    Args:
        controls: setup name -> ``experiments.controls`` result (milestone -> entry with
            "sparsity", "lobster_test_error" and per kind {"mean", "std", "n"}).
    """
    test = f"at each setup's highest milestone, G's test error < every control's mean - {thresholds.c1_margin:g} pt"
    parts, oks = [], []
    for name, by_milestone in controls.items():
        if not by_milestone:
            continue
        entry = by_milestone[max(by_milestone)]
        g, means = entry["lobster_test_error"], {k: entry[k]["mean"] for k in KINDS}
        if _bad(g, *means.values()):
            continue
        oks.append(all(g < m - thresholds.c1_margin for m in means.values()))
        parts.append(f"{name} at {entry['sparsity']:.2f} %: G {g:.2f} %; " + ", ".join(
            f"{k} {means[k]:.2f} % (n={entry[k]['n']})" for k in KINDS))
    return Verdict("C1", _all(oks), "; ".join(parts) or "no setup computed", test, {"per_setup": oks})


def c2(controls, thresholds=Thresholds()):
    """C2 from the controls of every setup with at least two milestones.

    A setup supports it when, with L/R/N the lottery/reinit/random mean errors and G LOBSTER's:
    L <= G + recover at the lowest milestone; L > G + fail at the highest; there
    0 <= R - L <= slight and N > R.
    """
    t = thresholds
    test = (f"lowest milestone: lottery <= G + {t.c2_recover:g} pt; highest: lottery > G + {t.c2_fail:g} pt, "
            f"0 <= reinit - lottery <= {t.c2_slight:g} pt, random > reinit (means)")
    parts, oks = [], []
    for name, by_milestone in controls.items():
        if len(by_milestone) < 2:
            parts.append(f"{name}: fewer than two milestones, not tested")
            continue
        low, high = by_milestone[min(by_milestone)], by_milestone[max(by_milestone)]
        g_low, l_low = low["lobster_test_error"], low["lottery"]["mean"]
        g_high = high["lobster_test_error"]
        l_high, r_high, n_high = (high[k]["mean"] for k in KINDS)
        if _bad(g_low, l_low, g_high, l_high, r_high, n_high):
            continue
        checks = {"lottery recovers at low": l_low <= g_low + t.c2_recover, "lottery fails at high": l_high > g_high + t.c2_fail,
                  "reinit slightly worse": 0 <= r_high - l_high <= t.c2_slight, "random worse still": n_high > r_high}
        oks.append(all(checks.values()))
        failed = [k for k, ok in checks.items() if not ok]
        parts.append(f"{name}: at {low['sparsity']:.2f} % lottery {l_low:.2f} vs G {g_low:.2f}; at {high['sparsity']:.2f} % "
                     f"lottery {l_high:.2f}, reinit {r_high:.2f}, random {n_high:.2f} vs G {g_high:.2f}"
                     + (f" (not met: {', '.join(failed)})" if failed else ""))
    return Verdict("C2", _all(oks), "; ".join(parts) or "no setup computed", test, {"per_setup": oks})


def c3(g, oneshot, thresholds=Thresholds()):
    """C3 from G and 1-S at the highest rate.

    Args:
        g, oneshot: dicts with "train_loss" (on the plane's training subset), "top_eigenvalue"
            (of the masked training-loss Hessian) and "test_error" (percent).
    """
    test = (f"train loss G < 1-S, top Hessian eigenvalue G > 1-S, test error G <= 1-S + {thresholds.c3_generalize:g} pt")
    values = [g.get(k) for k in ("train_loss", "top_eigenvalue", "test_error")] + \
             [oneshot.get(k) for k in ("train_loss", "top_eigenvalue", "test_error")]
    numbers = (f"train loss {_f(g.get('train_loss'), 4)} vs {_f(oneshot.get('train_loss'), 4)}; "
               f"top eigenvalue {_f(g.get('top_eigenvalue'), 2)} vs {_f(oneshot.get('top_eigenvalue'), 2)}; "
               f"test error {_f(g.get('test_error'), 2)} % vs {_f(oneshot.get('test_error'), 2)} % (G vs 1-S)")
    if _bad(*values):
        return Verdict("C3", None, numbers, test)
    checks = {"lower loss": g["train_loss"] < oneshot["train_loss"],
              "narrower": g["top_eigenvalue"] > oneshot["top_eigenvalue"],
              "generalizes": g["test_error"] <= oneshot["test_error"] + thresholds.c3_generalize}
    return Verdict("C3", all(checks.values()), numbers, test, checks)


def c4(l2_g, l2_oneshot):
    """C4: G's PSP L2 norm (summed over layers) is lower than 1-S's."""
    numbers = f"PSP L2 norm G {_f(l2_g, 1)} vs 1-S {_f(l2_oneshot, 1)}"
    if _bad(l2_g, l2_oneshot):
        return Verdict("C4", None, numbers, "G < 1-S")
    return Verdict("C4", l2_g < l2_oneshot, numbers, "G < 1-S")


def c5(h1_g, h1_oneshot, h2_g, h2_oneshot, thresholds=Thresholds(), h2_layers="all"):
    """C5: first-order entropies within a relative tolerance, second-order entropy of G higher."""
    tol = thresholds.c5_comparable
    test = f"|H1_G - H1_1S| / max <= {tol:g}; H2_G > H2_1S (second order on layers: {_layers(h2_layers)})"
    numbers = (f"first order G {_f(h1_g, 3)} vs 1-S {_f(h1_oneshot, 3)} bits; "
               f"second order G {_f(h2_g, 3)} vs 1-S {_f(h2_oneshot, 3)} bits")
    if _bad(h1_g, h1_oneshot, h2_g, h2_oneshot):
        return Verdict("C5", None, numbers, test)
    scale = max(abs(h1_g), abs(h1_oneshot))
    relative = abs(h1_g - h1_oneshot) / scale if scale > 0 else 0.0
    checks = {"comparable": relative <= tol, "higher second order": h2_g > h2_oneshot}
    return Verdict("C5", all(checks.values()), f"{numbers}; relative first-order gap {relative:.3f}", test,
                   {**checks, "relative": relative})


def rows(verdicts, seeds, profile):
    """``book.ClaimRow``s of verdicts, with the claim texts and the tests (thresholds) they applied."""
    from psputil.book.pages import ClaimRow

    return [ClaimRow(v.id, CLAIMS[v.id], v.verdict, v.numbers, seeds, profile, v.test) for v in verdicts]


def _bad(*values):
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)


def _all(oks):
    return all(oks) if oks else None


def _f(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _layers(layers):
    return layers if isinstance(layers, str) else ", ".join(layers)
