"""Beyond the paper: do high-entropy sparse features transfer better? (linear probes, fine-tuning)

A *source* is a network trained on one task (``Source``): untrained ("init"), dense,
G (LOBSTER) and 1-S (one-shot) at a milestone, and the "reinit"/"random" retraining
controls of Section 5.1 from G's mask there. Its hidden layers are frozen and a new,
dense linear read-out is trained on a *target* data set (``psputil.probe``);
optionally the whole network is then fine-tuned with its mask kept. Each source also
gets its first- and second-order PSP-entropy on the source data and on the target data.

One ``TransferRun`` is one unit of work (``compute_transfer``) cached in the store
under "transfer"; ``run_pair`` computes (or loads) the sources through the cached
units of ``psputil.experiments`` and sweeps the probes. The analysis (rank
correlations, the verdict, claim C6, the table) is in ``psputil.transfer_analysis``
and re-exported here.

Adapters: none. Source and target must have the same input shape (the LeNets take
1x28x28: mnist-5k, mnist, fashion-mnist; ResNet-32 takes 3x32x32: cifar10 only).
"""

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch

from psputil import data as datasets
from psputil import devices, models, pruning, psp
from psputil.experiments import runs as experiments
from psputil.pruning import lobster
from psputil.scale import sweep
from psputil.psp.activations import capture_psps
from psputil.data import DataConfig
from psputil.experiments.runs import ControlRun, Setup
from psputil.transfer.probe import PROBE, finetune, linear_probe
from psputil.store import RunStore
from psputil.train import TrainConfig, evaluate
from psputil.transfer.analysis import claim_row, conjecture, pair_label, table  # noqa: F401 (re-exported)

SOURCE_KINDS = ("init", "dense", "G", "1-S", "reinit", "random")
SPARSE_KINDS = ("G", "1-S", "reinit", "random")  # need a milestone
DATASET_SHAPES = {name: facts.input_shape for name, facts in datasets.DATASETS.items()}
# Default target of a source data set: the other grey 28x28 data set (CIFAR-10 has none).
DEFAULT_TARGETS = {"mnist-5k": "fashion-mnist", "mnist": "fashion-mnist", "fashion-mnist": "mnist-5k"}


@dataclass(frozen=True)
class Source:
    """One source network (all of it enters the run key).

    Attributes:
        setup: the ``experiments.Setup`` it was trained in.
        kind: one of ``SOURCE_KINDS``.
        rate: G's milestone in percent (sparse kinds only; None otherwise).
        seed: model seed ("init"), dense/1-S/control seed, or G's LOBSTER seed.
        lobster_seed: the LOBSTER run whose mask and sparsity "1-S" and the controls match.
    """

    setup: Setup
    kind: str
    rate: Optional[float] = None
    seed: int = 0
    lobster_seed: int = 0

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; valid: {', '.join(SOURCE_KINDS)}")
        if (self.rate is None) == (self.kind in SPARSE_KINDS):
            raise ValueError(f"source {self.kind!r}: a milestone rate is needed exactly for {', '.join(SPARSE_KINDS)}")


@dataclass(frozen=True)
class TransferRun:
    """One source probed on one target (the unit of work of this chapter).

    Only fields that differ from their defaults enter a run key (``store.describe``), so
    every field whose meaning could change has no default and always enters it.
    """

    source: Source
    target: DataConfig
    probe: TrainConfig  # the read-out's training (``probe.PROBE``)
    seed: int  # read-out init and batch order
    entropy_samples: int  # test samples (source and target) the entropies are computed on
    order2_max_neurons: Optional[int]  # second order only on layers this small (None: all)
    finetune: Optional[TrainConfig] = None  # whole masked network after the probe; None: skip


def experiment_setup(name, profile="quick"):
    """The ``experiments.Setup`` of "lenet5/fashion-mnist"-style or "lenet5-fashion"-style names."""
    if "/" in str(name):
        model, _, dataset = str(name).partition("/")
        suffix = {"mnist-5k": "mnist", "mnist": "mnist", "fashion-mnist": "fashion", "cifar10": "cifar10"}.get(dataset, dataset)
        name = f"{model}-{suffix}"
    return experiments.setup(name, profile)


def target_config(name, profile="quick"):
    """The target ``DataConfig`` of data set `name` in `profile` (smoke: tiny; quick: CPU minutes)."""
    if name not in DATASET_SHAPES:
        raise ValueError(f"unknown target data set {name!r}; valid: {', '.join(DATASET_SHAPES)}")
    if profile == "paper":
        return DataConfig("mnist" if name == "mnist-5k" else name)
    if profile == "smoke":
        return DataConfig(name, valid_fraction=0.01 if name != "mnist-5k" else 0.1, train_size=600, test_size=300)
    if profile != "quick":
        raise ValueError(f"unknown profile {profile!r}; valid: smoke, quick, paper")
    return DataConfig(name) if name == "mnist-5k" else DataConfig(name, valid_fraction=0.05, train_size=3000, test_size=2000)


