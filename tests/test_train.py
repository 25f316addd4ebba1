import io
import math
import re

import pytest
import torch

from psputil import data, models, train


@pytest.fixture(scope="module")
def mnist5k():
    return data.load("mnist-5k")


def test_a_few_epochs_reduce_the_loss_and_one_seed_is_bit_identical(mnist5k):
    config = train.TrainConfig(epochs=3, lr=0.05, momentum=0.9)
    runs = []
    for _ in range(2):
        model = models.build("lenet300", seed=0)
        history = train.fit(model, mnist5k, config, seed=7, device="cpu", progress=False)
        runs.append((model, history))
    (first, history), (second, _) = runs
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["valid_error"] < 15
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    other = models.build("lenet300", seed=0)
    train.fit(other, mnist5k, config, seed=8, device="cpu", progress=False)
    assert not torch.equal(other.fc1.weight, first.fc1.weight)


def test_evaluate_matches_a_direct_computation(mnist5k):
    model = models.build("lenet5", seed=1)
    loss, error = train.evaluate(model, mnist5k.test, batch_size=128)
    with torch.no_grad():
        out = model(mnist5k.test.images)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(out, mnist5k.test.labels).item(), rel=1e-5)
    assert error == pytest.approx(100 * (out.argmax(1) != mnist5k.test.labels).float().mean().item())
    assert model.training  # mode restored


def test_non_finite_loss_names_the_epoch_and_suggests_a_lower_lr(mnist5k):
    model = models.build("lenet300", seed=0)
    with pytest.raises(train.NonFiniteLossError, match=r"epoch 1 .*lower learning rate"):
        train.fit(model, mnist5k, train.TrainConfig(epochs=2, lr=1e6), progress=False)


def test_step_schedule_follows_the_milestones(mnist5k):
    small = data.DataSplits(mnist5k.config, mnist5k.train.subset(200, 0), mnist5k.valid, mnist5k.test, 10, (1, 28, 28))
    config = train.TrainConfig(epochs=5, lr=0.1, schedule="step", milestones=(2, 4), gamma=0.1)
    history = train.fit(models.build("lenet300"), small, config, progress=False)
    assert [round(r["lr"], 6) for r in history] == [0.1, 0.1, 0.01, 0.01, 0.001]


def test_hooks_are_called_and_can_stop(mnist5k):
    small = data.DataSplits(mnist5k.config, mnist5k.train.subset(300, 0), mnist5k.valid, mnist5k.test, 10, (1, 28, 28))

    class Counter(train.Hook):
        def __init__(self):
            self.calls = {"before": 0, "backward": 0, "step": 0, "epoch": 0}

        def before_training(self, state):
            self.calls["before"] += 1

        def after_backward(self, state):
            assert state.model.fc1.weight.grad is not None
            self.calls["backward"] += 1

        def after_step(self, state):
            self.calls["step"] += 1

        def after_epoch(self, state, record):
            self.calls["epoch"] += 1
            record["seen"] = True
            return state.epoch == 2

    counter = Counter()
    history = train.fit(models.build("lenet300"), small, train.TrainConfig(epochs=10, batch_size=100), hooks=[counter], progress=False)
    assert counter.calls == {"before": 1, "backward": 6, "step": 6, "epoch": 2}
    assert len(history) == 2 and history[0]["seen"]


def test_bad_configs():
    with pytest.raises(ValueError, match="none, step, plateau"):
        train.TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match="nesterov"):
        train.TrainConfig(nesterov=True)
    with pytest.raises(ValueError, match="valid here: auto, cpu"):
        train.fit(models.build("lenet300"), None, train.TrainConfig(), device="tpu", progress=False)


