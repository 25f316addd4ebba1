"""Counting neuron states per class and turning the counts into PSP-entropies (bits).

Tensor-level helpers shared by the model-level functions and the grid metrics of
``psputil.psp``. A neuron is *active* on a sample when its PSP z > 0.

* Order 1: counts of active samples per neuron and class, ``A^T Y`` (Y one-hot).
* Order 2: for a pair (i, j) and class c, ``n11 = A_c^T A_c`` (A_c the 0/1
  activity of the class-c samples); the other joint counts follow exactly:
  ``n10 = n1_i - n11``, ``n01 = n1_j - n11``, ``n00 = n_c - n1_i - n1_j + n11``.
  The pair matrix is computed tile by tile (``block_size`` neurons a side) from
  bit-packed activities, so memory is O(samples x neurons / 8 + block_size^2 +
  block_size x samples) (the last: two per-row look-up tables per class, which cut
  the entropy of a pair to two gathers; ``ROW_TABLE_BYTES`` caps them). Pair
  entropies are summed in fixed point (integers of 2^-28 bits): exact and
  independent of the tiling.
* Order k >= 3: joint counts of random k-subsets with one ``bincount``.

Probabilities of every joint state are clamped to [eps, 1 - eps] independently
(no renormalisation); for order 1 this is exactly the authors' formula.
Counts from float32 matrix products are exact: 0/1 operands, integer sums < 2^24.
"""

import math

import torch

_LN2 = math.log(2.0)
_EXACT_FLOAT32 = 2**24  # float32 holds every integer below this exactly


def neg_plogp(p, eps=0.0):
    """``-p log2 p`` elementwise (0 log 0 = 0), p clamped to [eps, 1 - eps]; overwrites `p`."""
    p.clamp_(eps, 1.0 - eps)
    return torch.xlogy(p, p, out=p).mul_(-1.0 / _LN2)


def state_entropy(state_counts, size, eps=0.0):
    """Entropy in bits of a discrete distribution given by the counts of its states.

    Args:
        state_counts: float64 tensors, one per state, all broadcastable (overwritten).
        size: samples behind the counts (tensor broadcastable to them, or a number).
        eps: probabilities are clamped to [eps, 1 - eps] before ``-p log2 p``.
    """
    total = None
    for counts in state_counts:
        term = neg_plogp(counts.div_(size), eps)
        total = term if total is None else total.add_(term)
    return total


def class_onehot(targets, num_classes):
    """(B, num_classes) float32 one-hot of integer labels; ValueError when out of range."""
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class labels, got dtype {targets.dtype}")
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}); "
            f"got values from {int(targets.min())} to {int(targets.max())}"
        )
    return torch.nn.functional.one_hot(targets.long(), num_classes).float()


def active_counts(active, onehot):
    """Per point, neuron and class the number of active samples: (P, B, N) x (B, C) -> (P, N, C) float64."""
    if active.shape[1] >= _EXACT_FLOAT32:
        return torch.einsum("pbn,bc->pnc", active.double(), onehot.double())
    return torch.matmul(active.float().transpose(1, 2), onehot).double()


def first_order_entropy(ones, class_sizes, eps=0.0):
    """H_b(p_ic) in bits per neuron and class, (..., N, C); classes without samples give 0."""
    ones = ones.double()
    h = state_entropy((ones.clone(), class_sizes - ones), class_sizes, eps)
    return torch.where(class_sizes > 0, h, h.new_zeros(()))


def pack_bits(active):
    """Bool (..., N) -> uint8 (..., ceil(N / 8)), neuron 8b + k in bit k of byte b."""
    pad = (-active.shape[-1]) % 8
    grouped = torch.nn.functional.pad(active.to(torch.uint8), (0, pad)).unflatten(-1, (-1, 8))
    shifts = torch.arange(8, dtype=torch.uint8, device=active.device)
    return (grouped << shifts).sum(-1, dtype=torch.uint8)


def unpack_bits(packed, start, stop, dtype=torch.float32):
    """Neurons start..stop-1 of packed rows as a 0/1 tensor (..., stop - start) of `dtype`."""
    first, last = start // 8, (stop + 7) // 8
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed[..., first:last, None] >> shifts) & 1
    return bits.flatten(-2)[..., start - 8 * first : stop - 8 * first].to(dtype)


