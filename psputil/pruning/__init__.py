"""Pruning: masks (``psputil.pruning``), LOBSTER (``pruning.lobster``), one-shot and the controls (``pruning.oneshot``).

The names below are the mask interface: a mask is a dict ``parameter name -> bool
tensor`` (True = the weight survives) over the weights and biases of every Conv2d and
Linear layer; sparsity is the percentage of those entries that are zero.
"""

from psputil.pruning.masks import (  # noqa: F401 (the package's interface)
    PRUNABLE_TYPES, MagnitudeRanking, MaskHook, apply_mask, check_entries, check_mask, check_survivors, full_mask,
    layer_sparsity, magnitude_mask, mask_sparsity, prunable, random_mask, sparsity, survivors, to_cpu,
)
