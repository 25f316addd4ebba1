"""The paper's own values, each with its place in the paper and the words it was read from.

Paper: Tartaglione, Bragagnolo, Grangetto, "Pruning artificial neural networks: a way to find
well-generalizing, high-entropy sharp minima", ICANN 2020 (text: ``shared/paper.txt``).

* ``kind="stated"``: a number written in the prose or a caption.
* ``kind="figure"``: the text keeps only a figure's tick labels (``fragments``, verbatim);
  ``low``/``high`` are the smallest and largest tick, so they give the plot's scale, not
  bounds on G or 1-S.
* ``source`` is verbatim (whitespace collapsed, words split at a line end rejoined);
  ``fragments`` are further verbatim pieces (tick labels, parts of an equation).
* ``claims``: the claims (C1-C6, see ``claims``) a value bears on; () for setup facts.
"""

from dataclasses import dataclass
from typing import Optional

CLAIM_IDS = ("C1", "C2", "C3", "C4", "C5", "C6")
KINDS = ("stated", "figure")
SETUPS = ("lenet300-mnist", "lenet5-mnist", "lenet5-fashion", "resnet32-cifar10")  # = experiments.setups


@dataclass(frozen=True)
class PaperValue:
    """One value from the paper (units in ``unit``; percentages of parameters are "% pruned")."""

    key: str
    claims: tuple
    quantity: str
    value: Optional[float]
    unit: str
    section: str  # "5.2"
    figure: str  # "Fig. 2a", or "" when no figure
    source: str  # verbatim sentence or caption
    kind: str = "stated"
    low: Optional[float] = None
    high: Optional[float] = None
    fragments: tuple = ()  # verbatim tick labels or equation pieces

    def __post_init__(self):
        unknown = [c for c in self.claims if c not in CLAIM_IDS]
        if unknown or self.kind not in KINDS:
            raise ValueError(f"{self.key}: claims must be among {CLAIM_IDS} and kind among {KINDS}")

    @property
    def where(self):
        """"Sec. 5.2, Fig. 2a"."""
        return f"Sec. {self.section}" + (f", {self.figure}" if self.figure else "")

    def text(self):
        """The value for a table: "99.57 % pruned", "1e-05 to 0.0001 (axis)", or the quantity."""
        if self.value is not None:
            return f"{self.value:g} {self.unit}".strip()
        if self.low is not None:
            return f"{self.low:g} to {self.high:g} {self.unit} (axis ticks)".replace("  ", " ")
        return self.quantity


def _v(key, claims, quantity, value, unit, section, figure, source, **kw):
    return PaperValue(key, tuple(claims), quantity, value, unit, section, figure, source, **kw)


