"""The paper's values: every claim has one, every quote is the paper's own words, helpers check their input."""

import re
from pathlib import Path

import pytest

from psputil.experiments import paper, setups

PAPER_TXT = Path(__file__).parents[1] / ".." / "shared" / "paper.txt"


def _normal(text):
    """Collapse whitespace; join words split at a line end ("degrada-\\ntion"); ignore hyphens otherwise."""
    return " ".join(re.sub(r"-\s+", "-", text).replace("-", "").split())


def test_every_claim_has_a_paper_value_or_finding():
    for claim in ("C1", "C2", "C3", "C4", "C5"):
        values = paper.for_claim(claim)
        assert values, claim
        assert any(v.value is not None or v.low is not None for v in values), f"{claim} has no number"
    assert paper.for_claim("C6") == () and paper.findings("C6")  # a conjecture: words, no number
    assert {c for v in paper.PAPER.values() for c in v.claims} == {"C1", "C2", "C3", "C4", "C5"}


def test_every_value_says_where_and_from_what():
    for v in paper.PAPER.values():
        assert v.source.strip() and v.section and v.where.startswith("Sec. "), v.key
        assert v.quantity and v.text(), v.key
        if v.kind == "figure":  # a figure value is the plot's scale, read from its tick labels
            assert v.fragments and v.low is not None and v.low < v.high and v.value is None, v.key
        else:
            assert v.low is None and v.high is None, v.key
    assert paper.value("lenet5_top_sparsity").value == 99.57
    assert paper.value("lenet5_top_sparsity").where == "Sec. 5.2, Fig. 1b"
    assert paper.value("fig2a_train_loss").text() == "1e-05 to 0.0001 (axis ticks)"


@pytest.mark.skipif(not PAPER_TXT.exists(), reason="../shared/paper.txt (the paper's text) is not beside this clone")
def test_every_quote_is_in_the_paper():
    text = _normal(PAPER_TXT.read_text(encoding="utf-8"))
    quotes = [(v.key, q) for v in paper.PAPER.values() for q in (v.source, *v.fragments)]
    quotes += [(c, q) for c, found in paper.FINDINGS.items() for _, q in found] + [("other", paper.OTHER_SETUPS[1])]
    missing = [key for key, q in quotes if _normal(q) not in text]
    assert not missing


def test_regime_per_claim_and_setup():
    assert paper.regime("C1", "lenet5-mnist").value == 99.57
    assert paper.regime("C2", "lenet300-mnist").value == 95
    assert paper.regime("C1", "lenet5-fashion").value == 80
    assert paper.regime("C3", "lenet5-mnist").figure == "Fig. 2"
    assert paper.regime("C5", "lenet5-mnist").figure == "Fig. 4"
    assert paper.regime("C1", "resnet32-cifar10") is None  # the paper names no rate there
    assert paper.regime("C3", "lenet300-mnist") is None
    assert paper.SETUPS == setups.SETUP_NAMES


def test_bad_names_raise_with_the_valid_choices():
    with pytest.raises(ValueError, match="valid: C1, C2"):
        paper.for_claim("C7")
    with pytest.raises(ValueError, match="valid keys: setups"):
        paper.value("nope")
    with pytest.raises(ValueError, match="lenet300-mnist"):
        paper.regime("C1", "vgg16")
    with pytest.raises(ValueError, match="claims must be among"):
        paper.PaperValue("k", ("C9",), "q", 1.0, "", "5", "", "s")
