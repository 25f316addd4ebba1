"""Verdicts of C1-C5 on hand-built per-seed numbers: every state of every claim, intervals checked by hand."""

import math

import pytest
import scipy.stats

from psputil.book import blocks
from psputil.experiments import claims, stats
from psputil.experiments.claims import Margins

NOISE = (0.0, 0.2, -0.2)  # per-seed offsets: a small, known spread


def entry(rate, g, lottery, reinit, random, seeds=(0, 1, 2), runs=2):
    """One milestone: G and the mean of each control, with a small spread over seeds and runs."""
    kinds = {"lottery": lottery, "reinit": reinit, "random": random}
    return {"sparsity": {s: rate for s in seeds}, "G": {s: g + NOISE[s % 3] for s in seeds},
            **{k: {s: [v + NOISE[s % 3] + 0.05 * j for j in range(runs)] for s in seeds} for k, v in kinds.items()}}


def setup_input(*entries, test_size=10000):
    return {"test_size": test_size, "milestones": {e["sparsity"][next(iter(e["sparsity"]))]: e for e in entries}}


LOW = entry(50.0, 0.9, 0.9, 1.0, 1.2)  # lottery recovers at 50 %
HIGH = entry(99.5, 1.0, 4.0, 4.3, 9.0)  # ... and fails at 99.5 %; reinit close; random worse still


def test_c1_every_state():
    assert claims.c1({"lenet5-mnist": setup_input(LOW, HIGH)}).state == "supported"
    worse = entry(99.5, 6.0, 4.0, 4.3, 5.0)
    assert claims.c1({"lenet5-mnist": setup_input(LOW, worse)}).state == "not supported"
    tie = entry(99.5, 6.1, 6.1, 6.1, 6.1)  # the LeNet-300 case: a tie is noise, not a refutation
    v = claims.c1({"lenet5-mnist": setup_input(LOW, tie)})
    assert v.state == "inconclusive" and "within noise" in v.parts[0].parts[0].reason
    low_regime = entry(95.06, 1.0, 4.0, 4.3, 9.0)  # paper: 99.57 % for LeNet-5 / MNIST
    v = claims.c1({"lenet5-mnist": setup_input(LOW, low_regime)})
    assert v.state == "not tested"
    assert "95.06 % pruned vs paper 99.57 %" in v.parts[0].regime.text() and "not reached" in v.parts[0].parts[0].reason
    assert v.parts[0].parts[0].ours is not None  # our numbers are still shown
    assert claims.c1({}).state == "not tested"
    no_controls = {"test_size": 100, "milestones": {90.0: {"sparsity": 90.0, "G": {0: 1.0}}}}
    assert claims.c1({"lenet5-mnist": no_controls}).state == "not tested"


def test_c1_setups_are_replications_and_n_is_stated():
    v = claims.c1({"lenet5-mnist": setup_input(LOW, HIGH), "lenet300-mnist": setup_input(entry(90.0, 1, 4, 4, 9))})
    assert v.state == "supported" and "(not tested: lenet300-mnist)" in v.reason  # 90 % < paper's 95 %
    part = v.parts[0]
    assert part.n == {"G": 3, "lottery": 6, "reinit": 6, "random": 6} and part.test_size == 10000
    assert part.per_seed["G"] == HIGH["G"]
    assert v.paper and all(p.where for p in v.paper)
    resnet = claims.c1({"resnet32-cifar10": setup_input(entry(90.0, 1, 4, 4.3, 9))})
    assert resnet.state == "supported" and resnet.parts[0].regime.reached is None  # paper names no rate


