"""The book's figures: matplotlib drawings of stored results (no computation here).

Every function takes plain dicts/lists (numbers, numpy arrays or tensors) and either draws
on a given ``Axes`` or returns a new ``Figure`` drawn at column width (``WIDTH`` inches) with
no text under ``FONT`` points. Seeds are drawn as points with their mean as a larger mark;
compression is drawn as the share of weights *remaining* on a log axis (so 95-100 % pruned
is readable), with the pruned share on the top axis.
"""

import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
from matplotlib.colors import LogNorm

WIDTH = 6.5  # inches: one book column
FONT = 9  # points: the smallest text anywhere
PANEL_TITLES = {"lenet300-mnist": "LeNet-300 / MNIST", "lenet5-mnist": "LeNet-5 / MNIST",
                "lenet5-fashion": "LeNet-5 / Fashion-MNIST", "resnet32-cifar10": "ResNet-32 / CIFAR-10"}
KIND_STYLE = {  # role -> (label, colour, marker)
    "G": ("G (LOBSTER)", "C0", "o"), "1-S": ("1-S (one shot)", "C3", "X"),
    "lottery": ("lottery (original init)", "C1", "s"), "reinit": ("same mask, new init", "C2", "^"),
    "random": ("random mask, new init", "C4", "v"), "dense": ("dense", "0.35", "D"),
}
MAP_LABELS = {"loss": "training loss (cross-entropy)", "error": "training error (%)", "psp_l2": "PSP L2 norm",
              "psp_entropy1": "first-order PSP-entropy (bits)", "psp_entropy2": "second-order PSP-entropy (bits)"}
_REMAINING_TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05)
_PRUNED_TICKS = (50, 90, 95, 99, 99.5, 99.9)


def error_vs_compression(ax, curve, title="", paper_rate=None):
    """Fig. 1 panel: test error (%) against weights remaining (%, log axis, pruned % on top).

    Controls: small marks are single runs, large marks joined by a line their mean.

    Args:
        curve: {"G": {seed: [{"sparsity": %, "test_error": %}, ...]} (each LOBSTER run's levels),
            "controls": {kind: [{"sparsity": %, "values": [test error %, one per run]}]},
            "dense": [test error %]} ("controls" and "dense" optional).
        paper_rate: the paper's rate for this setup (% pruned), drawn as a reference line.
    """
    lowest = 100.0
    for i, (seed, levels) in enumerate(curve.get("G", {}).items()):
        x = [100 - row["sparsity"] for row in levels]
        lowest = min([lowest, *x])
        ax.plot(x, [row["test_error"] for row in levels], "-o", color="C0", ms=2.5, lw=0.8, alpha=0.7,
                label=f"G (LOBSTER), a line per run, n = {len(curve['G'])}" if i == 0 else None)
    for kind, rows in curve.get("controls", {}).items():
        label, colour, marker = KIND_STYLE[kind]
        rows = sorted(rows, key=lambda r: r["sparsity"])
        x = np.array([100 - r["sparsity"] for r in rows])
        for xi, r in zip(x, rows):
            jitter = xi * np.exp(np.linspace(-0.04, 0.04, len(r["values"])))
            ax.plot(jitter, r["values"], marker, color=colour, ms=3, alpha=0.45, ls="none")
        n = min((len(r["values"]) for r in rows), default=0)
        ax.plot(x, [np.mean(r["values"]) for r in rows], "-" + marker, color=colour, ms=6, mec="black", mew=0.5,
                label=f"{label}, n = {n}")
        lowest = min([lowest, *x])
    if curve.get("dense"):
        ax.axhline(np.mean(curve["dense"]), color="0.35", ls="--", lw=1,
                   label=f"dense, mean of n = {len(curve['dense'])}")
    if paper_rate is not None:
        ax.axvline(100 - paper_rate, color="0.2", ls=":", lw=1.2, label="the paper's rate for this setup")
        lowest = min(lowest, 100 - paper_rate)
    _compression_axis(ax, lowest)
    top = max((row["sparsity"] for levels in curve.get("G", {}).values() for row in levels), default=None)
    facts = " · ".join(t for t in (f"paper: {paper_rate:g} %" if paper_rate else "",
                                    f"this run: {top:.2f} %" if top is not None else "") if t)
    ax.set_title("\n".join(t for t in (title, facts) if t), fontsize=FONT)
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)