_VALUES = (
    # --- setup facts (no claim) ------------------------------------------------------------
    _v("setups", (), "LeNet-300 and LeNet-5-caffe on MNIST, LeNet-5-caffe on Fashion-MNIST, ResNet-32 on CIFAR-10",
       None, "", "5", "Fig. 1", "LeNet-300 and LeNet-5-caffe trained on MNIST, LeNet-5-caffe trained on "
       "Fashion-MNIST [24] and ResNet-32 trained on CIFAR-10."),
    _v("fig1_panels", (), "Fig. 1 panels (a)-(d) in this order", None, "", "5.1", "Fig. 1",
       "Fig. 1: Test set error for different compression rates: LeNet-300 (a) trained on MNIST, LeNet-5 trained on "
       "MNIST (b), LeNet-5 trained on Fashion-MNIST (c) and ResNet-32 trained on CIFAR-10 (d)."),
    _v("resnet32_code", (), "ResNet-32 implementation (footnote 1)", None, "", "5", "",
       "https://github.com/akamaster/pytorch_resnet_cifar10"),
    _v("optimizer", (), "SGD with the cited papers' hyperparameters (no values given)", None, "", "5", "",
       "For all our trainings we used the SGD optimization method with standard hyper-parameters and data "
       "augmentation, as defined in the papers of the different compared techniques [6,13,19]."),
    _v("gradual_method", (), "G: LOBSTER gradual pruning", None, "", "5", "",
       "to one of the top-performing gradual pruning strategies, LOBSTER [19]."),
    _v("oneshot_method", (), "1-S: the best one-shot solution (Frankle and Carbin)", None, "", "5.2", "Fig. 2",
       "G is the solution found with gradual learning while 1-S is the best one-shot solution (Frankle and Carbin)."),
    _v("loss_map", (), "Loss map: the line through G and 1-S and one random orthogonal direction", None, "", "5.2",
       "Fig. 2a", "we compare a solution found with gradual pruning (G) and one-shot (1-S). Then, we take a random "
       "orthogonal direction to generate a 2D map."),
    _v("entropy_bits", (), "PSP-entropy uses log base 2 (bits)", 2, "", "4.2", "Eq. 4",
       "We can model an entropy measure for PSP:", fragments=("log2",)),
    # --- Sec. 5.1, Fig. 1 (C1, C2) ---------------------------------------------------------
    _v("lottery_rewind", ("C2",), "Lottery control: LOBSTER's mask, survivors reset to their original values",
       None, "", "5", "", "we first obtain a sparse network model using LOBSTER; the non-pruned parameters are then "
       "re-initialized to their original values, according to the lottery ticket hypothesis [6]."),
    _v("reinit_runs", ("C1", "C2"), "Same mask, new random initialization: runs", 10, "new-init runs", "5", "",
       "Towards this end, we tried 10 different new starting configurations."),
    _v("random_mask_runs", ("C1", "C2"), "Random mask with LOBSTER's number of pruned parameters: runs", 10,
       "random-mask runs", "5", "", "we randomly define a new pruned architecture with the same number of pruned parameters as those "
       "found via LOBSTER. Also in this case, 10 different structures have been tested."),
    _v("lenet300_retrain_fails", ("C1", "C2"), "LeNet-300 / MNIST: re-training fails beyond this compression",
       95, "% pruned", "5.1", "Fig. 1a", "when we remove more than 95% of the LeNet-300 model’s parameters, as "
       "observed in Fig. 1a), the re-training approach strives in achieving low classification errors."),
    _v("lenet300_remaining", ("C2",), "LeNet-300 / MNIST: original performance lost below this share remaining",
       5, "% remaining", "5.1", "Fig. 1a", "LeNet-300 is no longer able to reproduce the original performance when "
       "composed of less then 5% of the original parameters."),
    _v("lenet5_accuracy_98", ("C2",), "LeNet-5 / MNIST: accuracy 'around' this at 98 % pruned (which curve of "
       "Fig. 1b is not said)", 99.20, "% accuracy", "5.1", "Fig. 1b", "LeNet-5, when applied on MNIST, is able to "
       "achieve an accuracy of around 99.20% even when 98% of its parameters are pruned away (Fig. 1b)."),
    _v("lenet5_pruned_98", ("C2",), "LeNet-5 / MNIST: compression at which ~99.20 % accuracy is still reached", 98,
       "% pruned", "5.1", "Fig. 1b", "even when 98% of its parameters are pruned away (Fig. 1b)."),
    _v("fashion_degrades", ("C1", "C2"), "LeNet-5 / Fashion-MNIST: performance already degrades at this compression",
       80, "% pruned", "5.1", "Fig. 1c",
       "removing 80% of the parameters already leads to performance degradation (Fig. 1c)."),
    _v("lenet5_top_sparsity", ("C1",), "LeNet-5 / MNIST: highest compression reached (by G)", 99.57, "% pruned",
       "5.2", "Fig. 1b", "the highest compression rate (99.57% of pruned parameters as shown in Fig. 1b)."),
    # --- Sec. 5.2, Fig. 2 (C3) ---------------------------------------------------------------
    _v("fig2_sparsity", ("C3",), "LeNet-5 / MNIST: compression of G and 1-S in Fig. 2", 99.57, "% pruned", "5.2",
       "Fig. 2", "Fig. 2: Results of LeNet-5 trained on MNIST with the highest compression (99.57%)"),
    _v("fig2a_train_loss", ("C3",), "Training loss on the G / 1-S map (G in the lower-loss region)", None, "",
       "5.2", "Fig. 2a", "(a) plots loss in the training set", kind="figure", low=1e-5, high=1e-4,
       fragments=("10−5", "10−4")),
    _v("fig2b_eigenvalues", ("C3",), "Top-5 Hessian eigenvalues of G and 1-S (all positive; G's larger)", None, "",
       "5.2", "Fig. 2b", "(b) plots the top-5 largest hessian eigenvalues.", kind="figure", low=1e2, high=1e3,
       fragments=("102", "103")),  # 10^2, 10^3: superscripts lost in the text
    _v("hessian_top_k", ("C3",), "Number of Hessian eigenvalues shown", 5, "eigenvalues", "5.2", "Fig. 2b",
       "Here, we show also the plot of the top-5 Hessian eigenvalues (all positive), in Fig. 2b"),
    # --- Sec. 5.3, Fig. 3 and 4 (C4, C5) -----------------------------------------------------
    _v("fig3_sparsity", ("C4",), "LeNet-5 / MNIST: compression of G and 1-S in Fig. 3", 99.57, "% pruned", "5.3",
       "Fig. 3", "Fig. 3: L2 norm of PSP values for LeNet-5 trained on MNIST with 99.57% of pruned parameters."),
    _v("fig3_psp_l2", ("C4",), "PSP L2 norm on the G / 1-S map (G lower)", None, "", "5.3", "Fig. 3",
       "Fig. 3: L2 norm of PSP values for LeNet-5 trained on MNIST", kind="figure", low=1e3, high=1e4,
       fragments=("103", "104")),
    _v("fig4_sparsity", ("C5",), "LeNet-5 / MNIST: compression of G and 1-S in Fig. 4", 99.57, "% pruned", "5.3",
       "Fig. 4", "Fig. 4: Results on LeNet-5 trained on MNIST with 99.57% of pruned parameters."),
    _v("fig4a_entropy1", ("C5",), "First-order PSP-entropy on the G / 1-S map (comparable)", None, "bits", "5.3",
       "Fig. 4a", "(a) plots the first order PSP-entropy", kind="figure", low=1.82, high=1.9,
       fragments=("1.9", "1.86", "1.84", "1.82")),
    _v("fig4b_entropy2", ("C5",), "Second-order PSP-entropy on the G / 1-S map (G higher)", None, "bits", "5.3",
       "Fig. 4b", "(b) shows the second-order PSP entropy.", kind="figure", low=4.35, high=4.50,
       fragments=("4.50", "4.45", "4.40", "4.35")),
)