def test_c2_every_state():
    assert claims.c2({"lenet5-mnist": setup_input(LOW, HIGH)}).state == "supported"
    no_recovery = entry(50.0, 0.9, 3.0, 3.1, 3.5)
    v = claims.c2({"lenet5-mnist": setup_input(no_recovery, HIGH)})
    assert v.state == "not supported" and "recovers" in v.parts[0].reason
    noisy = setup_input(LOW, HIGH, test_size=300)  # a small test set: the test-set term swamps the gaps
    assert claims.c2({"lenet5-mnist": noisy}).state == "inconclusive"
    assert claims.c2({"lenet5-mnist": setup_input(HIGH)}).state == "not tested"  # one milestone
    below_regime = setup_input(LOW, entry(98.0, 1.0, 4.0, 4.3, 9.0))
    v = claims.c2({"lenet5-mnist": below_regime})
    assert v.state == "not tested" and [p.state for p in v.parts[0].parts][1] == "not tested"  # "fails" part
    reinit_far = entry(99.5, 1.0, 4.0, 8.0, 9.0)
    assert claims.c2({"lenet5-mnist": setup_input(LOW, reinit_far)}).state == "not supported"
    assert claims.c2({"lenet5-mnist": setup_input(LOW, reinit_far)}, Margins(c2_minor=5)).state == "supported"


def test_c2_low_milestone_must_lie_below_the_papers_rate():
    high_low = entry(96.0, 1.0, 1.0, 1.1, 1.3)  # LeNet-300: the paper says re-training fails beyond 95 %
    v = claims.c2({"lenet300-mnist": setup_input(high_low, entry(98.0, 1.0, 4.0, 4.3, 9.0))})
    assert v.parts[0].parts[0].state == "not tested" and "not below the paper's" in v.parts[0].parts[0].reason


def facts(loss, eig, err, l2=1e3, h1=1.85, h2=4.5, h1_live=None, h2_live=None):
    out = {"train_loss": loss, "top_eigenvalue": eig, "test_error": err, "psp_l2": l2, "entropy1": h1, "entropy2": h2}
    out.update({k: v for k, v in (("entropy1_live", h1_live), ("entropy2_live", h2_live)) if v is not None})
    return out


def pairs(g, s, rate=99.5, seeds=(0, 1, 2)):
    """Per-seed G and 1-S facts; every number jitters by 1 % from seed to seed."""
    jitter = lambda d, k: {key: v * (1 + 0.01 * NOISE[k % 3]) for key, v in d.items()}
    return {k: {"sparsity": rate, "G": jitter(g, k), "1-S": jitter(s, k + 1)} for k in seeds}


G = facts(1e-4, 500.0, 1.0, l2=2e3, h1=1.85, h2=4.50, h1_live=2.1, h2_live=4.6)
S = facts(1e-3, 100.0, 1.1, l2=8e3, h1=1.86, h2=4.36, h1_live=2.1, h2_live=4.4)


def test_c3_every_state():
    assert claims.c3(pairs(G, S), test_size=10000).state == "supported"
    assert claims.c3(pairs({**G, "top_eigenvalue": 50.0}, S), test_size=10000).state == "not supported"
    assert claims.c3(pairs({**G, "test_error": 3.0}, S), test_size=10000).state == "not supported"
    assert claims.c3(pairs(G, S), test_size=300).state == "inconclusive"  # test-set error ~0.8 pt
    v = claims.c3(pairs(G, S, rate=95.06), test_size=10000)
    assert v.state == "not tested" and "paper 99.57 %" in v.regime.text() and v.parts[0].ours is not None
    assert claims.c3({}, test_size=100).state == "not tested"


def test_c4_every_state():
    assert claims.c4(pairs(G, S)).state == "supported"
    assert claims.c4(pairs({**G, "psp_l2": 2e4}, S)).state == "not supported"
    assert claims.c4(pairs({**G, "psp_l2": 8e3 / 1.1}, S)).state == "inconclusive"  # ratio on the margin 1 / 1.1
    assert claims.c4(pairs(G, S, rate=90.0)).state == "not tested"
    v = claims.c4(pairs(G, S))
    assert v.n == {"G": 3, "1-S": 3} and v.ours.unit == "ratio" and 0.2 < v.ours.mean < 0.3


