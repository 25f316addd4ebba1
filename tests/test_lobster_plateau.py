"""LOBSTER's bookkeeping without training: the authors' plateau rule, the best state per level, level_at, configs."""

import math

import pytest

from psputil.pruning import lobster
from psputil.pruning.plateau import LevelBest, Plateau

# The worked example of /work/notes/authors_lobster.md (section 1): validation losses of epochs e0..e9.
LOSSES = [1.00, 0.95, 0.955, 0.96, 0.958, 0.97, 0.97, 0.80, 0.85, 0.90]


def drive(plateau, losses):
    """Feed the losses; return the epochs where it fired and the state restored each time."""
    fired, restored = [], []
    for epoch, loss in enumerate(losses):
        if plateau.step(loss, lambda: epoch):  # the "state" is the epoch index
            fired.append(epoch)
            restored.append(plateau.restore_state)
    return fired, restored


def test_plateau_fires_where_the_authors_code_does_on_the_hand_example():
    plateau = Plateau(patience=2, tolerance=0.01)
    # By hand: e2 (0.955 < 1.01 * 0.95) and e4 reset the count without a new best; e5, e6 bad:
    # fire at e6, restoring e1. Then best = inf: e7 new best, e8 and e9 bad: fire at e9, restoring e7.
    assert drive(plateau, LOSSES) == ([6, 9], [1, 7])
    assert plateau.best == math.inf and plateau.bad == 0 and plateau.best_state is None  # started afresh


def test_plateau_details_strict_comparisons_and_tolerance_zero():
    plateau = Plateau(patience=1, tolerance=0.01)
    plateau.step(1.0, lambda: "a")
    assert not plateau.step(1.0099, lambda: "b")  # within 1 %: good, best unchanged
    assert (plateau.best, plateau.best_state) == (1.0, "a")
    assert plateau.step(1.01, lambda: "c")  # exactly best + 1 %: bad (strict <)
    strict = Plateau(patience=2, tolerance=0.0)
    assert drive(strict, [1.0, 1.0, 0.9, 0.9, 0.9, 0.5]) == ([4], [2])  # equal losses are bad with no tolerance
    # The epoch after a reset is always a new best.
    assert drive(Plateau(patience=3, tolerance=0.0), [0.5] * 9) == ([3, 7], [0, 4])


def test_plateau_state_round_trip():
    plateau = Plateau(patience=3)
    drive(plateau, LOSSES[:4])
    copy = Plateau(patience=3)
    copy.load_state_dict(plateau.state_dict())
    assert drive(copy, LOSSES[4:]) == drive(plateau, LOSSES[4:])


def test_level_best_prefers_accuracy_then_loss_then_the_earliest_epoch():
    best = LevelBest()
    rows = [(1, 20.0, 0.9), (2, 15.0, 1.1), (3, 15.0, 1.0), (4, 15.0, 1.0), (5, 16.0, 0.1)]
    kept = [best.update(epoch, error, loss, lambda: epoch) for epoch, error, loss in rows]
    assert kept == [True, True, True, False, False]
    assert (best.epoch, best.state, best.valid_error, best.valid_loss) == (3, 3, 15.0, 1.0)
    best.reset()
    assert best.state is None and best.update(9, 50.0, 3.0, lambda: "x")


def test_level_at_picks_the_first_level_reaching_the_rate():
    levels = [{"sparsity": 0.0}, {"sparsity": 60.0}, {"sparsity": 85.5}]
    assert [lobster.level_at(levels, r) for r in (0, 0.0, 30, 60, 60.01, 85.5)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match=r"never reached 90.*85\.500%"):
        lobster.level_at(levels, 90)
    for bad in (100, -1, math.nan, "50", None):
        with pytest.raises(ValueError, match=r"rate .*\[0, 100\)"):
            lobster.level_at(levels, bad)


@pytest.mark.parametrize("field, value, valid", [
    ("lam", -1e-4, ">= 0"), ("lam", math.nan, "finite"), ("twt", -0.1, ">= 0"), ("pwe", 0, ">= 1"),
    ("pwe", 2.5, "integer"), ("tolerance", 1.0, r"\[0, 1\)"), ("tolerance", -0.01, r"\[0, 1\)"),
    ("target", 100.0, r"\(0, 100\)"), ("target", 0, r"\(0, 100\)"), ("batchnorm", 1, "True or False"),
    ("reset_lr", "yes", "True or False"),
])
def test_bad_lobster_configs_name_the_field_the_value_and_what_is_valid(field, value, valid):
    with pytest.raises(ValueError, match=rf"{field}.*{valid}.*got {value!r}|{field}.*{valid}.*got {value}"):
        lobster.LobsterConfig(**{field: value})


def test_lobster_config_normalises_numbers():
    config = lobster.LobsterConfig(lam=1, target=90, tolerance=0)
    assert (type(config.lam), type(config.target), config.reset_lr, config.tolerance) == (float, float, False, 0.0)
