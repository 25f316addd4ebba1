"""Issue 14, API: every bad input is refused with a ValueError naming it, before any compute; models come back as they were."""

import math

import pytest
import torch
from torch import nn

from psputil import landscape, models, pruning, psp
from psputil.data import DataConfig, DataSplits, TensorSplit
from psputil.metrics import Error, Loss
from psputil.scale import executors
from psputil.train import TrainConfig
from psputil.transfer import probe


def lenet_batch(n=8, shape=(1, 28, 28), classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


class Counted:
    """Counts forward passes of a model (to show that a check ran before any compute)."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_pre_hook(lambda module, inputs: setattr(self, "calls", self.calls + 1))


def modes(model):
    return {name: m.training for name, m in model.named_modules()}


def mixed_modes(model):
    """Training mode with some submodules in eval mode: what a caller might hand over."""
    model.train()
    for index, module in enumerate(model.children()):
        if index % 2:
            module.eval()
    return model


# --- models.build ------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": True}, "num_classes must be an integer >= 2, got True (bool)"),
    ({"num_classes": 10.0}, "num_classes must be an integer >= 2, got 10.0 (float)"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
    ({"seed": "a"}, "seed must be an integer >= 0, got 'a' (str)"),
    ({"seed": 1.5}, "seed must be an integer >= 0, got 1.5"),
])
def test_build_refuses_bad_numbers(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.build("lenet300", **kwargs)


def test_build_refuses_unknown_names_and_knows_input_shapes():
    with pytest.raises(ValueError, match="unknown model 'vgg16'; valid: lenet300, lenet5, resnet32"):
        models.build("vgg16")
    assert models.input_shape(models.build("lenet5")) == (1, 28, 28)
    assert models.num_outputs(models.build("lenet300", num_classes=7)) == 7
    assert models.input_shape(nn.Linear(2, 2)) is None


# --- masks --------------------------------------------------------------------------------


def test_masks_must_be_bool_tensors():
    with pytest.raises(ValueError, match=r"reference\['a'\] must be a bool tensor .*got a torch.float32 tensor"):
        pruning.random_mask({"a": torch.tensor([0.5, 0.5, 0.7])}, 0)
    with pytest.raises(ValueError, match="mask must be a dict"):
        pruning.check_mask(models.build("lenet300"), None)
    with pytest.raises(ValueError, match="mask is empty"):
        pruning.mask_sparsity({})
    with pytest.raises(ValueError, match=r"mask\['w'\] must be a bool tensor"):
        pruning.survivors({"w": [True, False]})


@pytest.mark.parametrize("seed", ["1", 1.5, True, -1])
def test_random_mask_seed_must_be_an_integer(seed):
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        pruning.random_mask({"a": torch.ones(3, dtype=torch.bool)}, seed)


def test_a_target_or_mask_that_removes_every_weight_is_refused():
    model = models.build("lenet300")
    with pytest.raises(ValueError, match="prunes all 266610 weights of the model; the largest target that keeps one"):
        pruning.magnitude_mask(model, 99.99999999)
    with pytest.raises(ValueError, match=r"target sparsity \(percent\) must be a finite number in \[0, 100\)"):
        pruning.magnitude_mask(model, "90")
    with pytest.raises(ValueError, match=r"target sparsity \(percent\) must be a finite number"):
        pruning.magnitude_mask(model, float("nan"))
    empty = {name: torch.zeros_like(m) for name, m in pruning.full_mask(model).items()}
    with pytest.raises(ValueError, match=r"mask prunes every weight \(100 % sparsity\)"):
        pruning.MaskHook(empty)
    assert pruning.survivors(pruning.random_mask(empty, 0))["fc1.weight"] == 0  # a random copy of it is fine


# --- PSP ----------------------------------------------------------------------------------


def test_entropy_refuses_a_state_table_beyond_the_limit_before_any_pass():
    model = models.build("lenet300")
    counter = Counted(model)
    with pytest.raises(ValueError, match=r"order 40 needs a table of 10 classes x 3 subsets x 2\^40 joint states "
                                         r"\(int64\) = 240 TiB per pass, above the limit of 1 GiB "
                                         r"\(MAX_STATE_TABLE_BYTES in psputil/psp/entropy.py\); lower the order to "
                                         r"at most 22"):
        psp.entropy(model, [lenet_batch()], order=40, samples=3)
    assert counter.calls == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": "relu1"}, r"layers must be a list of names such as \['relu1', 'relu2'\], got 'relu1'"),
    ({"layers": []}, "layers is empty: pass None to analyse every ReLU layer"),
    ({"layers": ["fc1"]}, r"unknown relu layers \['fc1'\]; valid: \['relu1', 'relu2'\]"),
    ({"order": 1.5}, "order must be an integer >= 1, got 1.5"),
    ({"order": True}, "order must be an integer >= 1, got True"),
    ({"order": 0}, "order must be an integer >= 1, got 0"),
    ({"eps": 0.5}, r"eps must be a finite number in \[0.0, 0.5\), got 0.5"),
    ({"eps": float("nan")}, "eps must be a finite number"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
    ({"num_classes": True}, "num_classes must be an integer >= 2, got True"),
    ({"order": 3, "samples": 1}, "samples must be an integer >= 2, got 1"),
])
def test_entropy_argument_errors(kwargs, message):
    model = models.build("lenet300")
    counter = Counted(model)
    with pytest.raises(ValueError, match=message):
        psp.entropy(model, [lenet_batch()], **kwargs)
    assert counter.calls == 0


@pytest.mark.parametrize("fn", [psp.entropy, psp.l2])
def test_psp_batches_share_the_data_check(fn):
    model = models.build("lenet300")
    counter = Counted(model)
    x, y = lenet_batch()
    with pytest.raises(ValueError, match="the model expects samples of shape 1x28x28, but batch 0 holds samples of "
                                         "shape 3x32x32"):
        fn(model, [(torch.randn(8, 3, 32, 32), y)])
    with pytest.raises(ValueError, match="the labels of batch 0 must be a 1-D tensor of integer class indices"):
        fn(model, [(x, y.float())])
    if fn is psp.entropy:  # the L2 norm only counts samples: any class index will do
        with pytest.raises(ValueError, match=r"the labels of batch 1 must lie in \[0, 10\)"):
            fn(model, [(x, y), (x, y + 10)])
    else:
        fn(model, [(x, y), (x, y + 10)])
    with pytest.raises(ValueError, match="batch 0 must be a pair"):
        fn(model, [x])
    with pytest.raises(ValueError, match="batches must be an iterable of"):
        fn(model, x)
    assert counter.calls == (1 if fn is psp.entropy else 2)  # only batches that passed the check ran


# --- every public function leaves the model's modes as it found them ----------------------


def _splits(n=(40, 20, 20)):
    make = lambda k, seed: TensorSplit(*lenet_batch(k, seed=seed))
    return DataSplits(DataConfig(), make(n[0], 1), make(n[1], 2), make(n[2], 3), 10, (1, 28, 28))


def test_train_eval_modes_are_left_as_found():
    model = mixed_modes(models.build("lenet5"))
    other = mixed_modes(models.build("lenet5", seed=1))
    before = modes(model)
    assert len(set(before.values())) == 2
    batch = [lenet_batch()]
    psp.entropy(model, batch)
    psp.entropy(model, batch, order=2, layers=["relu3"])
    psp.l2(model, batch)
    splits = _splits()
    probe.features(model, splits.test)
    config = TrainConfig(epochs=1, batch_size=20)
    probed = probe.linear_probe(model, splits, config, device="cpu")
    head = mixed_modes(probed["model"])
    head_modes = modes(head)
    probe.finetune(head, pruning.full_mask(model), splits, config, device="cpu")
    assert modes(head) == head_modes
    plane = landscape.plane_through(model, other)
    landscape.evaluate_grid(plane, [0.0, 1.0], [0.0], batch, progress=False)
    assert modes(model) == before and modes(other) == before


def test_probe_argument_errors():
    model = models.build("lenet5")
    splits = _splits()
    with pytest.raises(ValueError, match="the model expects samples of shape 1x28x28, but the split holds"):
        probe.features(model, TensorSplit(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        probe.features(model, splits.test, batch_size=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got 'a'"):
        probe.linear_probe(model, splits, seed="a")
    with pytest.raises(ValueError, match="config must be a train.TrainConfig"):
        probe.linear_probe(model, splits, config={"epochs": 1})
    with pytest.raises(ValueError, match="mask must be a dict"):
        probe.finetune(model, None, splits, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=r"the labels of the train split must lie in \[0, 10\)"):
        bad = DataSplits(DataConfig(), TensorSplit(splits.train.images, splits.train.labels + 10), splits.valid,
                         splits.test, 10, (1, 28, 28))
        probe.linear_probe(model, bad)


# --- executors ----------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (("process-pool", "abc"), r"workers must be an integer >= 1 or None, got 'abc' \(str\)"),
    (("process-pool", 0), "workers must be an integer >= 1, got 0"),
    (("process-pool", 2.5), "workers must be an integer >= 1 or None, got 2.5"),
    (("in-process", None, "head:6379"), r"a cluster address \('head:6379'\) only applies to the ray executor"),
    (("ray", None, 6379), "address must be None or a Ray cluster address"),
    (("threads",), "unknown executor 'threads'; valid: in-process, process-pool, ray"),
])
def test_executor_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        executors.make(*args)


# --- the loss-plane grid ------------------------------------------------------------------


class NeedsTwo(nn.Module):
    """A small net that, like a layer with batch statistics, cannot run on a single sample."""

    input_shape = (4,)

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.relu1, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x):
        if x.shape[0] < 2:
            raise RuntimeError("this model needs at least two samples per batch")
        return self.fc2(self.relu1(self.fc1(x)))


def test_grid_never_runs_a_model_on_one_sample():
    g, s = NeedsTwo(0), NeedsTwo(1)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    plane = landscape.plane_through(g, s)
    maps = landscape.evaluate_grid(plane, [0.0, 1.0], [0.0], [(x, y)], metrics=[Loss(), psp.PSPL2()],
                                   progress=False)
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(g(x), y).item()
    assert maps["loss"][0, 0] == pytest.approx(direct, rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"a_values": [math.nan]}, "a_values must be a non-empty 1-D sequence of finite floats"),
    ({"a_values": "abc"}, "a_values must be a non-empty 1-D sequence of finite floats"),
    ({"b_values": [[0.0, 1.0]]}, "b_values must be a non-empty 1-D sequence"),
    ({"metrics": Loss()}, "metrics must be a sequence of Metric objects"),
    ({"metrics": [Loss(), "error"]}, "metrics must be psputil.metrics.Metric objects"),
    ({"points_per_pass": True}, "points_per_pass must be an integer >= 1, got True"),
    ({"progress": "no"}, "progress must be True or False"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"plane": "plane"}, "plane must be a landscape.Plane"),
    ({"batches": "abc"}, "batches must be a TensorSplit or a list"),
])
def test_grid_argument_errors(kwargs, message):
    g, s = models.build("lenet300"), models.build("lenet300", seed=1)
    counter = Counted(g)
    plane = landscape.plane_through(g, s)
    arguments = {"plane": plane, "a_values": [0.0], "b_values": [0.0], "batches": TensorSplit(*lenet_batch()),
                 "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        landscape.evaluate_grid(**arguments)
    assert counter.calls == 0


def test_grid_checks_every_batch_before_any_compute():
    g, s = models.build("lenet300"), models.build("lenet300", seed=1)
    plane = landscape.plane_through(g, s)
    template = Counted(plane.template)
    x, y = lenet_batch()
    with pytest.raises(ValueError, match=r"the labels of batch 1 must lie in \[0, 10\) for a model with 10 outputs"):
        landscape.evaluate_grid(plane, [0.0], [0.0], [(x, y), (x, y + 10)], progress=False)
    with pytest.raises(ValueError, match="the model expects samples of shape 1x28x28, but the data holds samples "
                                         "of shape 3x32x32"):
        landscape.evaluate_grid(plane, [0.0], [0.0], TensorSplit(torch.randn(4, 3, 32, 32), y[:4]), progress=False)
    with pytest.raises(ValueError, match="the data has no samples"):
        landscape.evaluate_grid(plane, [0.0], [0.0], TensorSplit(x[:0], y[:0]), progress=False)
    assert template.calls == 0
    assert Error().name == "error"


def test_grid_checks_labels_against_the_metrics_classes_too():
    g, s = models.build("lenet300"), models.build("lenet300", seed=1)
    plane = landscape.plane_through(g, s)
    x, y = lenet_batch()
    with pytest.raises(ValueError, match=r"the labels of batch 0 must lie in \[0, 4\)"):
        landscape.evaluate_grid(plane, [0.0], [0.0], [(x, y % 4 + 4)], metrics=[psp.PSPEntropy(1, num_classes=4)],
                                progress=False)