def test_c5_every_state_and_both_neuron_sets():
    v = claims.c5(pairs(G, S))
    assert v.state == "supported" and [p.id for p in v.parts] == ["C5 · all neurons", "C5 · live neurons"]
    dead_artefact = {**G, "entropy2_live": 4.2}  # higher over all neurons, lower over live ones
    v = claims.c5(pairs(dead_artefact, S))
    assert v.state == "not supported" and v.parts[0].state == "supported" and v.parts[1].state == "not supported"
    apart = {**G, "entropy1": 2.5, "entropy1_live": 2.8}  # first order 35 % higher: not comparable
    assert claims.c5(pairs(apart, S)).state == "not supported"
    edge = {**G, "entropy1": 1.86 * 1.05, "entropy1_live": 2.1 * 1.05}  # on the 5 % edge: crosses it
    assert claims.c5(pairs(edge, S)).state == "inconclusive"
    no_live = {k: v for k, v in G.items() if not k.endswith("_live")}
    v = claims.c5(pairs(no_live, S))
    assert v.state == "not tested" and v.parts[1].state == "not tested"
    assert claims.c5(pairs(G, S, rate=98.0)).state == "not tested"


def test_test_set_term_matches_a_hand_computation():
    assert stats.binomial_se(3.5, 1000) == pytest.approx(100 * math.sqrt(0.035 * 0.965 / 1000))  # ~0.58 pt
    assert 0.55 < stats.binomial_se(3.5, 1000) < 0.6
    # one seed: the interval is the test-set term alone, sqrt((p_a + p_b - d^2) / m), times z
    est = stats.paired({0: 3.5}, {0: [3.5]}, "d", "pt", stats.difference_se(3.5, 3.5, 1000))
    half = 1.959964 * 100 * math.sqrt(0.07 / 1000)
    assert est.high - est.mean == pytest.approx(half, rel=1e-5) and est.n == 1
    assert "test-set term only" in est.method
    # three seeds: t over the paired differences and the test-set term, added in quadrature
    g, c, m = {0: 3.0, 1: 4.0, 2: 5.0}, {0: [4.0], 1: [6.0], 2: [6.5]}, 2000
    est = stats.paired(g, c, "d", "pt", stats.difference_se(4.0, 5.5, m))
    diffs = [-1.0, -2.0, -1.5]
    seed_half = scipy.stats.t.ppf(0.975, 2) * (scipy.stats.tstd(diffs) / math.sqrt(3))
    test_half = 1.959964 * 100 * math.sqrt((0.04 + 0.055 - 0.015 ** 2) / m)
    assert est.mean == pytest.approx(-1.5)
    assert est.high - est.mean == pytest.approx(math.hypot(seed_half, test_half), rel=1e-5)
    known = stats.difference_se(4.0, 5.5, m, discordant=3.0)  # exact when the discordance is known
    assert known == pytest.approx(100 * math.sqrt((0.03 - 0.015 ** 2) / m)) and known < stats.difference_se(4, 5.5, m)


def test_one_seed_has_no_plus_minus_and_no_interval_without_a_test_term():
    est = stats.paired({0: 1e-4}, {0: 1e-3}, "G / 1-S training loss", "ratio")
    assert est.low is None and est.text() == "G / 1-S training loss = 0.100×, n = 1 (no interval)"
    v = claims.c4(pairs(G, S, seeds=(0,)))
    assert v.state == "inconclusive" and "n = 1" in v.reason
    one = setup_input(entry(99.5, 1.0, 4.0, 4.3, 9.0, seeds=(0,), runs=1))
    leaf = claims.c1({"lenet5-mnist": one}).parts[0].parts[0]
    assert leaf.ours.n == 1 and "test-set term only" in leaf.ours.method and leaf.state == "supported"
    borrowed = setup_input(entry(99.5, 1.0, 4.0, 4.3, 9.0, seeds=(0,), runs=3))  # one LOBSTER seed, 3 control runs
    assert "spread assumed for both sides" in claims.c1({"lenet5-mnist": borrowed}).parts[0].parts[0].ours.method
    html = blocks.claims_table([claims.c1({"lenet5-mnist": one}), v]).html
    assert "±" not in html and "n = 1" in html


