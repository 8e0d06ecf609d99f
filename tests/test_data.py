"""Dataset loaders: real MNIST / CIFAR-10 (if FEDRDSKD_DATA is set), generated SVHN .mat files,
IDX files, the disk cache and memo, the missing-dataset message, normalisation and batching."""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat
from PIL import Image

from fedrdskd import data
from fedrdskd.data import (DATASETS, DatasetNotFoundError, ImageDataset, batches,
                           clear_memory_cache, dataset_info, load_dataset, normalize,
                           resolve_data_root)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def fresh_memo():
    """Every test starts and ends with an empty in-process dataset memo."""
    clear_memory_cache()
    yield
    clear_memory_cache()


@pytest.fixture(scope="module")
def real_data_root(shared_data_root) -> Path:
    """The real offline datasets (conftest's fixture skips with a reason if unset)."""
    return shared_data_root


@pytest.fixture(scope="module")
def cifar_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cifar-cache")


def write_svhn_mat(path: Path, labels: list[int], seed: int = 0) -> np.ndarray:
    """SVHN's format: X uint8 [32, 32, 3, N], y [N, 1] with 10 meaning digit 0."""
    images = np.random.default_rng(seed).integers(0, 256, (32, 32, 3, len(labels)),
                                                  dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"X": images, "y": np.asarray(labels, dtype=np.uint8).reshape(-1, 1)})
    return images


def write_idx_images_and_labels(raw: Path, prefix: str, images: np.ndarray,
                                labels: np.ndarray, *, gzipped: bool = False) -> None:
    """IDX files as torchvision's MNIST/FashionMNIST expect them (or only their .gz)."""
    raw.mkdir(parents=True, exist_ok=True)
    for suffix, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        header = struct.pack(">HBB", 0, 0x08, array.ndim)
        header += struct.pack(">" + "I" * array.ndim, *array.shape)
        payload = header + array.astype(np.uint8).tobytes()
        if gzipped:
            (raw / f"{prefix}-{suffix}.gz").write_bytes(gzip.compress(payload))
        else:
            (raw / f"{prefix}-{suffix}").write_bytes(payload)


# ---- real data ---------------------------------------------------------------------------


def test_mnist_idx_sizes_and_class_counts(real_data_root):
    train = load_dataset("mnist", real_data_root, train=True)
    test = load_dataset("mnist", real_data_root, train=False)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28) and test.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(test.labels).tolist() == MNIST_TEST_COUNTS
    assert train.info is DATASETS["mnist"]
    assert load_dataset("mnist", real_data_root, train=True) is train  # memoised


def test_cifar10_image_folder_test_split_and_disk_cache(real_data_root, cifar_cache):
    started = time.perf_counter()
    first = load_dataset("cifar10", real_data_root, train=False, cache_dir=cifar_cache)
    decode_seconds = time.perf_counter() - started
    assert first.images.shape == (10000, 3, 32, 32) and first.images.dtype == torch.uint8
    assert torch.bincount(first.labels).tolist() == [1000] * 10
    assert first.info.class_names[:3] == ("airplane", "automobile", "bird")
    # Sorted by class folder then file name: index 3000 is test/cat/0000.jpg, label 3 (cat).
    jpeg = real_data_root / "cifar10-jpg" / "test" / "cat" / "0000.jpg"
    reference = np.asarray(Image.open(jpeg).convert("RGB"), dtype=np.int64).transpose(2, 0, 1)
    assert np.abs(first.images[3000].numpy().astype(np.int64) - reference).max() <= 1
    assert first.labels[3000].item() == 3
    assert len(list(cifar_cache.glob("cifar10-test-*.npz"))) == 1

    clear_memory_cache()
    started = time.perf_counter()
    cached = load_dataset("cifar10", real_data_root, train=False, cache_dir=cifar_cache)
    cached_seconds = time.perf_counter() - started
    assert cached is not first
    assert torch.equal(cached.images, first.images) and torch.equal(cached.labels, first.labels)
    assert cached_seconds < decode_seconds / 2