@pytest.mark.parametrize("field, value, valid", [
    ("epochs", 1.5, "integer >= 0"), ("epochs", -1, "integer >= 0"), ("batch_size", 2.5, "integer >= 1"),
    ("batch_size", 0, "integer >= 1"), ("lr", math.nan, "finite number > 0"), ("lr", 0, "> 0"),
    ("lr", "0.1", "finite number"), ("momentum", -1, r"\[0, 1\)"), ("momentum", 1.0, r"\[0, 1\)"),
    ("weight_decay", -1, ">= 0"), ("weight_decay", math.inf, "finite"), ("gamma", 0, r"\(0, 1\]"),
    ("gamma", 1.5, r"\(0, 1\]"), ("milestones", (150, 100), "strictly increasing"),
    ("milestones", (0, 5), "integer >= 1"), ("milestones", (1.5,), "integer"), ("milestones", 100, "list of integers"),
    ("plateau_patience", -1, "integer >= 0"), ("plateau_cooldown", 2.5, "integer >= 0"),
    ("plateau_threshold", -1e-4, ">= 0"), ("plateau_threshold", math.inf, "finite"),
    ("nesterov", "yes", "True or False"), ("augment", 1, "True or False"), ("precision", "fp16", "fp32, bf16"),
])
def test_every_config_field_is_checked_with_a_message_naming_it_and_the_valid_values(field, value, valid):
    with pytest.raises(ValueError) as error:
        train.TrainConfig(**{field: value})
    message = str(error.value)
    assert field in message and re.search(valid, message), message
    shown = [repr(value), str(value)] + ([repr(v) for v in value] if isinstance(value, tuple) else [])
    assert any(text in message for text in shown), message


def test_config_normalises_what_it_accepts():
    config = train.TrainConfig(lr=1, milestones=[2, 5], gamma=1, schedule="step")
    assert (config.lr, config.milestones, config.gamma) == (1.0, (2, 5), 1.0) and type(config.lr) is float
    hash(config)  # frozen and hashable, milestones included


def test_plateau_schedule_with_the_authors_settings_matches_torch_and_the_hand_count():
    authors = train.TrainConfig(lr=0.1, schedule="plateau", plateau_threshold=0, plateau_cooldown=50)

    def trace(make, losses):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = make(optimizer)
        out = []
        for loss in losses:
            scheduler.step(loss)
            out.append(optimizer.param_groups[0]["lr"])
        return out

    flat = [1.0] * 80 + [0.5 * 0.99 ** i for i in range(40)]  # a flat stretch, then 1 % gains
    ours = trace(lambda opt: train.make_scheduler(opt, authors), flat)
    assert ours == trace(lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, threshold=0, cooldown=50), flat)
    # By hand: step 1 sets the best; steps 2..12 are 11 > patience (10) bad ones: the cut comes at step 12.
    # Then 50 cooldown steps count nothing, and 11 more bad ones: the next cut at step 12 + 50 + 11 = 73.
    assert ours.index(pytest.approx(0.01)) == 11 and ours.index(pytest.approx(0.001)) == 72
    # Gains of 5e-6 (relative) per epoch count with threshold 0, not with torch's default 1e-4.
    creeping = [(1 - 5e-6) ** i for i in range(20)]
    assert set(trace(lambda opt: train.make_scheduler(opt, authors), creeping)) == {0.1}
    default = trace(lambda opt: train.make_scheduler(opt, train.TrainConfig(lr=0.1, schedule="plateau")), creeping)
    assert default.index(pytest.approx(0.01)) == 11