def fig1(panels, paper_rates=None):
    """Fig. 1 a-d: one ``error_vs_compression`` panel per setup, in the paper's order, placeholders where not run.

    Args:
        panels: setup name ("lenet300-mnist", ...) -> curve (see ``error_vs_compression``) or None.
        paper_rates: setup name -> the paper's rate (% pruned) for it.
    """
    unknown = [name for name in panels if name not in PANEL_TITLES]
    if unknown:
        raise ValueError(f"unknown setups {unknown}; valid: {', '.join(PANEL_TITLES)}")
    fig, axes = plt.subplots(2, 2, figsize=(WIDTH, 7.0))
    for letter, ax, name in zip("abcd", axes.flat, PANEL_TITLES):
        title = f"({letter}) {PANEL_TITLES[name]}"
        if panels.get(name) is None:
            ax.text(0.5, 0.5, "not run in this profile", ha="center", va="center", transform=ax.transAxes,
                    fontsize=FONT + 1, color="0.3")
            ax.set_title(title, fontsize=FONT)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        error_vs_compression(ax, panels[name], title, (paper_rates or {}).get(name))
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=2, fontsize=FONT, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(handles) + 1) // 2), 1, 1))
    return finish(fig)


def eigenvalues(ax, values, paper_range=None):
    """Fig. 2b: the top-k Hessian eigenvalues of G and 1-S on a log axis, seeds as points with their mean.

    Args:
        values: {"G": {seed: [eigenvalues, descending]}, "1-S": {...}}.
        paper_range: (low, high) of the paper's axis, named in the title.
    """
    every = [v for role in values.values() for seq in role.values() for v in seq]
    for shift, role in zip((-0.15, 0.15), values):
        label, colour, marker = KIND_STYLE[role]
        rows = np.array([list(seq) for seq in values[role].values()], dtype=float)
        index = np.arange(1, rows.shape[1] + 1) + shift
        for row in rows:
            ax.plot(index, row, marker, color=colour, ms=3.5, alpha=0.5, ls="none")
        ax.plot(index, rows.mean(0), marker, color=colour, ms=8, mec="black", mew=0.6, ls="none",
                label=f"{role}, n = {len(rows)}")
    ax.set_yscale("log" if every and min(every) > 0 else "symlog")
    ax.set_xticks(range(1, max((len(seq) for role in values.values() for seq in role.values()), default=0) + 1))
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue (train. loss Hessian)")
    paper = f"\npaper's axis: {paper_range[0]:g} to {paper_range[1]:g}" if paper_range else ""
    ax.set_title(f"top Hessian eigenvalues (seeds, mean){paper}", fontsize=FONT)
    ax.legend(fontsize=FONT, loc="best")
    ax.grid(alpha=0.3, which="both")


def plane_map(ax, result, name, log=None, title=None, paper_range=None):
    """A map of the plane through G (0, 0) and 1-S (1, 0): colours, contours and both solutions marked.

    Args:
        result: {"a": 1-D grid, "b": 1-D grid, "maps": {name: (len b, len a) array}}.
        log: logarithmic colour scale (default: for the loss and the PSP L2 norm).
        title: what the map shows (say whether the plane is the full or the masked one).
        paper_range: (low, high) of the paper's colour scale, named in the title.
    """
    a, b = np.asarray(result["a"], float), np.asarray(result["b"], float)
    values = np.asarray(result["maps"][name], float)
    log = name in ("loss", "psp_l2") if log is None else log
    positive = values[values > 0]
    norm = LogNorm(positive.min(), values.max()) if log and positive.size and values.max() > positive.min() else None
    mesh = ax.pcolormesh(a, b, np.where(values > 0, values, np.nan) if norm else values, norm=norm, cmap="viridis",
                         shading="gouraud" if min(values.shape) > 1 else "nearest")
    if min(values.shape) > 1:
        levels = np.geomspace(positive.min(), values.max(), 8) if norm else 8
        ax.contour(a, b, values, levels=levels, colors="white", linewidths=0.6, alpha=0.7)
    for label, x, marker in (("G", 0.0, "o"), ("1-S", 1.0, "X")):
        ax.plot(x, 0.0, marker=marker, color="white", mec="black", ms=9, ls="none")
        ax.annotate(label, (x, 0.0), textcoords="offset points", xytext=(6, 6), color="white", fontweight="bold",
                    fontsize=FONT + 1)
    bar = ax.figure.colorbar(mesh, ax=ax, shrink=0.85)
    bar.ax.tick_params(labelsize=FONT)
    paper = f"\npaper's scale: {paper_range[0]:g} to {paper_range[1]:g}" if paper_range else ""
    ax.set_title((title or MAP_LABELS.get(name, name)) + paper, fontsize=FONT)
    ax.set_xlabel("a (along u = 1-S − G)")
    ax.set_ylabel("b (random direction, units of |u|)")