def test_cifar10_train_split_and_root_being_the_image_folder(real_data_root, cifar_cache):
    train = load_dataset("cifar10", real_data_root, train=True, cache_dir=cifar_cache)
    assert train.images.shape == (50000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    same = load_dataset("cifar10", real_data_root / "cifar10-jpg", train=True,
                        cache_dir=cifar_cache)
    assert torch.equal(same.images, train.images) and torch.equal(same.labels, train.labels)


# ---- generated files ---------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["svhn", "SVHN", "."])
def test_svhn_mat_files(tmp_path, folder):
    train_labels = [1, 10, 3, 10, 9]
    images = write_svhn_mat(tmp_path / folder / "train_32x32.mat", train_labels)
    write_svhn_mat(tmp_path / folder / "test_32x32.mat", [10, 2], seed=1)
    train = load_dataset("svhn", tmp_path, train=True, cache_dir=tmp_path / "cache")
    test = load_dataset("svhn", tmp_path, train=False, cache_dir=tmp_path / "cache")
    assert train.images.shape == (5, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [1, 0, 3, 0, 9]  # label 10 is the digit 0
    assert test.labels.tolist() == [0, 2]
    # images[i, c, h, w] == X[h, w, c, i]
    assert train.images[2, 1, 4, 7].item() == images[4, 7, 1, 2]
    assert np.array_equal(train.images.numpy(), images.transpose(3, 2, 0, 1))


def test_svhn_cache_is_reused_and_invalidated_when_the_file_changes(tmp_path):
    mat = tmp_path / "svhn" / "train_32x32.mat"
    write_svhn_mat(mat, [1, 2, 3])
    first = load_dataset("svhn", tmp_path, train=True, cache_dir=tmp_path / "cache")
    clear_memory_cache()
    again = load_dataset("svhn", tmp_path, train=True, cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, again.images)
    assert len(list((tmp_path / "cache").glob("svhn-train_32x32-*.npz"))) == 1

    write_svhn_mat(mat, [4, 5, 6, 7], seed=3)
    clear_memory_cache()
    changed = load_dataset("svhn", tmp_path, train=True, cache_dir=tmp_path / "cache")
    assert changed.labels.tolist() == [4, 5, 6, 7]
    assert len(list((tmp_path / "cache").glob("svhn-train_32x32-*.npz"))) == 2


def test_fashion_mnist_from_idx_files(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    write_idx_images_and_labels(tmp_path / "FashionMNIST" / "raw", "t10k", images,
                                np.array([9, 0, 4]))
    test = load_dataset("fashion_mnist", tmp_path, train=False)
    assert test.images.shape == (3, 1, 28, 28)
    assert test.labels.tolist() == [9, 0, 4]
    assert np.array_equal(test.images[:, 0].numpy(), images)
    assert test.info.image_shape == (1, 28, 28)


def test_mnist_from_gzipped_idx_files_only(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28))
    write_idx_images_and_labels(tmp_path / "MNIST" / "raw", "train", images,
                                np.array([1, 2, 3, 4]), gzipped=True)
    train = load_dataset("mnist", tmp_path, train=True)
    assert train.labels.tolist() == [1, 2, 3, 4]
    assert np.array_equal(train.images[:, 0].numpy(), images)
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path, train=False)


def test_image_folder_with_wrong_classes_is_refused(tmp_path):
    (tmp_path / "cifar10-jpg" / "test" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="CIFAR-10 needs exactly"):
        load_dataset("cifar10", tmp_path, train=False, cache_dir=tmp_path / "cache")


# ---- the missing-dataset message ---------------------------------------------------------


def test_missing_dataset_lists_every_path_tried_and_what_to_set(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10", tmp_path, train=True, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert "'cifar10' (train split) not found" in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert str(tmp_path / "cifar10-jpg" / "train") in message
    assert str(tmp_path / "train") in message
    for fix in ("data.root=", "FEDRDSKD_DATA", "data.download=true"):
        assert fix in message


def test_missing_root_says_that_nothing_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDRDSKD_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="FEDRDSKD_DATA is unset"):
        load_dataset("mnist", None, train=True, cache_dir=tmp_path)


def test_failed_download_is_reported_in_the_same_message(monkeypatch, tmp_path):
    def offline(name, root, train):
        raise OSError("no internet")

    monkeypatch.setattr(data, "download_dataset", offline)
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("svhn", tmp_path, train=False, download=True, cache_dir=tmp_path)
    assert "Download failed: no internet" in str(caught.value)
    assert str(tmp_path / "svhn" / "test_32x32.mat") in str(caught.value)


def test_unknown_dataset_names_allowed_values():
    with pytest.raises(ValueError, match="dataset.name='imagenet'.*mnist, fashion_mnist, "
                                         "cifar10, svhn"):
        dataset_info("imagenet")


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDRDSKD_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root("") == tmp_path / "env"
    monkeypatch.delenv("FEDRDSKD_DATA")
    assert resolve_data_root(None) is None


# ---- tensors -----------------------------------------------------------------------------


def tiny_dataset(count: int = 10) -> ImageDataset:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 2, 2)
    return ImageDataset(images.contiguous(), torch.arange(count), DATASETS["mnist"])


