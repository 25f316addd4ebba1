"""Transfer chapter: linear probes, masked fine-tuning, the units and their driver, the notebook (smoke).

The statistics (rank correlation, clustered bootstrap, C6) are tested in tests/test_transfer_analysis.py.
"""

import copy
import dataclasses

import os

import pytest
import torch
from torch import nn

from psputil import data, models, pruning, store
from psputil.data import DataConfig, DataSplits, TensorSplit
from psputil.experiments import analysis, setups
from psputil.scale import context
from psputil.transfer import analysis as transfer_analysis
from psputil.transfer import probe, study
from psputil.transfer import units as transfer


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


def test_bad_pairs_and_missing_target(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no adapter"):
        transfer.check_pair("resnet32", "mnist-5k")
    with pytest.raises(ValueError, match="valid targets: mnist-5k, mnist, fashion-mnist"):
        transfer.check_pair("lenet5", "cifar10")
    with pytest.raises(ValueError, match="target data set"):
        study.target_config("svhn")
    smoke = setups.setup("lenet300-mnist", "smoke")
    with pytest.raises(ValueError, match="needs an origin of type Pair"):
        transfer.Source("G", smoke.model, smoke.data)
    with pytest.raises(ValueError, match="unknown source kind"):
        transfer.Source("lottery", smoke.model, smoke.data, analysis.pair(smoke, 30.0, 0))
    assert study.default_pairs(["lenet5-fashion", "resnet32-cifar10"], "smoke") == (
        [("lenet5-fashion", "mnist-5k")], ["resnet32-cifar10"])
    monkeypatch.setenv("PSPUTIL_DATA", str(tmp_path / "nothing"))
    ctx = context.make(store=tmp_path / "store", device="cpu")
    with pytest.raises(FileNotFoundError, match="'mnist' not found"):  # before any training
        study.run_pair(ctx, smoke, DataConfig("mnist"), [30.0], [0])
    assert not (tmp_path / "store").exists()


def test_sources_are_paired_by_seed_and_keyed_by_their_stage_configs():
    smoke = setups.setup("lenet300-mnist", "smoke")
    chosen = study.sources(smoke, [30.0], [0, 1])
    assert [s.kind for s in chosen] == ["init", "dense", "G", "1-S", "reinit", "random"] * 2
    for source in chosen[6:]:  # seed 1: its own LOBSTER run, dense run and init
        origin = source.origin
        seed = source.seed if source.kind == "init" else getattr(getattr(origin, "lobster", origin), "seed")
        assert seed == 1, source
    run = transfer.TransferRun(chosen[2], DataConfig("fashion-mnist"), probe.PROBE, 0, 1000, 4096)
    fields = store.describe(run)["fields"]
    assert {"probe", "seed", "entropy_samples", "order2_max_neurons"} <= set(fields)
    assert fields["source"]["fields"]["origin"]["type"] == "Pair"  # G is named by its LOBSTER run and rate
    other = dataclasses.replace(run, probe=dataclasses.replace(probe.PROBE, lr=0.01))
    assert store.key(run) != store.key(other)


def test_a_transfer_unit_on_a_pool_worker_with_an_empty_store_writes_nothing_there(tmp_path):
    smoke = setups.setup("lenet300-mnist", "smoke")
    source = transfer.Source("init", smoke.model, smoke.data, seed=0)
    run = transfer.TransferRun(source, DataConfig("mnist-5k", train_size=300, test_size=100),
                               dataclasses.replace(probe.PROBE, epochs=1), 0, 100, 4096)
    model = models.build(smoke.model, seed=0)
    empty = tmp_path / "empty-store"
    empty.mkdir()
    ctx = context.make(store=empty, device="cpu", executor="process-pool", workers=1)
    try:
        [outcome] = list(ctx.executor.run(_unit_in_store, [(run, model.state_dict(), pruning.full_mask(model),
                                                             str(empty))]))
    finally:
        ctx.close()
    assert outcome.ok, outcome.error
    assert int(outcome.worker.rsplit(":", 1)[1]) != os.getpid()
    assert 0 <= outcome.result["probe_accuracy"] <= 100
    assert list(empty.iterdir()) == []


def _unit_in_store(item):
    run, state, mask, root = item
    os.environ["PSPUTIL_STORE"] = root  # a unit that wrote to "the store" would write here
    return transfer.compute_transfer(run, state, mask, "cpu")


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
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs if "data" in o)
    assert "transfer-table" in html and "lenet300-mnist -&gt; fashion-mnist" in html
    assert "C6" in html and "About this run" in html
    assert "Figure 9:" in html and "runs transfer/" in html  # the scatter's caption names its units


@pytest.mark.skipif(not _fashion_available(), reason="the smoke pair's target (Fashion-MNIST) is not installed")
def test_rows_of_a_real_study_cluster_by_lobster_run(tmp_path_factory):
    from test_sections import build_smoke_book  # its store holds the smoke book's runs

    _, _, runs = build_smoke_book(tmp_path_factory.mktemp("smoke-book"))
    ctx = context.make(store=runs, device="cpu")
    smoke = setups.setup("lenet300-mnist", "smoke")
    rows, _, _ = study.run_pair(ctx, smoke, study.target_config("fashion-mnist", "smoke"), smoke.milestones, [0, 1])
    labels = transfer_analysis.clusters(rows)
    for seed in (0, 1):  # one cluster per LOBSTER seed: its G, 1-S, controls, dense run and init
        assert len({label for label, row in zip(labels, rows) if row["seed"] == seed}) == 1
    assert len(set(labels)) == 2
    assert all(row["lobster_seed"] == row["seed"] for row in rows if row["kind"] not in ("init", "dense"))