def loss_profile(ax, a, curves, log=True):
    """The loss along u = 1-S − G (1-D), G at a = 0 and 1-S at a = 1 marked.

    Args:
        a: grid positions along u; curves: label -> values at `a` (e.g. "training loss").
    """
    for label, values in curves.items():
        ax.plot(np.asarray(a, float), np.asarray(values, float), "-o", ms=3, label=label)
    for x, label in ((0.0, "G"), (1.0, "1-S")):
        ax.axvline(x, color="0.3", ls=":", lw=1)
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -3), textcoords="offset points",
                    va="top", fontsize=FONT)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("a (along u = 1-S − G)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=FONT)
    ax.grid(alpha=0.3)


def dead_neurons(fractions):
    """Per layer, the share of always-off (solid) and always-on (hatched) neurons of each network.

    Args:
        fractions: network ("G", "1-S", "lottery", ...) -> layer -> {"off": 0-1, "on": 0-1}.
    """
    networks = list(fractions)
    layers = list(dict.fromkeys(layer for net in fractions.values() for layer in net))
    fig, ax = plt.subplots(figsize=(WIDTH, 2.8))
    width = 0.8 / max(len(networks), 1)
    for i, net in enumerate(networks):
        colour = KIND_STYLE.get(net, (net, f"C{i}", "o"))[1]
        x = np.arange(len(layers)) - 0.4 + width * (i + 0.5)
        off = np.array([100 * fractions[net].get(layer, {}).get("off", np.nan) for layer in layers])
        on = np.array([100 * fractions[net].get(layer, {}).get("on", np.nan) for layer in layers])
        ax.bar(x, off, width, color=colour, label=f"{net}: always off")
        ax.bar(x, on, width, bottom=np.nan_to_num(off), color="white", edgecolor=colour, hatch="///",
               label=f"{net}: always on")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("neurons (%)")
    ax.margins(y=0.12)
    ax.set_title("dead (always-off) and always-on neurons per layer", fontsize=FONT)
    ax.legend(fontsize=FONT, ncol=max(1, len(networks)), loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return finish(fig)


def entropy_histograms(per_neuron, bins=30, what="first-order entropy (bits)"):
    """Per layer, histograms of every neuron's entropy, one outline per network (share at 0 in the legend).

    Args:
        per_neuron: network -> layer -> 1-D array of per-neuron entropies (bits).
    """
    layers = list(dict.fromkeys(layer for net in per_neuron.values() for layer in net))
    cols = min(len(layers), 2)
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, 2.4 * rows + 0.4), squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        values = {net: np.asarray(per_neuron[net][layer], float) for net in per_neuron if layer in per_neuron[net]}
        top = max(1e-6, *(float(v.max()) for v in values.values() if v.size))
        for i, (net, v) in enumerate(values.items()):
            colour = KIND_STYLE.get(net, (net, f"C{i}", "o"))[1]
            ax.hist(v, bins=bins, range=(0, top), histtype="step", lw=1.5, color=colour, density=True,
                    label=f"{net}: mean {v.mean():.2f}; {100 * np.mean(v == 0):.0f} % at 0")
        ax.set_title(layer, fontsize=FONT)
        ax.set_xlabel(what)
        ax.legend(fontsize=FONT)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("density of neurons")
    fig.tight_layout()
    return finish(fig)


def per_class_heatmaps(per_class):
    """Mean per-class entropy term (bits) per layer (rows) and class (columns), one panel per network, one scale.

    Args:
        per_class: network -> layer -> (neurons, classes) array.
    """
    nets = list(per_class)
    layers = list(dict.fromkeys(layer for net in per_class.values() for layer in net))
    matrices = {n: np.stack([np.asarray(per_class[n][layer], float).mean(0) for layer in layers]) for n in nets}
    top = max(m.max() for m in matrices.values())
    fig, axes = plt.subplots(1, len(nets), figsize=(WIDTH, 1.2 + 0.45 * len(layers)), squeeze=False,
                             constrained_layout=True)
    for ax, net in zip(axes[0], nets):
        image = ax.imshow(matrices[net], vmin=0, vmax=top, cmap="magma", aspect="auto")
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xticks(range(matrices[net].shape[1]))
        ax.set_xlabel("class")
        ax.set_title(f"{net}: mean per-class entropy (bits)", fontsize=FONT)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    return finish(fig)


def layer_sparsity(panels, title):
    """Bar charts of per-layer sparsity (% pruned), one panel per entry; None draws "not reached".

    Args:
        panels: panel title -> (layer -> percent) or None.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 2.8), squeeze=False)
    for ax, (name, layers) in zip(axes[0], panels.items()):
        ax.set_title(name, fontsize=FONT)
        ax.set_ylim(0, 105)
        ax.set_ylabel("pruned (%)")
        if not layers:
            ax.text(0.5, 0.5, "not reached by LOBSTER", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        bars = ax.bar(list(layers), list(layers.values()), color="C0")
        ax.bar_label(bars, fmt="%.1f", fontsize=FONT)
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout()
    return finish(fig)


def transfer_scatter(ax, points, x_label):
    """Probe accuracy against a source property; marker = source kind, colour = compression (% pruned).

    Args:
        points: list of {"x", "y" (probe accuracy, %), "kind", "sparsity" (% pruned)}.
    """
    scatter = None
    for kind in dict.fromkeys(p["kind"] for p in points):
        chosen = [p for p in points if p["kind"] == kind]
        marker = KIND_STYLE.get(kind, (kind, "C7", "o"))[2]
        scatter = ax.scatter([p["x"] for p in chosen], [p["y"] for p in chosen], c=[p["sparsity"] for p in chosen],
                             cmap="viridis", vmin=0, vmax=100, marker=marker, s=30, edgecolors="black",
                             linewidths=0.4, label=kind)
    if scatter is not None:
        ax.figure.colorbar(scatter, ax=ax, label="pruned (%)").ax.tick_params(labelsize=FONT)
    ax.set_xlabel(x_label)
    ax.set_ylabel("probe accuracy (%)")
    ax.legend(fontsize=FONT)
    ax.grid(alpha=0.3)


def _compression_axis(ax, lowest):
    ax.set_xscale("log")
    ax.set_xlim(100 * 1.15, lowest / 1.3)  # reversed: compression grows to the right
    ticks = [t for t in _REMAINING_TICKS if lowest / 1.3 <= t <= 100]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("weights remaining (%, log)")
    top = ax.secondary_xaxis("top", functions=(lambda r: 100 - r, lambda p: 100 - p))
    pruned = [p for p in _PRUNED_TICKS if 100 - p >= lowest / 1.3]
    top.set_xticks(pruned, [f"{p:g}" for p in pruned])
    top.set_xlabel("pruned (%)", fontsize=FONT)
    top.tick_params(labelsize=FONT)


def finish(fig):
    """Raise every text of `fig` to at least ``FONT`` points (ticks included) and return it."""
    for ax in fig.axes:
        ax.tick_params(which="both", labelsize=FONT)
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_fontsize() < FONT:
            text.set_fontsize(FONT)
    return fig
