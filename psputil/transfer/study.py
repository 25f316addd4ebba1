"""The whole transfer study of a book run: every (source setup, target) pair, probed and cached.

Shared by the transfer chapter and the conclusions (claim C6), so both read the same
cached units with the same parameters.
"""

import dataclasses
from dataclasses import dataclass, field

from psputil.transfer import units as transfer
from psputil.transfer.probe import FINETUNE


@dataclass
class Study:
    """Rows of every probed source, and what was left out and why."""

    rows: list = field(default_factory=list)
    skipped_rates: dict = field(default_factory=dict)  # pair label -> milestones G never reached
    no_target: list = field(default_factory=list)  # setups without a same-shape target
    missing: list = field(default_factory=list)  # (pair label, FileNotFoundError) of missing data

    @property
    def pairs(self):
        return sorted({transfer.pair_label(r) for r in self.rows})


def study(setups, profile="quick", rates=None, seeds=(0,), lobster_seeds=(0,), pairs=None, finetune_epochs=0,
          entropy_samples=1000, order2_max_neurons=4096, device="auto", download=False, executor=None):
    """Run (or load) the transfer probes of every pair.

    Args:
        setups: source setup names; with ``pairs=None`` each goes to its default target.
        pairs: explicit ``[[source setup, target data set], ...]`` instead.
        finetune_epochs: > 0 also fine-tunes the whole masked network that many epochs.
        Other arguments: as ``transfer.run_pair``.

    Returns:
        ``Study``.
    """
    result = Study()
    if pairs is None:
        chosen, result.no_target = transfer.default_pairs(setups, profile)
    else:
        chosen = [tuple(p) for p in pairs]
    finetune = dataclasses.replace(FINETUNE, epochs=finetune_epochs) if finetune_epochs > 0 else None
    for source_name, target_name in chosen:
        setup = transfer.experiment_setup(source_name, profile)
        target = transfer.target_config(target_name, profile)
        label = f"{setup.name} -> {target_name}"
        try:
            rows, skipped = transfer.run_pair(
                setup, target, rates, seeds, lobster_seeds, finetune=finetune, entropy_samples=entropy_samples,
                order2_max_neurons=order2_max_neurons, device=device, download=download, executor=executor)
        except FileNotFoundError as error:
            result.missing.append((label, error))
            continue
        result.rows += rows
        if skipped:
            result.skipped_rates[label] = skipped
    return result
