"""Transfer chapter: linear probes, masked fine-tuning, rank statistics, the verdict, the notebook (smoke)."""

import copy
import dataclasses

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from psputil import data, models, pruning, rank_stats

from psputil.transfer import probe

from psputil.transfer import units as transfer
from psputil.data import DataConfig, DataSplits, TensorSplit


def _random_splits(shape=(1, 28, 28), n=(200, 50, 100), seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda k: TensorSplit(torch.randn(k, *shape, generator=g), torch.randint(0, 10, (k,), generator=g))
    return DataSplits(DataConfig(), make(n[0]), make(n[1]), make(n[2]), 10, shape)


def _pruned_lenet(name="lenet5", rate=70.0):
    model = models.build(name, seed=3)
    mask = pruning.magnitude_mask(model, rate)
    return pruning.apply_mask(model, mask), mask


def test_probe_trains_only_the_readout():
    model, mask = _pruned_lenet()
    before = copy.deepcopy(model.state_dict())
    config = dataclasses.replace(probe.PROBE, epochs=3)
    out = probe.linear_probe(model, _random_splits(), config, seed=1, device="cpu")
    probed = out["model"].state_dict()
    head = probe.readout_name(model)
    assert head == "fc2"
    for name, value in before.items():
        assert torch.equal(model.state_dict()[name], value)  # the caller's model is unchanged
        if not name.startswith(head + "."):
            assert torch.equal(probed[name], value), name  # hidden weights bit-identical
    for name, keep in mask.items():
        if not name.startswith(head + "."):
            assert not probed[name][~keep].any(), name  # masks intact
    assert not torch.equal(probed["fc2.weight"], before["fc2.weight"])
    assert len(out["history"]) == 3


def test_probe_reaches_100_percent_when_the_features_are_the_labels():
    # The hidden layer passes one-hot labels through (identity weights, ReLU): a linear read-out separates them.
    class OneHot(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.relu, self.out = nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10)
            with torch.no_grad():
                self.hidden.weight.copy_(torch.eye(10))
                self.hidden.bias.zero_()

        def forward(self, x):
            return self.out(self.relu(self.hidden(x)))

    g = torch.Generator().manual_seed(0)
    split = lambda k: (lambda y: TensorSplit(nn.functional.one_hot(y, 10).float(), y))(torch.randint(0, 10, (k,), generator=g))
    splits = DataSplits(DataConfig(), split(500), split(100), split(300), 10, (10,))
    out = probe.linear_probe(OneHot(), splits, seed=0, device="cpu")
    assert out["test_error"] == 0.0 and out["valid_error"] == 0.0
    # the standardisation folded into the head: the returned model scores the same on raw inputs
    assert (out["model"](splits.test.images).argmax(1) == splits.test.labels).all()


def test_finetune_keeps_the_mask_and_trains_the_hidden_layers():
    model, mask = _pruned_lenet("lenet300", 80.0)
    probed = probe.linear_probe(model, _random_splits(), dataclasses.replace(probe.PROBE, epochs=1), device="cpu")["model"]
    tuned, history = probe.finetune(probed, mask, _random_splits(), dataclasses.replace(probe.FINETUNE, epochs=2), device="cpu")
    state = tuned.state_dict()
    for name in ("fc1.weight", "fc2.weight"):
        assert not state[name][~mask[name]].any()
        assert not torch.equal(state[name], model.state_dict()[name])
    assert len(history) == 2


def test_cheap_layers_leave_out_lenet5_first_layer():
    model = models.build("lenet5")
    assert transfer._cheap_layers(model, torch.zeros(2, 1, 28, 28), 4096) == ["relu2", "relu3"]
    assert transfer._cheap_layers(model, torch.zeros(2, 1, 28, 28), None) == ["relu1", "relu2", "relu3"]


@pytest.mark.parametrize("seed", range(6))
def test_spearman_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    x = rng.integers(0, 6, n).astype(float) if seed % 2 else rng.normal(size=n)  # odd seeds: many ties
    y = 0.5 * x + rng.normal(size=n)
    assert rank_stats.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    np.testing.assert_allclose(rank_stats.rankdata(x), scipy.stats.rankdata(x))


def test_bootstrap_interval_and_strata():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = x + 0.5 * rng.normal(size=60)
    groups = np.repeat(["a", "b"], 30)
    y[30:] += 100  # another scale in group b: stratification must not care
    r = rank_stats.bootstrap_spearman(x, y, groups, resamples=500, seed=1)
    expected = np.mean([scipy.stats.spearmanr(x[:30], y[:30]).statistic, scipy.stats.spearmanr(x[30:], y[30:]).statistic])
    assert r.rho == pytest.approx(expected) and r.groups == 2 and r.n == 60
    assert r.low < r.rho < r.high and r.low > 0 and r.excludes_zero() == 1
    assert r == rank_stats.bootstrap_spearman(x, y, groups, resamples=500, seed=1)  # seeded
    with pytest.raises(ValueError, match="at least 3"):
        rank_stats.bootstrap_spearman([1, 2, 3, 4], [1, 2, 3, 4], ["a", "a", "b", "b"])
    assert np.isnan(rank_stats.spearman([1, 1, 1], [1, 2, 3]))


def _rows(sign):
    """Synthetic result rows: two pairs, accuracy = sign * entropy + noise, G ahead of 1-S when sign > 0."""
    rows, rng = [], np.random.default_rng(0)
    for pair, offset in (("lenet5-mnist", 0.0), ("lenet5-fashion", 20.0)):
        for i, kind in enumerate(["dense", "G", "1-S", "reinit", "random"] * 2):
            h = float(i) + (3.0 if kind == "G" else 0.0)
            rows.append({"setup": pair, "target": "t", "kind": kind, "rate": None if kind == "dense" else 80.0,
                         "seed": i // 5, "sparsity": 80.0, "probe_accuracy": offset + sign * h + 0.01 * rng.normal(),
                         "finetune_accuracy": float("nan"), "entropy1_source": h, "entropy2_source": h,
                         "entropy1_target": h, "entropy2_target": h})
    return rows


def test_verdict_is_computed_from_the_numbers():
    good = transfer.conjecture(_rows(+1), resamples=300)
    assert good["verdict"] is True and good["g_minus_1s"] > 0 and "holds in our runs" in good["statement"]
    bad = transfer.conjecture(_rows(-1), resamples=300)
    assert bad["verdict"] is False and "does not hold" in bad["statement"]
    row = transfer.claim_row(_rows(+1), "quick", resamples=300)
    assert row.id == "C6" and row.verdict is True and "rho" in row.numbers and row.seeds == [0, 1]
    assert transfer.claim_row(_rows(+1)[:2], resamples=50).verdict is None  # too few sources
    table = transfer.table(_rows(+1))
    assert "transfer-table" in table._repr_html_() and table.markdown.count("\n") == 1 + 10  # head + 10 groups


def test_bad_pairs_and_missing_target(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no adapter"):
        transfer.check_pair(transfer.experiment_setup("resnet32-cifar10", "smoke"), "mnist-5k")
    with pytest.raises(ValueError, match="valid targets: mnist-5k, mnist, fashion-mnist"):
        transfer.check_pair(transfer.experiment_setup("lenet5/fashion-mnist", "smoke"), DataConfig("cifar10"))
    with pytest.raises(ValueError, match="unknown target"):
        transfer.target_config("svhn")
    with pytest.raises(ValueError, match="milestone"):
        transfer.Source(transfer.experiment_setup("lenet300-mnist", "smoke"), "G")
    with pytest.raises(ValueError, match="unknown source kind"):
        transfer.Source(transfer.experiment_setup("lenet300-mnist", "smoke"), "lottery", 50.0)
    assert transfer.default_pairs(["lenet5-fashion", "resnet32-cifar10"], "smoke") == (
        [("lenet5-fashion", "mnist-5k")], ["resnet32-cifar10"])
    monkeypatch.setenv("PSPUTIL_DATA", str(tmp_path / "nothing"))
    setup = transfer.experiment_setup("lenet300-mnist", "smoke")
    with pytest.raises(FileNotFoundError, match="'mnist' not found"):  # before any training
        transfer.run_pair(setup, DataConfig("mnist"), store=tmp_path / "store", device="cpu")
    assert not (tmp_path / "store").exists()


def _fashion_available():
    try:
        data.load(DataConfig("fashion-mnist", train_size=10, test_size=10))
        return True
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _fashion_available(), reason="the smoke pair's target (Fashion-MNIST) is not installed")
def test_chapter_runs_under_papermill_with_the_smoke_profile(tmp_path_factory):
    import nbformat
    from test_sections import build_smoke_book  # the smoke book, executed once per session

    _, executed, _ = build_smoke_book(tmp_path_factory.mktemp("smoke-book"))
    nb = nbformat.read(executed / "transfer.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["finetune_epochs"] == 1  # smoke/transfer.yaml was applied
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs if "data" in o)
    assert "transfer-table" in html and "lenet300-mnist -&gt; fashion-mnist" in html
    assert "<td>C6</td>" in html and "About this run" in html
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)  # the slider


def test_the_probe_settings_always_enter_the_run_key():
    from psputil import store

    source = transfer.Source(transfer.experiment_setup("lenet300-mnist", "smoke"), "dense")
    run = transfer.TransferRun(source, DataConfig("fashion-mnist"), probe.PROBE, 0, 1000, 4096)
    fields = store.describe(run)["fields"]
    assert {"probe", "seed", "entropy_samples", "order2_max_neurons"} <= set(fields)  # even at their usual values
    other = dataclasses.replace(run, probe=dataclasses.replace(probe.PROBE, lr=0.01))
    assert store.key(run) != store.key(other)