def check_pair(setup, target):
    """Raise ValueError unless the source setup's model takes the target's inputs (no adapters exist)."""
    name = target.name if isinstance(target, DataConfig) else target
    if name not in DATASET_SHAPES:
        raise ValueError(f"unknown target data set {name!r}; valid: {', '.join(DATASET_SHAPES)}")
    expects = models.INPUT_SHAPES[setup.model]
    if DATASET_SHAPES[name] != expects:
        fits = [n for n, s in DATASET_SHAPES.items() if s == expects]
        raise ValueError(
            f"source {setup.name} ({setup.model}) takes {'x'.join(map(str, expects))} inputs but target {name} has "
            f"{'x'.join(map(str, DATASET_SHAPES[name]))}; no adapter is documented; valid targets: {', '.join(fits)}"
        )


def default_pairs(setups, profile="quick"):
    """(source setup name, target data set) for each setup with a default target, and the skipped setups."""
    pairs, skipped = [], []
    for name in setups:
        setup = experiment_setup(name, profile)
        target = DEFAULT_TARGETS.get(setup.data.name)
        (pairs.append((setup.name, target)) if target else skipped.append(setup.name))
    return pairs, skipped


def source_model(source, store=None, device="auto", progress=False):
    """The source network as a ready model (eval mode): (model, mask), computed or loaded through the store."""
    s, store = source.setup, _store(store)
    if source.kind == "init":
        model = models.build(s.model, seed=source.seed)
        return model.to(devices.resolve(device)).eval(), pruning.full_mask(model)
    if source.kind == "dense":
        state = experiments.dense_run(s, source.seed, store, device, progress)["state"]
        model = experiments._model(s, state, device)
        return model, pruning.full_mask(model)
    if source.kind == "G":
        model, mask, _ = experiments.g_model(s, source.rate, source.seed, store, device, progress)
        return model, mask
    checkpoint, row = experiments.g_checkpoint(s, source.rate, source.lobster_seed, store, device, progress)
    if source.kind == "1-S":
        result = experiments.oneshot_run(s, row["sparsity"], source.seed, store, device, progress)
    else:
        run = ControlRun(s, source.kind, float(source.rate), source.seed, source.lobster_seed)
        result = store.cached("control", run, "result",
                              lambda: experiments.compute_control(run, checkpoint["mask"], device, progress))
    return experiments._model(s, result["state"], device), result["mask"]


def compute_transfer(run, store=None, device="auto", download=False, progress=False):
    """Probe (and optionally fine-tune) one source on its target; entropies on source and target data.

    Returns:
        dict of plain values: source "setup", "kind", "rate", "seed", "sparsity" (percent),
        "target", "probe_accuracy" and "probe_valid_accuracy" (percent), "finetune_accuracy"
        (nan without fine-tuning), "entropy1_source", "entropy2_source", "entropy1_target",
        "entropy2_target" (bits), "order2_layers".
    """
    source = run.source
    check_pair(source.setup, run.target)
    model, mask = source_model(source, store, device, progress)
    target = _load(run.target, str(devices.resolve(device)), download)
    probe = linear_probe(model, target, run.probe, run.seed, device, progress)
    tuned = math.nan
    if run.finetune is not None:
        tuned_model, _ = finetune(probe["model"], mask, target, run.finetune, run.seed, device, progress)
        tuned = 100.0 - evaluate(tuned_model, target.test.to(_device(tuned_model)))[1]
    cheap = _cheap_layers(model, target.test.images, run.order2_max_neurons)
    out = {"setup": source.setup.name, "kind": source.kind, "rate": source.rate, "seed": source.seed,
           "sparsity": pruning.sparsity(model), "target": run.target.name,
           "probe_accuracy": 100.0 - probe["test_error"], "probe_valid_accuracy": 100.0 - probe["valid_error"],
           "finetune_accuracy": tuned, "order2_layers": cheap}
    source_data = _load(source.setup.data, str(devices.resolve(device)), download)
    for where, splits in (("source", source_data), ("target", target)):
        batches = list(splits.test.subset(run.entropy_samples, seed=0).batches(250))
        out[f"entropy1_{where}"] = psp.entropy(model, batches, order=1).total
        out[f"entropy2_{where}"] = psp.entropy(model, batches, order=2, layers=cheap).total if cheap else math.nan
    return out


def sources(setup, rates, seeds=(0,), lobster_seeds=(0,), kinds=SOURCE_KINDS):
    """The ``Source``s of one setup: non-sparse kinds per seed, sparse kinds per rate and seed (G: per LOBSTER seed)."""
    unknown = [k for k in kinds if k not in SOURCE_KINDS]
    if unknown:
        raise ValueError(f"unknown source kinds {unknown}; valid: {', '.join(SOURCE_KINDS)}")
    out = [Source(setup, k, None, s) for k in kinds if k not in SPARSE_KINDS for s in seeds]
    for rate in rates:
        for kind in (k for k in kinds if k in SPARSE_KINDS):
            for seed in (lobster_seeds if kind == "G" else seeds):
                out.append(Source(setup, kind, float(rate), seed, lobster_seeds[0]))
    return out