PAPER = {v.key: v for v in _VALUES}
if len(PAPER) != len(_VALUES):
    raise RuntimeError("duplicate key in psputil.experiments.paper")

# What each claim says, in the paper's words (no numbers; those are in _VALUES).
FINDINGS = {
    "C1": (("6", "However, there is a limit to the maximum achievable sparsity, which can be overcome using gradual "
            "pruning."),),
    "C2": (("5.1", "We can clearly identify a low compression rate regime in which the re-initialized model is able "
            "to recover the original accuracy"),
           ("5.1", "the error gap between a randomly initialized model and a model using the original "
            "weights’ values is minor, with the latter being slightly better. Furthermore, they both fail in "
            "recovering the performance for high compression rates.")),
    "C3": (("5.2", "we see that iterative pruning lies in a lower loss region."),
           ("5.2", "we observe that the solution proposed by iterative pruning lies in a narrower minimum than the one "
            "found using the one-shot strategy, despite generalizing slightly better.")),
    "C4": (("5.3", "gradually-pruned architectures naturally have lower PSP L2-norm values, as we observe in "
            "Fig. 3."),),
    "C5": (("5.3", "gradual and one-shot pruning show comparable first-order entropies, as shown in Fig. 4a."),
           ("5.3", "gradual pruning shows higher entropy than one-shot, as depicted in Fig. 4b")),
    "C6": (("6", "highly-sparse gradually-pruned architectures are able to extract general features non-strictly "
            "correlated to the trained classes, making them unexpectedly, potentially, a good match for "
            "transfer-learning scenarios."),),
}
# Sec. 5.2 extends C3-C5 from LeNet-5 / MNIST to the other setups, without naming a rate for them.
OTHER_SETUPS = ("5.2", "However, we remark that all the observations for such a case apply also to the other "
                "architectures/datasets explored in Sec. 5.1.")