def test_normalize_golden_values():
    cifar = DATASETS["cifar10"]
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    result = normalize(images, cifar)
    assert result.dtype == torch.float32
    for channel in range(3):
        mean, std = cifar.mean[channel], cifar.std[channel]
        assert result[0, channel, 0, 0].item() == pytest.approx(-mean / std, rel=1e-6)
        assert result[1, channel, 0, 0].item() == pytest.approx((1 - mean) / std, rel=1e-6)


def test_batches_sizes_order_and_seeded_shuffle():
    dataset = tiny_dataset(10)
    plain = list(batches(dataset, 4, shuffle=False, generator=None))
    assert [len(labels) for _, labels in plain] == [4, 4, 2]
    assert torch.cat([labels for _, labels in plain]).tolist() == list(range(10))
    expected_pixel = (3 / 255 - 0.1307) / 0.3081
    assert plain[0][0][3, 0, 1, 1].item() == pytest.approx(expected_pixel, rel=1e-6)

    def order(seed):
        generator = torch.Generator().manual_seed(seed)
        return torch.cat([labels for _, labels in
                          batches(dataset, 3, shuffle=True, generator=generator)]).tolist()

    assert order(1) == order(1) and sorted(order(1)) == list(range(10))
    assert order(1) != order(2)
    with pytest.raises(ValueError, match="batch_size=0"):
        next(batches(dataset, 0, shuffle=False, generator=None))


def test_subset_copies_in_the_given_order():
    dataset = tiny_dataset(10)
    part = dataset.subset(np.array([7, 2]))
    assert len(part) == 2 and part.labels.tolist() == [7, 2]
    assert part.images[:, 0, 0, 0].tolist() == [7, 2] and part.info is dataset.info


def test_unwritable_or_corrupt_cache_falls_back_to_decoding(tmp_path):
    write_svhn_mat(tmp_path / "svhn" / "test_32x32.mat", [1, 2])
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    assert load_dataset("svhn", tmp_path, train=False, cache_dir=blocked).labels.tolist() == [1, 2]

    cache = tmp_path / "cache"
    load_dataset("svhn", tmp_path, train=False, cache_dir=cache)
    (stored,) = cache.glob("svhn-test_32x32-*.npz")
    stored.write_bytes(b"truncated")
    clear_memory_cache()
    assert load_dataset("svhn", tmp_path, train=False, cache_dir=cache).labels.tolist() == [1, 2]
    assert not list(cache.glob("*.tmp"))
