"""The book's figures: matplotlib drawings of stored results (no computation here).

Each function takes the plain dicts that ``experiments`` and ``analysis`` return and
either draws on a given ``Axes`` or returns a new ``Figure``; the notebooks turn
figures into slider pages with ``book.rate_slider``.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

KIND_STYLE = {  # control kind -> (label, colour, marker)
    "lottery": ("lottery (original init)", "C1", "s"),
    "reinit": ("same mask, new random init", "C2", "^"),
    "random": ("random mask, new init", "C3", "v"),
}
MARKS = {"G": ((0.0, 0.0), "white", "o"), "1-S": ((1.0, 0.0), "white", "X")}
MAP_LABELS = {
    "loss": "training loss (cross-entropy)",
    "error": "training error (%)",
    "psp_l2": "PSP L2 norm",
    "psp_entropy1": "first-order PSP-entropy (bits)",
    "psp_entropy2": "second-order PSP-entropy (bits)",
}


def error_vs_sparsity(ax, title, events, controls, dense=None):
    """Fig. 1 panel: test error against percent of pruned parameters.

    Args:
        events: LOBSTER's pruning events (rows with "sparsity", "test_error").
        controls: ``experiments.controls`` result (milestone -> entry).
        dense: optional {"mean", "std", "n"} of the dense networks' test error.
    """
    ax.plot([e["sparsity"] for e in events], [e["test_error"] for e in events], "-o", color="C0", ms=3,
            label="LOBSTER (G), pruning events")
    rows = [controls[m] for m in sorted(controls)]
    x = np.array([r["sparsity"] for r in rows])
    for kind, (label, colour, marker) in KIND_STYLE.items():
        mean = np.array([r[kind]["mean"] for r in rows])
        std = np.array([r[kind]["std"] for r in rows])
        n = min(r[kind]["n"] for r in rows) if rows else 0
        ax.plot(x, mean, marker=marker, color=colour, label=f"{label}, mean of n={n}")
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, lw=0)
    if dense is not None:
        ax.axhline(dense["mean"], color="0.4", ls="--", lw=1, label=f"dense, mean of n={dense['n']}")
    ax.set_title(title)
    ax.set_xlabel("pruned parameters (%)")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)


def layer_sparsity(panels, title):
    """Bar charts of per-layer sparsity (percent pruned), one panel per entry of `panels`.

    Args:
        panels: panel title -> (dict layer -> percent) or None (drawn as "not reached").
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8), squeeze=False)
    for ax, (name, layers) in zip(axes[0], panels.items()):
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, 100)
        ax.set_ylabel("pruned (%)")
        if not layers:
            ax.text(0.5, 0.5, "not reached by LOBSTER", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        bars = ax.bar(list(layers), list(layers.values()), color="C0")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plane_map(ax, result, name, log=None, title=None):
    """A map of the plane through G (0, 0) and 1-S (1, 0): colours, contours, both solutions marked.

    Args:
        result: ``analysis.plane`` result.
        name: map name (``analysis.MAP_NAMES``).
        log: logarithmic colour scale (default: for the loss and the PSP L2 norm).
    """
    a, b = result["a"].numpy(), result["b"].numpy()
    values = result["maps"][name].numpy()
    log = name in ("loss", "psp_l2") if log is None else log
    positive = values[values > 0]
    norm = LogNorm(positive.min(), values.max()) if log and positive.size and values.max() > positive.min() else None
    mesh = ax.pcolormesh(a, b, np.where(values > 0, values, np.nan) if norm else values, norm=norm,
                         shading="gouraud" if min(values.shape) > 1 else "nearest", cmap="viridis")
    if min(values.shape) > 1:
        levels = np.geomspace(positive.min(), values.max(), 8) if norm else 8
        ax.contour(a, b, values, levels=levels, colors="white", linewidths=0.6, alpha=0.7)
    for label, ((x, y), colour, marker) in MARKS.items():
        ax.plot(x, y, marker=marker, color=colour, mec="black", ms=9, ls="none")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), color="white", fontweight="bold")
    ax.figure.colorbar(mesh, ax=ax, shrink=0.85)
    ax.set_title(title or MAP_LABELS.get(name, name), fontsize=10)
    ax.set_xlabel("a (along 1-S - G)")
    ax.set_ylabel("b (random direction, units of |u|)")


def eigenvalue_bars(ax, curvature, g_error, oneshot_error):
    """Top Hessian eigenvalues of G and 1-S side by side, test errors in the legend."""
    g, s = curvature["g"], curvature["oneshot"]
    index = np.arange(len(g))
    ax.bar(index - 0.2, g, 0.4, color="C0", label=f"G (test error {g_error:.2f} %)")
    ax.bar(index + 0.2, s, 0.4, color="C3", label=f"1-S (test error {oneshot_error:.2f} %)")
    ax.set_xticks(index, [f"$\\lambda_{i + 1}$" for i in index])
    ax.set_ylabel("eigenvalue of the training-loss Hessian")
    ax.set_title(f"top-{len(g)} Hessian eigenvalues (masked)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def entropy_histograms(result, bins=30):
    """Per-layer histograms of the first-order PSP-entropy of every neuron, G against 1-S."""
    layers = list(result["g"]["entropy1"]["per_neuron"])
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 2.7), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        both = {key: result[key]["entropy1"]["per_neuron"][layer].numpy() for key in ("g", "oneshot")}
        top = max(1e-6, *(float(v.max()) for v in both.values() if v.size))
        for key, label, colour in (("g", "G", "C0"), ("oneshot", "1-S", "C3")):
            values = both[key]
            ax.hist(values, bins=bins, range=(0, top), histtype="step", lw=1.5, color=colour, label=f"{label} (mean {values.mean():.2f})", density=True)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("first-order PSP-entropy (bits)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("density of neurons")
    fig.tight_layout()
    return fig


def per_class_heatmaps(result):
    """Mean first-order PSP-entropy per layer (rows) and class (columns), G and 1-S with one colour scale."""
    layers = list(result["g"]["entropy1"]["per_class"])
    matrices = {key: np.stack([result[key]["entropy1"]["per_class"][layer].mean(0).numpy() for layer in layers])
                for key in ("g", "oneshot")}
    top = max(m.max() for m in matrices.values())
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.5 + 0.55 * len(layers) + 1.2), squeeze=False, constrained_layout=True)
    for ax, (key, label) in zip(axes[0], (("g", "G"), ("oneshot", "1-S"))):
        image = ax.imshow(matrices[key], vmin=0, vmax=top, cmap="magma", aspect="auto")
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xticks(range(matrices[key].shape[1]))
        ax.set_xlabel("class")
        ax.set_title(f"{label}: mean per-class entropy term (bits)", fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    return fig