# The compression (% pruned) at which the paper makes each claim for each setup: for C1 and
# C2's failure at high compression, where the paper says re-training fails or degrades (or,
# for LeNet-5 / MNIST, its highest rate); for C3-C5 the rate of Fig. 2-4. Absent: no rate given.
_REGIME = {
    "C1": {"lenet300-mnist": "lenet300_retrain_fails", "lenet5-mnist": "lenet5_top_sparsity",
           "lenet5-fashion": "fashion_degrades"},
    "C3": {"lenet5-mnist": "fig2_sparsity"},
    "C4": {"lenet5-mnist": "fig3_sparsity"},
    "C5": {"lenet5-mnist": "fig4_sparsity"},
}
_REGIME["C2"] = _REGIME["C1"]

NOT_IN_PAPER = (
    "LOBSTER's hyperparameters, learning rates, schedules, batch sizes, epochs and data augmentation",
    "seeds and the number of LOBSTER and one-shot runs (only the 10 new inits and 10 random masks are given)",
    "test errors of the dense models, and of G and 1-S at 99.57 % (only 'generalizing slightly better')",
    "any number read off Fig. 1 (no tick labels of Fig. 1 survive in the text)",
    "the highest compression reached for LeNet-300, LeNet-5 / Fashion-MNIST and ResNet-32",
    "the compression at which re-initialization fails for ResNet-32 / CIFAR-10",
    "the five eigenvalues as numbers, the Hessian method's settings, the loss map's grid and seed",
    "whether Fig. 3 shows the L2 norm or its square ('(z2)' lost its superscript)",
    "how the entropy is aggregated over neurons and layers, on which data, and what second order means exactly",
    "how 'the best one-shot solution' 1-S was selected",
)


def value(key):
    """The ``PaperValue`` stored under `key`.

    Raises:
        ValueError: unknown key (the message lists the valid keys).
    """
    if key not in PAPER:
        raise ValueError(f"unknown paper value {key!r}; valid keys: {', '.join(PAPER)}")
    return PAPER[key]


def for_claim(claim):
    """The paper values bearing on `claim` ("C1".."C6"), in the paper's order (C6 has none).

    Raises:
        ValueError: unknown claim id.
    """
    _check_claim(claim)
    return tuple(v for v in _VALUES if claim in v.claims)


def findings(claim):
    """The sentences stating `claim`: tuple of (section, verbatim sentence)."""
    _check_claim(claim)
    return FINDINGS[claim]


def regime(claim, setup):
    """The ``PaperValue`` giving the compression (% pruned) at which the paper makes `claim` for `setup`.

    Returns:
        ``PaperValue`` or None when the paper names no rate for that claim and setup.

    Raises:
        ValueError: unknown claim or setup name.
    """
    _check_claim(claim)
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; valid: {', '.join(SETUPS)}")
    key = _REGIME.get(claim, {}).get(setup)
    return PAPER[key] if key else None


def _check_claim(claim):
    if claim not in CLAIM_IDS:
        raise ValueError(f"unknown claim {claim!r}; valid: {', '.join(CLAIM_IDS)}")
