"""Sections 5.2 and 5.3 of one setup gathered from the cached analyses: planes, facts per pair, claim inputs.

One call, shared by Sections 5.2, 5.3 and the conclusions (they read the same stored
results): the rate the sections study (by default the highest milestone every LOBSTER seed
reached), the plane through G and 1-S of the first seed at that rate (the paper's full
plane and the masked one), the full plane at the other milestones (for the slider), the
facts of G and 1-S of every seed at that rate (``minima.facts``) and the dead neurons of
the controls there.
"""

from dataclasses import dataclass, field
from typing import Optional

from psputil import checks
from psputil.experiments import analysis, minima

DIRECTIONS = ("all", "masked")


@dataclass
class PlaneStudy:
    """What Sections 5.2 and 5.3 draw for one setup (empty when no rate was reached)."""

    rate: Optional[float] = None  # the studied compression rate (percent)
    milestones: list = field(default_factory=list)  # every rate all seeds reached, on distinct levels
    planes: dict = field(default_factory=dict)  # direction -> plane result at `rate` (first seed)
    slider: dict = field(default_factory=dict)  # milestone -> full-plane result (first seed)
    facts: dict = field(default_factory=dict)  # seed -> ``minima.facts`` result at `rate`
    pairs: dict = field(default_factory=dict)  # seed -> the claims' input (``minima.claim_pairs`` shape)
    controls: dict = field(default_factory=dict)  # kind -> dead-neuron fractions (``minima.control_activity``)
    configs: dict = field(default_factory=dict)  # what -> stage config (for the captions' run keys)

    @property
    def test_size(self):
        return next((f["G"]["test_size"] for f in self.facts.values()), None)


def plane_study(ctx, setup, seeds, rates=None, plane_rate=None, grid_points=(9, 9), train_samples=1000,
                entropy2_layers=None, points_per_pass=4, control_seeds=(0,), slider=True):
    """Compute or load everything Sections 5.2 and 5.3 show for `setup`.

    Args:
        seeds: LOBSTER seeds; the planes use the first, the facts every one (each paired with its 1-S).
        rates: milestones (percent; None: ``setup.milestones``).
        plane_rate: the studied rate (None: the highest milestone every seed reached).
        grid_points, train_samples, entropy2_layers, points_per_pass: the plane's settings.
        control_seeds: the control runs whose dead neurons are measured at the studied rate.
        slider: also compute the full plane at the other milestones.

    Returns:
        ``PlaneStudy``.
    """
    seeds = checks.numbers_list("seeds", list(seeds), 0, integers=True)
    study = PlaneStudy()
    study.milestones, _ = analysis.distinct_rates(ctx, setup, setup.milestones if rates is None else rates, seeds)
    if plane_rate is not None:
        study.rate = float(checks.number("plane_rate", plane_rate, 0, 100, high_open=True))
    elif study.milestones:
        study.rate = max(study.milestones)
    if study.rate is None:
        return study
    layers = None if entropy2_layers is None else tuple(entropy2_layers)
    shared = dict(points=tuple(grid_points), train_samples=train_samples, entropy2_layers=layers)

    def plane_config(rate, direction="all"):
        return analysis.PlaneConfig(analysis.pair(setup, rate, seeds[0]), direction=direction, **shared)

    for direction in DIRECTIONS:
        config = plane_config(study.rate, direction)
        study.configs[f"plane-{direction}"] = config
        study.planes[direction] = analysis.plane(ctx, config, points_per_pass=points_per_pass)
    if slider:
        for rate in study.milestones:
            config = plane_config(rate)
            study.configs[f"plane-{rate:g}"] = config
            study.slider[rate] = analysis.plane(ctx, config, points_per_pass=points_per_pass)
    for seed in seeds:
        config = minima.FactsConfig(analysis.pair(setup, study.rate, seed), train_samples=train_samples,
                                    entropy2_layers=layers)
        study.configs[f"facts-{seed}"] = config
        study.facts[seed] = minima.facts(ctx, config)
        result = study.facts[seed]
        study.pairs[seed] = {"sparsity": result["sparsity"],
                             **{role: {k: result[role][k] for k in minima.CLAIM_KEYS} for role in minima.ROLES}}
    study.controls = minima.control_activity(ctx, setup, seeds[0], study.rate, control_seeds,
                                             train_samples=train_samples)
    return study
