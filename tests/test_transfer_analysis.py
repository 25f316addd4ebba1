"""Claim C6 on hand-built transfer rows: clusters, the clustered bootstrap, G vs 1-S per milestone, the tables."""

import importlib.util

import numpy as np
import pytest
import scipy.stats

from psputil.experiments import stats
from psputil.book import tables
from psputil.transfer import analysis

KINDS = ("init", "dense", "G", "1-S", "reinit", "random")


def make_rows(sign=+1, seeds=(0, 1, 2), rates=(80.0,), lobster=True, gap=3.0, noise=0.01):
    """Two pairs; accuracy = sign * entropy (+ a pair offset); G's entropy `gap` above the rest."""
    rows, rng = [], np.random.default_rng(0)
    for setup, offset in (("lenet5-mnist", 0.0), ("lenet5-fashion", 20.0)):
        for rate in rates:
            for s in seeds:
                for i, kind in enumerate(KINDS):
                    if kind in ("init", "dense") and rate != rates[0]:
                        continue
                    h = float(i) + (gap if kind == "G" else 0.0) + 0.1 * s
                    row = {"setup": setup, "target": "t", "kind": kind, "seed": s,
                           "rate": None if kind in ("init", "dense") else rate,
                           "sparsity": 0.0 if kind in ("init", "dense") else rate,
                           "probe_accuracy": 50 + offset + sign * h + noise * rng.normal(),
                           "finetune_accuracy": float("nan"), **{e: h for e in analysis.ENTROPIES}}
                    if lobster and kind in ("1-S", "reinit", "random"):
                        row["lobster_seed"] = s
                    rows.append(row)
    return rows


def test_rows_sharing_a_seed_or_lobster_run_form_one_cluster():
    rows = make_rows()
    labels = analysis.clusters(rows)
    by = {}
    for row, label in zip(rows, labels):
        by.setdefault(label, set()).add((row["setup"], row["seed"]))
    assert len(by) == 6 and all(len(v) == 1 for v in by.values())  # one cluster per (setup, seed)
    shared = [dict(r, lobster_seed=0) if r["kind"] in ("1-S", "reinit", "random") else r for r in rows]
    assert len(set(analysis.clusters(shared))) == 2  # every control built from LOBSTER run 0: one per setup
    assert len(set(analysis.clusters(make_rows(lobster=False)))) == 2  # unknown LOBSTER run: assume shared


def test_bootstrap_moves_whole_clusters():
    rows = make_rows()
    labels = np.array(analysis.clusters(rows))
    seen = []

    def statistic(weights):  # (resamples, rows): how often each row was drawn
        for label in set(labels):
            assert (weights[:, labels == label] == weights[:, labels == label][:, :1]).all()  # a cluster moves whole
        for setup in ("lenet5-mnist", "lenet5-fashion"):  # resampled within its setup: 3 clusters drawn
            cluster_of = labels[[r["setup"] == setup for r in rows]]
            members = len(cluster_of) // len(set(cluster_of))
            assert np.allclose(weights[:, [r["setup"] == setup for r in rows]].sum(1), 3 * members)
        seen.append(weights.shape)
        return weights.sum(1)

    draws = analysis.resample_clusters(rows, statistic, resamples=50, seed=1)
    assert draws.shape == (50,) and (50, len(rows)) in seen
    assert analysis.resample_clusters(make_rows(seeds=(0,)), statistic, resamples=10) is None  # nothing to resample


def test_weighted_spearman_matches_scipy_on_repeated_points():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 4, 12).astype(float)  # many ties
        y = x + rng.normal(size=12)
        weights = rng.integers(0, 3, (4, 12)).astype(float)
        want = [scipy.stats.spearmanr(np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int))).statistic
                for w in weights]
        assert np.allclose(analysis._spearman(x, y, weights), want)
    assert np.isnan(analysis._spearman(np.ones(4), np.arange(4.0), np.ones((1, 4))))[0]


def test_duplicated_rows_do_not_narrow_the_interval():
    rows = make_rows(noise=1.0)
    doubled = [dict(r) for r in rows for _ in range(2)]  # copies share their cluster: no new information
    one, two = (analysis.correlation(r, resamples=200, seed=3) for r in (rows, doubled))
    assert one.clusters == two.clusters == 6 and two.n == 2 * one.n
    assert (one.rho, one.low, one.high) == pytest.approx((two.rho, two.low, two.high))


def test_c6_every_state():
    good = analysis.claim_row(make_rows(+1), "quick", resamples=200)
    assert isinstance(good, stats.Verdict) and good.id == "C6" and good.state == "supported"
    assert [p.id for p in good.parts] == ["C6 · correlation", "C6 · G vs 1-S"]
    assert analysis.claim_row(make_rows(-1), resamples=200).state == "not supported"
    assert analysis.claim_row(make_rows(+1, seeds=(0,)), resamples=200).state == "inconclusive"  # no interval
    noisy = analysis.claim_row(make_rows(+1), resamples=200, test_size=2000)  # test-set term (~2 pt) > the 2 pt gap
    assert noisy.state == "inconclusive" and noisy.parts[1].parts[0].ours.method == "t over 3 seeds + test-set term"
    assert analysis.claim_row([], resamples=10).state == "not tested"


def test_g_vs_oneshot_is_tested_within_each_milestone():
    rows = make_rows(rates=(80.0, 95.0))
    cells = analysis.g_vs_oneshot(rows)
    assert [c.id for c in cells] == ["C6 · lenet5-mnist -> t · 80 %", "C6 · lenet5-mnist -> t · 95 %",
                                     "C6 · lenet5-fashion -> t · 80 %", "C6 · lenet5-fashion -> t · 95 %"]
    assert all(c.n == {"G": 3, "1-S": 3} and c.ours.mean == pytest.approx(2.0, abs=0.1) for c in cells)
    diff, diffs = analysis.g_minus_oneshot(rows)
    assert diff == pytest.approx(2.0, abs=0.1) and len(diffs) == 4


def test_conjecture_keeps_what_the_chapter_reads():
    result = analysis.conjecture(make_rows(), resamples=100)
    assert result["verdict"].state == "supported" and result["statement"].startswith("C6 is supported")
    c = result["correlations"]["entropy2_source"]
    assert c.rho == pytest.approx(1.0, abs=0.01) and c.groups == 2 and c.excludes_zero() == 1
    assert c.used == c.resamples == 100 and c.clusters == 6
    assert result["n_pairs"] == 2 and result["seeds"] == [0, 1, 2]


def test_table_is_a_compact_pivot_with_the_full_table_folded():
    block = tables.transfer(make_rows(rates=(80.0, 95.0)))
    lines = block.markdown.splitlines()
    assert lines[0] == "| pair | milestone % | init | dense | G | 1-S | reinit | random |"
    assert len([line for line in lines[2:] if line.startswith("| lenet5")]) >= 4  # 2 pairs x 2 milestones
    assert "<details><summary>Full table" in block.html and "psp-scroll" in block.html
    assert "fine-tuned" not in block.html  # every fine-tuned cell is empty: the column is dropped
    assert "±" not in block.html
    single = tables.transfer(make_rows(seeds=(0,)))
    assert "SD (n &gt; 1)" not in single.html  # one seed: no spread column


def test_rank_stats_is_gone():
    assert importlib.util.find_spec("psputil.rank_stats") is None
