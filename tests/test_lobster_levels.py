"""Short real LOBSTER runs (LeNet-300 on 600 mnist-5k images): the best network per level, the target, resuming."""

import io

import pytest
import torch

from psputil import data, models, pruning, train
from psputil.pruning import lobster

# pwe 1 with no tolerance prunes at the first epoch that does not lower the valid loss:
# with these numbers, events at epochs 10, 14 and 19 of 20 (4 levels), in about a second.
QUICK = lobster.LobsterConfig(lam=1e-3, twt=0.05, pwe=1, tolerance=0.0)
SCHEDULE = train.TrainConfig(epochs=20, lr=0.1, batch_size=100)


@pytest.fixture(scope="module")
def small():
    full = data.load("mnist-5k")
    return data.DataSplits(full.config, full.train.subset(600, 0), full.valid.subset(200, 0), full.test.subset(300, 0),
                           10, (1, 28, 28))


def without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_each_level_returns_its_best_network_not_the_post_pruning_one(small):
    result = lobster.run(models.build("lenet300", seed=0), small, QUICK, SCHEDULE, device="cpu")
    levels, states, history = result["levels"], result["states"], result["history"]
    assert len(levels) >= 3 and len(states) == len(levels) and result["stopped"] == "epoch budget"
    assert [row["level"] for row in levels] == list(range(len(levels)))
    assert levels[0]["start_epoch"] == 0 and levels[0]["after_pruning"] is None and levels[0]["threshold"] is None
    events = [r["epoch"] for r in history if "pruned" in r]
    assert [row["start_epoch"] for row in levels[1:]] == events
    recovered = 0
    for row, stored in zip(levels, states):
        epochs = [r for r in history if r["level"] == row["level"]]
        # The kept epoch: lowest valid error, then lowest valid loss, then the earliest.
        chosen = min(epochs, key=lambda r: (r["valid_error"], r["valid_loss"], r["epoch"]))
        assert row["best"]["epoch"] == chosen["epoch"] > row["start_epoch"]
        assert row["best"]["valid_error"] == chosen["valid_error"] == min(r["valid_error"] for r in epochs)
        # Its stored numbers re-evaluate exactly from the stored state.
        model = models.build("lenet300")
        model.load_state_dict(stored["state"])
        for split in ("train", "valid", "test"):
            assert train.evaluate(model, getattr(small, split)) == (row["best"][f"{split}_loss"],
                                                                    row["best"][f"{split}_error"])
        assert pruning.sparsity(model) == row["sparsity"]
        assert all(torch.all(p[~stored["mask"][n]] == 0) for n, p in pruning.prunable(model).items())
        if row["level"] > 0:
            # The event pruned the previous level's lowest-valid-loss state within (1 + twt) of its loss.
            restored = min(r["valid_loss"] for r in history if r["level"] == row["level"] - 1)
            after = row["after_pruning"]
            assert restored < after["valid_loss"] <= (1 + QUICK.twt) * restored
            recovered += after["valid_error"] != row["best"]["valid_error"]
    assert recovered >= 1  # training at the level moved away from the post-pruning network
    masks = [s["mask"] for s in states]
    for earlier, later in zip(masks, masks[1:]):  # masks only shrink, and every event prunes
        assert all(not (later[n] & ~earlier[n]).any() for n in later)
        assert pruning.mask_sparsity(later) > pruning.mask_sparsity(earlier)


def test_the_target_level_trains_until_the_next_plateau_then_stops_without_pruning(small):
    config = lobster.LobsterConfig(lam=1e-3, twt=0.05, pwe=1, tolerance=0.0, target=50.0)
    result = lobster.run(models.build("lenet300", seed=0), small, config, SCHEDULE, device="cpu")
    assert result["stopped"] == "target sparsity"
    (first, top), history = result["levels"], result["history"]
    assert first["sparsity"] == 0.0 and top["sparsity"] >= 50.0 and top["pruned"] > 0
    trained_on = [r for r in history if r["epoch"] > top["start_epoch"]]
    assert len(trained_on) >= 2 and all("pruned" not in r and r["level"] == 1 for r in trained_on)
    assert history[-1]["epoch"] < SCHEDULE.epochs  # stopped by the plateau, not the budget
    assert top["best"]["epoch"] > top["start_epoch"]
    assert top["best"]["train_loss"] < top["after_pruning"]["train_loss"]


@pytest.mark.parametrize("reset_lr", [False, True])
def test_a_run_resumed_from_its_second_event_is_bit_identical(small, reset_lr):
    config = lobster.LobsterConfig(lam=1e-3, twt=0.05, pwe=1, tolerance=0.0, reset_lr=reset_lr)
    schedule = train.TrainConfig(epochs=20, lr=0.1, batch_size=100, momentum=0.5, schedule="plateau",
                                 plateau_patience=1, plateau_threshold=0, plateau_cooldown=2)
    checkpoints = []
    whole = lobster.run(models.build("lenet300", seed=0), small, config, schedule, seed=3, device="cpu",
                        on_event=checkpoints.append)
    assert len(checkpoints) >= 3 and checkpoints[-1]["finished"]  # >= 2 events, then the end
    buffer = io.BytesIO()
    torch.save(checkpoints[1], buffer)
    buffer.seek(0)
    second = torch.load(buffer, weights_only=True)  # storable as plain data
    assert second["epoch"] == whole["levels"][2]["start_epoch"] < schedule.epochs
    resumed = lobster.run(models.build("lenet300", seed=0), small, config, schedule, seed=3, device="cpu",
                          resume=second)
    assert without_seconds(resumed["history"]) == without_seconds(whole["history"])
    assert resumed["levels"] == whole["levels"] and resumed["stopped"] == whole["stopped"]
    assert len(resumed["states"]) == len(whole["states"])
    for a, b in zip(resumed["states"], whole["states"]):
        for part in ("state", "mask"):
            assert a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    # The end checkpoint resumes to the same result without training.
    again = lobster.run(models.build("lenet300", seed=0), small, config, schedule, seed=3, device="cpu",
                        resume=checkpoints[-1])
    assert again["levels"] == whole["levels"] and len(again["history"]) == len(whole["history"])
    with pytest.raises(ValueError, match=r"other arguments \(seed: 3 in the checkpoint, 4 now\)"):
        lobster.run(models.build("lenet300", seed=0), small, config, schedule, seed=4, device="cpu", resume=second)
