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
    with pytest.raises(ValueError, match="'auto', 'cpu'"):
        train.fit(models.build("lenet300"), None, train.TrainConfig(), device="tpu", progress=False)


def test_resnet_recipe():
    recipe = train.RESNET32_RECIPE
    assert (recipe.lr, recipe.momentum, recipe.weight_decay, recipe.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert recipe.milestones == (100, 150) and recipe.epochs == 200
