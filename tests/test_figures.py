"""The book's figures on small hand-built inputs (Agg): they draw, fonts are >= 9 pt, log axes where promised.

Also the numbered provenance caption that goes under every figure.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from psputil.book import blocks, figures  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def small_fonts(fig):
    """Visible texts smaller than ``figures.FONT`` after drawing (tick labels included)."""
    fig.canvas.draw()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()]
    assert texts
    return [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < figures.FONT]


def levels(seed):
    return [{"sparsity": s, "test_error": 1.0 + 0.1 * seed + (s > 95)} for s in (0, 50, 90, 95, 98, 99.2 + 0.1 * seed)]


CURVE = {"G": {0: levels(0), 1: levels(1)},
         "controls": {k: [{"sparsity": s, "values": [1.2 + d, 1.4 + d]} for s in (50, 95, 99)]
                      for k, d in (("lottery", 0.0), ("reinit", 0.2), ("random", 1.0))},
         "dense": [0.9, 1.0]}


def test_fig1_panels_placeholders_and_compression_axis():
    fig = figures.fig1({"lenet300-mnist": CURVE, "lenet5-mnist": CURVE}, {"lenet5-mnist": 99.57})
    assert fig.get_size_inches()[0] == pytest.approx(figures.WIDTH)
    main = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in main]
    assert [t[:3] for t in titles] == ["(a)", "(b)", "(c)", "(d)"]
    assert "paper: 99.57 %" in titles[1] and "this run: 99.30 %" in titles[1]
    texts = [t.get_text() for ax in main[2:] for t in ax.texts]
    assert texts == ["not run in this profile"] * 2  # Fashion-MNIST and ResNet-32 were not run
    assert main[0].get_xscale() == "log" and main[0].xaxis_inverted()  # remaining weights, compression to the right
    assert main[0].get_xlabel() == "weights remaining (%, log)"
    assert any(child.get_xlabel() == "pruned (%)" for child in main[0].child_axes)  # the sparsity on top
    assert not small_fonts(fig)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("n = 2" in t for t in legend) and not any("SD" in t or "±" in t for t in legend)
    with pytest.raises(ValueError, match="unknown setups"):
        figures.fig1({"vgg": CURVE})


def test_control_seeds_are_points_with_their_mean():
    fig, ax = plt.subplots()
    figures.error_vs_compression(ax, CURVE, "t", paper_rate=99.57)
    assert not ax.collections  # no fill_between band
    means = [line for line in ax.lines if line.get_label().startswith("lottery")]
    assert len(means) == 1 and np.allclose(means[0].get_ydata(), [1.3, 1.3, 1.3])
    assert any(line.get_label() == "the paper's rate for this setup" for line in ax.lines)


def test_eigenvalues_on_a_log_axis_and_the_loss_profile():
    fig, (left, right) = plt.subplots(1, 2, figsize=(figures.WIDTH, 3))
    values = {"G": {0: [500.0, 300, 200], 1: [450.0, 320, 150]}, "1-S": {0: [50.0, 30, 20], 1: [45.0, 32, 21]}}
    figures.eigenvalues(left, values, paper_range=(1e2, 1e3))
    assert left.get_yscale() == "log" and "paper's axis: 100 to 1000" in left.get_title()
    a = np.linspace(-0.5, 1.5, 9)
    figures.loss_profile(right, a, {"training loss": 0.01 + (a - 0.5) ** 2})
    assert right.get_yscale() == "log" and {t.get_text() for t in right.texts} == {"G", "1-S"}
    assert not small_fonts(figures.finish(fig))


def test_plane_map_dead_neurons_entropies_and_heat_maps():
    a, b = np.linspace(-0.5, 1.5, 5), np.linspace(-1, 1, 5)
    fig, ax = plt.subplots(figsize=(3.3, 3))
    figures.plane_map(ax, {"a": a, "b": b, "maps": {"loss": np.exp(np.add.outer(b ** 2, a))}}, "loss",
                      title="training loss, masked plane", paper_range=(1e-5, 1e-4))
    assert "masked plane" in ax.get_title() and "paper's scale" in ax.get_title()
    assert not small_fonts(figures.finish(fig))
    dead = figures.dead_neurons({"G": {"relu1": {"off": 0.2, "on": 0.01}, "relu2": {"off": 0.3, "on": 0.0}},
                                 "1-S": {"relu1": {"off": 0.05, "on": 0.0}, "relu2": {"off": 0.1, "on": 0.02}},
                                 "lottery": {"relu1": {"off": 0.1, "on": 0.0}}})
    labels = [t.get_text() for t in dead.axes[0].get_legend().get_texts()]
    assert "G: always off" in labels and "lottery: always on" in labels
    rng = np.random.default_rng(0)
    hist = figures.entropy_histograms({"G": {"relu1": np.r_[np.zeros(5), rng.uniform(0, 8, 15)]},
                                       "1-S": {"relu1": rng.uniform(0, 8, 20)}})
    assert "25 % at 0" in hist.axes[0].get_legend().get_texts()[0].get_text()
    heat = figures.per_class_heatmaps({net: {"relu1": rng.uniform(size=(4, 10))} for net in ("G", "1-S")})
    sparsity = figures.layer_sparsity({"G": {"fc1": 99.0, "fc2": 90.0}, "not reached": None}, "per layer")
    for f in (dead, hist, heat, sparsity):
        assert f.get_size_inches()[0] == pytest.approx(figures.WIDTH) and not small_fonts(f)


def test_transfer_scatter_encodes_compression():
    fig, ax = plt.subplots()
    figures.transfer_scatter(ax, [{"x": 1.0, "y": 80.0, "kind": "G", "sparsity": 95.0},
                                  {"x": 2.0, "y": 82.0, "kind": "dense", "sparsity": 0.0}], "H2 source (bits)")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "pruned (%)"  # the colour bar
    assert not small_fonts(figures.finish(fig))


PROVENANCE = {"commit": "1d81301abcdef0123", "run_keys": ["plane/0123456789abcdef0123", "lobster/fedcba987654321"],
              "profile": "quick", "seeds": [0, 1],
              "data": [{"name": "mnist-5k", "size": 5000, "checksum": "9f86d08188"}],
              "device": "cpu", "wall_time": 187.2, "versions": {"torch": "2.5.1", "numpy": "2.4.6"}}


def test_caption_numbers_the_figure_and_gives_its_provenance():
    block = blocks.figure_caption(3, "PSP L2 norm on the full plane.", PROVENANCE)
    html = block.html
    assert "<strong>Figure 3:</strong> PSP L2 norm on the full plane." in html
    for fact in ("commit 1d81301abcde", "profile quick", "seeds 0, 1", "mnist-5k (5,000 images, checksum 9f86d08188)",
                 "device cpu", "computed in 3 min 7 s", "plane/0123456789ab", "lobster/fedcba987654"):
        assert fact in html, fact
    versions = html.split("<details")[1]
    assert "torch 2.5.1; numpy 2.4.6" in versions and "plane/0123456789abcdef0123" in versions
    assert html.count("<details") == 1 and block.markdown.startswith("**Figure 3:**")
    with pytest.raises(ValueError, match="provenance lacks commit, wall_time"):
        blocks.figure_caption(1, "x", {k: v for k, v in PROVENANCE.items() if k not in ("commit", "wall_time")})


def test_caption_of_many_runs_lists_a_few_and_folds_the_rest():
    keys = [f"transfer/{i:012x}{0:08x}" for i in range(10)]
    html = blocks.figure_caption(9, "Many sources.", {**PROVENANCE, "run_keys": keys}).html
    line, folded = html.split("<details")
    assert "transfer/000000000005" in line and "transfer/000000000006" not in line and "and 4 more (listed below)" in line
    assert all(k in folded for k in keys)