def reached_rates(setup, rates, lobster_seeds=(0,), store=None, device="auto", progress=False):
    """(usable rates, skipped rates) of G: skipped if some LOBSTER seed never reached it, or if it
    falls on the same pruning event (same G) as an earlier rate. Runs or loads the LOBSTER runs."""
    reached, skipped, events = [], [], set()
    summaries = [experiments.lobster_run(setup, s, store, device, progress) for s in lobster_seeds]
    for rate in rates:
        if not all(any(row["sparsity"] >= rate for row in summary["events"]) for summary in summaries):
            skipped.append(float(rate))
            continue
        event = lobster.event_at(summaries[0]["events"], rate)
        (skipped if event in events else reached).append(float(rate))
        events.add(event)
    return reached, skipped


def run_pair(setup, target, rates=None, seeds=(0,), lobster_seeds=(0,), kinds=SOURCE_KINDS, probe=PROBE,
             finetune=None, entropy_samples=1000, order2_max_neurons=4096, store=None, device="auto",
             download=False, executor=None, progress=False):
    """Every source of `setup` probed on `target`: (result rows, skipped rates).

    The sources come from the cached units of ``psputil.experiments`` (controls through
    ``sweep`` on `executor`), then the probes are swept on `executor` into stage "transfer".

    Args:
        setup: source ``Setup``; target: ``DataConfig`` (checked: same input shape).
        rates: G milestones in percent (default ``setup.milestones``); those G never reached are skipped.
        seeds, lobster_seeds: seeds of dense/1-S/controls/init and of G's LOBSTER runs.
        kinds, probe, finetune, entropy_samples, order2_max_neurons: as ``Source``/``TransferRun``.
        download: let torchvision download a missing target (else FileNotFoundError).
    """
    check_pair(setup, target)
    store = _store(store)
    _load(target, str(devices.resolve(device)), download)  # a missing target fails before any training
    rates, skipped = reached_rates(setup, setup.milestones if rates is None else rates, lobster_seeds, store, device, progress)
    chosen = sources(setup, rates, tuple(seeds), tuple(lobster_seeds), kinds)
    controls = [ControlRun(setup, s.kind, s.rate, s.seed, s.lobster_seed) for s in chosen if s.kind in ("reinit", "random")]
    for rate in rates:  # the controls share G's mask at their milestone: one sweep each
        checkpoint, _ = experiments.g_checkpoint(setup, rate, lobster_seeds[0], store, device, progress)
        unit = functools.partial(experiments.compute_control, g_mask=checkpoint["mask"], device=device)
        _raise_failed(sweep.run(unit, [c for c in controls if c.milestone == rate], "control", store,
                                executor=executor, resources=experiments.resources, progress=progress))
    if "1-S" in kinds and rates:  # 1-S at G's exact sparsities, with their dense runs, as sweeps
        sparsities = {experiments.g_checkpoint(setup, r, lobster_seeds[0], store, device, progress)[1]["sparsity"]
                      for r in rates}
        experiments.oneshot_runs(setup, sorted(sparsities), list(seeds), store, device, progress, executor)
    for s in chosen:  # dense runs of the sources (1-S computed them already)
        if s.kind == "dense":
            experiments.dense_run(setup, s.seed, store, device, progress)
    runs = [TransferRun(s, target, probe, s.seed, entropy_samples, order2_max_neurons, finetune) for s in chosen]
    unit = functools.partial(compute_transfer, store=str(store.root), device=device, download=download)
    _raise_failed(sweep.run(unit, runs, "transfer", store, executor=executor, resources=resources, progress=progress))
    return sweep.results(runs, "transfer", store), skipped


def resources(run):
    """Ray resources of one ``TransferRun``: those of its source's setup (``experiments.resources``)."""
    return experiments.resources(run.source)


def _raise_failed(report):
    if not report.ok:
        raise sweep.SweepFailed(report)


def _cheap_layers(model, sample, limit):
    """The ReLU layers with at most `limit` neurons (all of them for None), sized by one forward pass."""
    sink = {}
    with torch.no_grad(), capture_psps(model, sink):
        model(sample[:1].to(_device(model)))
    return [name for name, z in sink.items() if limit is None or z[0].numel() <= limit]


@functools.lru_cache(maxsize=4)
def _load(config, device, download=False):
    return datasets.load(config, device, download=download)


def _store(store):
    return store if isinstance(store, RunStore) else RunStore(store)


def _device(model):
    return next(model.parameters()).device