def group_by_class(packed, labels, num_classes):
    """Rows sorted by label (stable) and the (C + 1,) row offsets of each class."""
    order = torch.sort(labels, stable=True).indices
    sizes = torch.bincount(labels, minlength=num_classes)
    offsets = torch.zeros(num_classes + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(sizes.cpu(), 0)
    return packed[order], offsets.tolist()


def pair_entropy_sums(packed, offsets, num_neurons, ones, eps=0.0, block_size=1024):
    """Per neuron i and class c, ``sum over j != i of H_c(i, j)`` in bits, (N, C) float64.

    Args:
        packed: (n, ceil(N / 8)) uint8 activity bits, rows grouped by class.
        offsets: C + 1 row offsets of the classes in `packed`.
        num_neurons: N.
        ones: (N, C) counts of active samples per neuron and class.
        eps: clamp of each of the four joint-state probabilities.
        block_size: neurons per tile side; the result does not depend on it (bit for bit).

    Only tiles on or above the diagonal are computed (H is symmetric); a tile
    adds its row sums to its rows and, off the diagonal, its column sums to its
    columns. Counts need one float32 product per class and tile. The entropy of a
    pair is two look-ups in per-row tables (``_row_tables``), in fixed point: every
    term is an integer number of 2^-28 bits (rounding error < 2^-29 bits per term),
    so the sums are exact integers whatever their order or the tiling.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    sizes = [offsets[c + 1] - offsets[c] for c in range(len(offsets) - 1)]
    small = max(sizes) < _MAGIC_LIMIT  # counts fit the float32 trick of ``_counts``
    count_dtype = torch.float32 if small else torch.float64
    device = packed.device
    # -p log2 p for every possible count k of a class: p = k / n_c (clamped); gathers replace the logs
    tables = [_fixed_point(neg_plogp(torch.arange(size + 1, dtype=torch.float64, device=device) / max(size, 1), eps))
              for size in sizes]
    ones = ones.round().to(torch.int32)
    sums = torch.zeros(num_neurons, len(sizes), dtype=torch.int64, device=device)
    per_row_bytes = 8 * sum(size + 1 for size in sizes)  # two int32 tables per class
    unpacked = {}  # block start -> unpacked block, kept while they fit in UNPACKED_BYTES
    keep = packed.shape[0] * num_neurons * torch.finfo(count_dtype).bits // 8 <= UNPACKED_BYTES

    def block(start, stop):
        if start in unpacked:
            return unpacked[start]
        values = unpack_bits(packed, start, stop, count_dtype)
        if keep:
            unpacked[start] = values
        return values

    for i0 in range(0, num_neurons, block_size):
        i1 = min(i0 + block_size, num_neurons)
        block_i = block(i0, i1)
        unpacked.pop(i0, None)  # no later row block reads it
        by_row = (i1 - i0) * per_row_bytes <= ROW_TABLE_BYTES
        row_tables = [_row_tables(tables[c], ones[i0:i1, c], size) if by_row and size else None
                      for c, size in enumerate(sizes)]
        for j0 in range(i0, num_neurons, block_size):
            j1 = min(j0 + block_size, num_neurons)
            block_j = block_i if j0 == i0 else block(j0, j1)
            for c, size in enumerate(sizes):
                if size == 0:
                    continue
                rows = slice(offsets[c], offsets[c + 1])
                n11, base = _counts(block_i[rows], block_j[rows], small)
                if by_row:
                    h = _tile_by_rows(n11, base, row_tables[c], ones[j0:j1, c], size + 1)
                else:
                    h = _tile_direct(n11, base, ones[i0:i1, c], ones[j0:j1, c], size, tables[c])
                if j0 == i0:
                    h.fill_diagonal_(0)
                else:
                    sums[j0:j1, c] += h.sum(0, dtype=torch.int64)  # no conversion pass: h is int64
                sums[i0:i1, c] += h.sum(1, dtype=torch.int64)
    return sums.double() / _SCALE  # exact: a power of two


# Fixed point of the entropy terms: a pair's four terms (each <= 0.531 bits) stay below 2^31.
_SCALE = 2.0**28
# float32 2^23 + k holds the integer k < 2^23 in its low mantissa bits: the count matrix comes
# out of the product already as integers (bit pattern 0x4B000000 + k), with no conversion pass.
_MAGIC_LIMIT = 2**23
_MAGIC_BITS = 0x4B000000
ROW_TABLE_BYTES = 256 * 2**20  # memory for the per-row tables of one row block (else 4 look-ups per pair)
UNPACKED_BYTES = 256 * 2**20  # unpacked activities of a layer kept between tiles when they fit (else unpacked per tile)


def _fixed_point(values):
    """float64 bits -> int32 multiples of 2^-28 bits (rounded)."""
    return torch.round(values * _SCALE).to(torch.int32)


def _counts(a, b, small):
    """(``a^T b`` as int32 plus `base`, base) for 0/1 columns: both-active counts of a tile in one class."""
    if small:
        magic = torch.full((), float(_MAGIC_LIMIT), dtype=a.dtype, device=a.device)
        return torch.addmm(magic, a.T, b).view(torch.int32), _MAGIC_BITS
    return (a.T @ b).round_().to(torch.int32), 0


def _row_tables(table, ones_i, size):
    """Per row i of a block, (Ti * (size + 1),) int32 tables R and S, flattened row-major.

    ``R_i(k) = T(k) + T(n1_i - k)`` covers the states (1, 1) and (1, 0) of a pair with
    k = n11; ``S_i(u) = T(u) + T(size - n1_i - u)`` covers (0, 1) and (0, 0) with
    u = n01 = n1_j - k, since n00 = size - n1_i - u. Entries that no pair can reach
    (k > n1_i, u > size - n1_i) are clamped look-ups, never read.
    """
    k = torch.arange(size + 1, dtype=torch.int32, device=table.device)
    out = []
    for first in (ones_i, size - ones_i):
        rest = (first[:, None] - k).clamp_(0, size)
        out.append(table.index_select(0, rest.view(-1)).view(rest.shape).add_(table).view(-1))
    return tuple(out)


def _tile_by_rows(n11, base, tables, ones_j, width):
    """Fixed-point pair entropies (Ti, Tj) int32 of one tile and class, two look-ups per pair."""
    r, s = tables
    rows = torch.arange(n11.shape[0], dtype=torch.int32, device=n11.device) * width
    index = n11 + (rows - base)[:, None]  # i * width + k
    first = r.index_select(0, index.view(-1))
    torch.sub((rows + base)[:, None], n11, out=index)
    index += ones_j[None, :]  # i * width + n1_j - k
    # the sum lands in int64 (one pass), so the tile's row and column sums need no conversion
    return torch.add(first, s.index_select(0, index.view(-1)), out=torch.empty(first.shape, dtype=torch.int64,
                                                                                 device=first.device)).view(n11.shape)


def _tile_direct(n11, base, ones_i, ones_j, size, table):
    """As ``_tile_by_rows`` with four look-ups per pair in the class table (no per-row tables)."""
    k = n11 - base
    h = table.index_select(0, k.view(-1)).view(k.shape).long()
    h += table.index_select(0, (ones_i[:, None] - k).view(-1)).view(k.shape)
    n01 = ones_j[None, :] - k
    h += table.index_select(0, n01.view(-1)).view(k.shape)
    h += table.index_select(0, n01.neg_().add_((size - ones_i)[:, None]).view(-1)).view(k.shape)
    return h


def random_subsets(num_neurons, order, samples, generator):
    """(samples, order) long: independent uniform k-subsets of range(num_neurons)."""
    chunks = []
    for start in range(0, samples, 256):
        rows = min(256, samples - start)
        chunks.append(torch.rand(rows, num_neurons, generator=generator).topk(order, dim=1).indices)
    return torch.cat(chunks)


def subset_entropy(packed, labels, class_sizes, subsets, eps=0.0):
    """``sum_c H(joint state of the subset | c)`` in bits for each row of `subsets` (m, k) -> (m,)."""
    num_classes = len(class_sizes)
    m, k = subsets.shape
    byte, bit = subsets // 8, (subsets % 8).to(torch.uint8)
    states = 1 << k
    out = []
    for start in range(0, m, 64):
        sub_byte, sub_bit = byte[start : start + 64], bit[start : start + 64]
        rows = len(sub_byte)
        values = (packed[:, sub_byte] >> sub_bit) & 1  # (n, rows, k)
        code = (values.long() << torch.arange(k, device=packed.device)).sum(-1)  # (n, rows)
        index = (labels[:, None] * rows + torch.arange(rows, device=packed.device)) * states + code
        counts = torch.bincount(index.flatten(), minlength=num_classes * rows * states)
        counts = counts.view(num_classes, rows, states).double()
        size = class_sizes.double().view(-1, 1)
        h = state_entropy(counts.unbind(-1), size, eps)  # (C, rows)
        out.append(torch.where(size > 0, h, h.new_zeros(())).sum(0))
    return torch.cat(out)
