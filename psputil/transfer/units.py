"""Beyond the paper: do high-entropy sparse features transfer better? The sources and the probe unit.

A *source* is a network trained on one task (``Source``): untrained ("init"), dense,
G (LOBSTER's best network at a level) and 1-S (one shot at G's exact sparsity) of one
``analysis.Pair``, and the "reinit"/"random" retraining controls of Section 5.1 from
G's mask. Its hidden layers are frozen and a new, dense linear read-out is trained on
a *target* data set (``psputil.transfer.probe``); optionally the whole network is then
fine-tuned with its mask kept. Each source also gets its first- and second-order
PSP-entropy on the source data and on the target data.

One ``TransferRun`` is one unit of work (``compute_transfer``). The driver
(``psputil.transfer.study``) resolves each source's state and mask from the cached
experiments and hands them to the unit, which never reads or writes the store.

Adapters: none. Source and target must have the same input shape (the LeNets take
1x28x28: mnist-5k, mnist, fashion-mnist; ResNet-32 takes 3x32x32: cifar10 only).
"""

import math
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from psputil import checks, data, models, pruning, psp
from psputil.experiments.analysis import Pair
from psputil.experiments.units import ControlRun, DenseRun, load_splits
from psputil.psp.activations import capture_psps
from psputil.train import TrainConfig, evaluate, eval_mode
from psputil.transfer.probe import finetune, linear_probe

SOURCE_KINDS = ("init", "dense", "G", "1-S", "reinit", "random")
ORIGIN = {"init": type(None), "dense": DenseRun, "G": Pair, "1-S": Pair, "reinit": ControlRun, "random": ControlRun}


@dataclass(frozen=True)
class Source:
    """One source network: its kind and the stage config its weights come from (all of it enters the run key).

    Attributes:
        kind: one of ``SOURCE_KINDS``.
        model: the architecture.
        data: the source task's data (for the source-data entropies).
        origin: None ("init"), a ``DenseRun`` ("dense"), an ``analysis.Pair`` ("G", "1-S") or a
            ``ControlRun`` ("reinit", "random").
        seed: the model seed of an "init" source (0 otherwise).
    """

    VERSION: ClassVar[int] = 2  # 2: sources named by their stage configs; G is the best network at its level

    kind: str
    model: str
    data: data.DataConfig
    origin: Optional[object] = None
    seed: int = 0

    def __post_init__(self):
        checks.choice("source kind", self.kind, SOURCE_KINDS)
        if not isinstance(self.origin, ORIGIN[self.kind]):
            raise ValueError(f"a {self.kind!r} source needs an origin of type {ORIGIN[self.kind].__name__}, "
                             f"got {type(self.origin).__name__}")
        checks.integer("seed", self.seed, 0)

    @property
    def rate(self):
        """The compression rate asked of G (percent) for sparse kinds, else None."""
        return getattr(self.origin, "rate", None)


@dataclass(frozen=True)
class TransferRun:
    """One source probed on one target (the unit of work of this chapter)."""

    STAGE: ClassVar[str] = "transfer"  # its folder in the run store
    VERSION: ClassVar[int] = 3  # 3: results record their compute "seconds"

    source: Source
    target: data.DataConfig
    probe: TrainConfig  # the read-out's training (``probe.PROBE``)
    seed: int  # read-out init and batch order
    entropy_samples: int  # test samples (source and target) the entropies are computed on
    order2_max_neurons: Optional[int]  # second order only on layers this small (None: all)
    finetune: Optional[TrainConfig] = None  # whole masked network after the probe; None: skip

    def __post_init__(self):
        check_pair(self.source.model, self.target.name)
        checks.integer("seed", self.seed, 0)
        checks.integer("entropy_samples", self.entropy_samples, 1)
        checks.integer("order2_max_neurons", self.order2_max_neurons, 1, optional=True)


def check_pair(model, target):
    """Raise ValueError unless architecture `model` takes the inputs of data set `target` (no adapters exist)."""
    expects = models.INPUT_SHAPES[checks.choice("model", model, models.MODEL_NAMES)]
    shape = data.info(target).input_shape
    if shape != expects:
        fits = [n for n, facts in data.DATASETS.items() if facts.input_shape == expects]
        raise ValueError(
            f"{model} takes {'x'.join(map(str, expects))} inputs but target {target} has "
            f"{'x'.join(map(str, shape))}; no adapter is documented; valid targets: {', '.join(fits)}"
        )


def compute_transfer(run, state, mask, device="cpu"):
    """Probe (and optionally fine-tune) one source on its target; entropies on source and target data.

    Args:
        run: a ``TransferRun``.
        state, mask: the source network's state dict and mask, resolved by the driver.

    Returns:
        dict of plain values: "kind", "rate", "sparsity" (percent), "target", "probe_accuracy" and
        "probe_valid_accuracy" (percent), "finetune_accuracy" (nan without fine-tuning),
        "entropy1_source", "entropy2_source", "entropy1_target", "entropy2_target" (bits), "order2_layers",
        "seconds" (wall time of this unit).
    """
    start = time.perf_counter()
    source = run.source
    model = models.build(source.model)
    model.load_state_dict(state)
    model = model.to(device).eval()
    target = load_splits(run.target, device)
    probe = linear_probe(model, target, run.probe, run.seed, device)
    tuned = math.nan
    if run.finetune is not None:
        tuned_model, _ = finetune(probe["model"], mask, target, run.finetune, run.seed, device)
        tuned = 100.0 - evaluate(tuned_model, target.test.to(device))[1]
    source_data = load_splits(source.data, device)
    cheap = _cheap_layers(model, source_data.test.images, run.order2_max_neurons)
    out = {"kind": source.kind, "rate": source.rate, "sparsity": pruning.sparsity(model), "target": run.target.name,
           "probe_accuracy": 100.0 - probe["test_error"], "probe_valid_accuracy": 100.0 - probe["valid_error"],
           "finetune_accuracy": tuned, "order2_layers": cheap}
    for where, splits in (("source", source_data), ("target", target)):
        batches = list(splits.test.subset(run.entropy_samples, seed=0).batches(250))
        out[f"entropy1_{where}"] = psp.entropy(model, batches, order=1).total
        out[f"entropy2_{where}"] = psp.entropy(model, batches, order=2, layers=cheap).total if cheap else math.nan
    out["seconds"] = time.perf_counter() - start
    return out


def resources(run):
    """Ray resources of one ``TransferRun``: one CPU and a GPU share by architecture."""
    from psputil.experiments.units import GPU_SHARE

    return {"num_cpus": 1, "num_gpus": GPU_SHARE[run.source.model]}


@torch.no_grad()
def _cheap_layers(model, images, limit):
    """The ReLU layers with at most `limit` neurons (all of them for None), sized by one forward pass."""
    sink = {}
    with eval_mode(model), capture_psps(model, sink):
        model(images[:2].to(next(model.parameters()).device))
    return [name for name, z in sink.items() if limit is None or z[0].numel() <= limit]
