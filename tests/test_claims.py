"""Verdicts of the claims C1-C5 on hand-made numbers, thresholds at their edges."""

import math

import pytest

from psputil.book import pages as book

from psputil.experiments import claims
from psputil.experiments.claims import Thresholds


def entry(sparsity, g, lottery, reinit, random, n=2, std=0.1):
    kinds = {"lottery": lottery, "reinit": reinit, "random": random}
    return {"sparsity": sparsity, "lobster_test_error": g,
            **{k: {"mean": v, "std": std, "n": n, "values": [v] * n} for k, v in kinds.items()}}


PAPER_LIKE = {  # lottery recovers at 50 %, fails at 95 %; reinit slightly worse; random worse still
    50.0: entry(50.2, 1.0, 1.2, 1.4, 2.0),
    95.0: entry(95.1, 1.5, 4.0, 5.0, 9.0),
}


def test_c1_needs_g_below_every_control_at_the_highest_milestone():
    verdict = claims.c1({"a": PAPER_LIKE})
    assert verdict.verdict is True and "95.10 %" in verdict.numbers and "n=2" in verdict.numbers
    assert claims.c1({"a": PAPER_LIKE}, Thresholds(c1_margin=2.5)).verdict is False  # 4.0 - 2.5 = 1.5, not > 1.5
    tied = {95.0: entry(95.0, 4.0, 4.0, 5.0, 9.0)}
    assert claims.c1({"a": PAPER_LIKE, "b": tied}).verdict is False  # every setup must support it
    assert claims.c1({}).verdict is None
    assert claims.c1({"a": {95.0: entry(95.0, math.nan, 1, 2, 3)}}).verdict is None


def test_c2_checks_all_four_parts():
    assert claims.c2({"a": PAPER_LIKE}).verdict is True
    recovers_not = {50.0: entry(50, 1.0, 2.01, 2.5, 3.0), 95.0: PAPER_LIKE[95.0]}
    v = claims.c2({"a": recovers_not})
    assert v.verdict is False and "recovers" in v.numbers
    no_failure = {50.0: PAPER_LIKE[50.0], 95.0: entry(95, 1.5, 2.5, 3.0, 9.0)}  # 2.5 is not > 1.5 + 1
    assert claims.c2({"a": no_failure}).verdict is False
    reinit_much_worse = {50.0: PAPER_LIKE[50.0], 95.0: entry(95, 1.5, 4.0, 6.5, 9.0)}
    assert claims.c2({"a": reinit_much_worse}).verdict is False
    assert claims.c2({"a": reinit_much_worse}, Thresholds(c2_slight=2.5)).verdict is True
    random_better = {50.0: PAPER_LIKE[50.0], 95.0: entry(95, 1.5, 4.0, 5.0, 4.5)}
    assert claims.c2({"a": random_better}).verdict is False
    one = claims.c2({"a": {95.0: PAPER_LIKE[95.0]}})
    assert one.verdict is None and "fewer than two milestones" in one.numbers


def test_c3_lower_loss_sharper_and_generalizing():
    g = {"train_loss": 0.01, "top_eigenvalue": 50.0, "test_error": 1.0}
    s = {"train_loss": 0.02, "top_eigenvalue": 20.0, "test_error": 1.1}
    v = claims.c3(g, s)
    assert v.verdict is True and v.details == {"lower loss": True, "narrower": True, "generalizes": True}
    assert claims.c3({**g, "top_eigenvalue": 10.0}, s).verdict is False
    assert claims.c3({**g, "test_error": 1.3}, s).verdict is False
    assert claims.c3({**g, "test_error": 1.3}, s, Thresholds(c3_generalize=0.2)).verdict is True
    assert claims.c3({}, {}).verdict is None and "n/a" in claims.c3({}, {}).numbers


def test_c4_and_c5():
    assert claims.c4(10.0, 12.0).verdict is True and claims.c4(12.0, 10.0).verdict is False
    assert claims.c4(None, 1.0).verdict is None
    v = claims.c5(5.0, 5.4, 9.0, 8.0)  # relative gap 0.4 / 5.4 = 0.074 <= 0.10
    assert v.verdict is True and v.details["relative"] == pytest.approx(0.4 / 5.4)
    assert claims.c5(5.0, 6.0, 9.0, 8.0).verdict is False  # gap 1/6 > 0.10
    assert claims.c5(5.0, 6.0, 9.0, 8.0, Thresholds(c5_comparable=0.2)).verdict is True
    assert claims.c5(5.0, 5.0, 8.0, 8.0).verdict is False  # second order must be strictly higher
    assert "relu3" in claims.c5(5, 5, 9, 8, h2_layers=["relu3"]).test
    assert claims.c5(None, 5, 9, 8).verdict is None


def test_rows_make_a_claims_table_with_the_tests():
    verdicts = [claims.c1({"a": PAPER_LIKE}), claims.c4(None, 1.0)]
    rows = claims.rows(verdicts, [0, 1], "quick")
    assert [r.id for r in rows] == ["C1", "C4"] and rows[0].claim == claims.CLAIMS["C1"]
    html = book.claims_table(rows)._repr_html_()
    assert "<td>supported</td>" in html and "<td>not computed</td>" in html and "test (thresholds)" in html
    assert "every control&#x27;s mean - 0 pt" in html