def test_decision_rule_and_combination():
    est = lambda lo, hi: stats.Estimate("d", "pt", (lo + hi) / 2, lo, hi, 3, "t")
    assert stats.below(est(-2, -1), 0)[0] == "supported" and stats.below(est(1, 2), 0)[0] == "not supported"
    assert stats.below(est(-1, 1), 0)[0] == "inconclusive" and stats.below(None, 0)[0] == "not tested"
    assert stats.above(est(1.2, 2), 1)[0] == "supported" and stats.above(est(0.2, 0.8), 1)[0] == "not supported"
    assert stats.within(est(-0.5, 0.5), -1, 1)[0] == "supported"
    assert stats.within(est(2, 3), -1, 1)[0] == "not supported"
    assert stats.within(est(0.5, 1.5), -1, 1)[0] == "inconclusive"
    part = lambda state: stats.Verdict(state, "", state, "", "")
    assert stats.combine([part("supported"), part("not tested")], "all")[0] == "not tested"
    assert stats.combine([part("supported"), part("not tested")], "each")[0] == "supported"
    assert stats.combine([part("inconclusive"), part("not supported")], "all")[0] == "not supported"
    assert stats.combine([part("not tested")], "each")[0] == "not tested"
    with pytest.raises(ValueError, match="state must be one of"):
        stats.Verdict("C1", "", "true", "", "")


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="margin c2_fail must be a finite number >= 0"):
        Margins(c2_fail=-1)
    with pytest.raises(ValueError, match="regime_slack must be >= 1"):
        Margins(regime_slack=0.5)
    with pytest.raises(ValueError, match="test-set size must be a positive integer"):
        stats.binomial_se(3.5, 0)
    with pytest.raises(ValueError, match="error rate in percent"):
        stats.difference_se(150, 3, 100)
    with pytest.raises(ValueError, match="ratio needs positive values"):
        stats.paired({0: -1.0}, {0: 1.0}, "d", "ratio")
    with pytest.raises(ValueError, match="expected {'test_size'"):
        claims.c1({"lenet5-mnist": {"G": 1}})
    with pytest.raises(ValueError, match="unknown setup"):
        claims.c1({"vgg": setup_input(HIGH)})


def test_from_control_summaries():
    summary = {99.0: {"sparsity": 99.1, "g": {"best": {"test_error": 1.5}},
                      **{k: {"values": [2.0, 2.5], "mean": 2.25} for k in claims.KINDS}}}
    made = claims.from_control_summaries({0: summary, 1: summary}, 1000)
    assert made["test_size"] == 1000 and made["milestones"][99.0]["G"] == {0: 1.5, 1: 1.5}
    assert made["milestones"][99.0]["random"] == {0: [2.0, 2.5], 1: [2.0, 2.5]}
    assert claims.c1({"lenet5-mnist": made}).parts[0].n["lottery"] == 4


def test_claims_table_columns_states_and_narrow_screens():
    verdicts = [claims.c1({"lenet5-mnist": setup_input(LOW, HIGH)}), claims.c3(pairs(G, S, rate=95.0), test_size=10000),
                claims.c5(pairs(G, S))]
    block = blocks.claims_table(verdicts)
    html = block.html
    for column in blocks.CLAIM_COLUMNS:
        assert f"<th>{column}</th>" in html.replace("&#x27;", "'")
    assert "psp-state psp-supported" in html and "psp-not-tested" in html
    assert "99.57 % pruned (Sec. 5.2, Fig. 1b)" in html  # the paper's value with where it says it
    assert "@media (max-width:640px)" in html and 'data-label="verdict"' in html  # reflows into cards
    assert "n: G 3, lottery 6, reinit 6, random 6; test set 10,000 images" in html
    assert "95.00 % pruned vs paper 99.57 % (Sec. 5.2, Fig. 2): not reached" in html
    lines = block.markdown.splitlines()
    assert lines[0] == "| claim | paper's value | ours | regime tested | verdict | test applied |"
    assert any(line.startswith("| lottery G's test error") for line in lines)  # parts, labelled relative to parent