def test_bad_data_is_refused_before_any_compute(mnist5k):
    lenet300, lenet5 = models.build("lenet300"), models.build("lenet5")
    images, labels = mnist5k.test.images[:20], mnist5k.test.labels[:20]
    cases = [
        (data.TensorSplit(images[:0], labels[:0]), "no samples"),
        (data.TensorSplit(images, labels.float()), "integer class indices"),
        (data.TensorSplit(images, labels + 10), r"must lie in \[0, 10\)"),
    ]
    for split, message in cases:
        with pytest.raises(ValueError, match=message):
            train.evaluate(lenet300, split)
    colour = data.TensorSplit(torch.zeros(4, 3, 32, 32), labels[:4])
    with pytest.raises(ValueError, match=r"3x32x32.*fc1 takes 784 features"):
        train.evaluate(lenet300, colour)
    with pytest.raises(ValueError, match=r"3x32x32.*conv1 takes images with 1 channels"):
        train.evaluate(lenet5, colour)
    with pytest.raises(ValueError, match="num_classes=5, but the model has 10 outputs"):
        train.evaluate(lenet300, mnist5k.test, num_classes=5)
    before = lenet300.fc1.weight.clone()
    bad = data.DataSplits(mnist5k.config, data.TensorSplit(images, labels + 10), mnist5k.valid, mnist5k.test, 10,
                          (1, 28, 28))
    with pytest.raises(ValueError, match="the train split"):
        train.fit(lenet300, bad, train.TrainConfig(epochs=1), device="cpu", progress=False)
    assert torch.equal(before, lenet300.fc1.weight)


def test_bf16_trains_on_the_cpu(mnist5k):
    small = data.DataSplits(mnist5k.config, mnist5k.train.subset(100, 0), mnist5k.valid.subset(50, 0), mnist5k.test,
                            10, (1, 28, 28))
    model = models.build("lenet300", seed=0)
    before = model.fc1.weight.clone()
    history = train.fit(model, small, train.TrainConfig(epochs=1, batch_size=100, precision="bf16"), device="cpu",
                        progress=False)
    assert math.isfinite(history[0]["train_loss"]) and math.isfinite(history[0]["valid_loss"])
    assert not torch.equal(before, model.fc1.weight) and model.fc1.weight.dtype == torch.float32


def test_fit_resumed_from_a_checkpoint_is_bit_identical(mnist5k):
    small = data.DataSplits(mnist5k.config, mnist5k.train.subset(300, 0), mnist5k.valid.subset(100, 0), mnist5k.test,
                            10, (1, 28, 28))
    config = train.TrainConfig(epochs=4, batch_size=50, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
                               schedule="step", milestones=(2, 3))

    class Grab(train.Hook):
        def __init__(self):
            self.checkpoints, self.steps = {}, 0

        def after_step(self, state):
            self.steps += 1

        def epoch_end(self, state):
            self.checkpoints[state.epoch] = state.checkpoint()

        def state_dict(self):
            return {"steps": self.steps}

        def load_state_dict(self, saved):
            self.steps = saved["steps"]

    grab = Grab()
    whole = models.build("lenet300", seed=0)
    history = train.fit(whole, small, config, seed=5, device="cpu", hooks=[grab], progress=False)
    buffer = io.BytesIO()
    torch.save(grab.checkpoints[2], buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_hook = Grab()
    resumed = models.build("lenet300", seed=1)  # other weights: the checkpoint's replace them
    rest = train.fit(resumed, small, config, seed=5, device="cpu", hooks=[resumed_hook], progress=False, resume=saved)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(rest) == drop(history) and [r["lr"] for r in rest] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert resumed_hook.steps == grab.steps == 4 * 6
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()))
    with pytest.raises(ValueError, match="1 hooks, but fit got 0"):
        train.fit(models.build("lenet300"), small, config, device="cpu", progress=False, resume=saved)
    with pytest.raises(ValueError, match="resume must be"):
        train.fit(models.build("lenet300"), small, config, device="cpu", progress=False, resume={"epoch": 1})


def test_resnet_recipe():
    recipe = train.RESNET32_RECIPE
    assert (recipe.lr, recipe.momentum, recipe.weight_decay, recipe.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert recipe.milestones == (100, 150) and recipe.epochs == 200


def test_bars_honour_tqdm_disable_even_where_tqdm_notebook_would_not(monkeypatch):
    from psputil import bars

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert bars.bar(range(3)).disable
    monkeypatch.delenv("TQDM_DISABLE")
    assert not bars.bar(range(3)).disable and bars.bar(range(3), progress=False).disable
