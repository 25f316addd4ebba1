"""Second-order pair sums (``psp.counts.pair_entropy_sums``) against a float64 brute force on random bits."""

import itertools
import math

import pytest
import torch

from psputil.psp import counts


def brute_force(active, labels, num_classes, eps):
    """(N, C): per neuron and class, the sum over partners of the joint-state entropy in bits."""
    n = active.shape[1]
    out = torch.zeros(n, num_classes, dtype=torch.float64)
    for c in range(num_classes):
        rows = active[labels == c].long()
        size = len(rows)
        if size == 0:
            continue
        for i, j in itertools.permutations(range(n), 2):
            codes = (rows[:, i] * 2 + rows[:, j]).tolist()
            h = 0.0
            for state in range(4):
                p = min(max(codes.count(state) / size, eps), 1 - eps)
                h -= p * math.log2(p) if p > 0 else 0.0
            out[i, c] += h
    return out


def sums(active, labels, num_classes, eps, block_size):
    packed, offsets = counts.group_by_class(counts.pack_bits(active), labels, num_classes)
    ones = torch.stack([active[labels == c].sum(0) for c in range(num_classes)], 1).double()
    return counts.pair_entropy_sums(packed, offsets, active.shape[1], ones, eps, block_size)


@pytest.fixture(scope="module")
def sample():
    g = torch.Generator().manual_seed(0)
    active = torch.rand(90, 11, generator=g) < torch.rand(11, generator=g)  # neurons of different rates
    active[:, 3] = True  # an always-active neuron
    labels = torch.randint(0, 3, (90,), generator=g)  # class 3 of 4 has no samples
    return active, labels


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_pair_sums_match_brute_force(sample, eps):
    active, labels = sample
    expected = brute_force(active, labels, 4, eps)
    ours = sums(active, labels, 4, eps, block_size=4)
    # fixed point: each of the 4 terms of a pair rounds by < 2^-29 bits; 10 partners
    torch.testing.assert_close(ours, expected, atol=10 * 4 * 2.0**-29, rtol=0)


def test_every_path_gives_the_same_bits(sample, monkeypatch):
    active, labels = sample
    reference = sums(active, labels, 4, 1e-4, block_size=1024)
    for block in (1, 3, 5, 11):
        assert torch.equal(sums(active, labels, 4, 1e-4, block), reference), block
    monkeypatch.setattr(counts, "ROW_TABLE_BYTES", 0)  # four look-ups per pair instead of the per-row tables
    assert torch.equal(sums(active, labels, 4, 1e-4, 3), reference)
    monkeypatch.setattr(counts, "_MAGIC_LIMIT", 1)  # float64 counts, as for classes of >= 2^23 samples
    assert torch.equal(sums(active, labels, 4, 1e-4, 3), reference)
