"""Image datasets (MNIST, Fashion-MNIST, CIFAR-10, SVHN) decoded once into uint8 tensors.

Where each dataset is looked for under the data root (``data.root`` in the config, else
the ``FEDRDSKD_DATA`` environment variable):

- ``mnist`` / ``fashion_mnist``: torchvision's raw IDX layout, ``MNIST/raw`` /
  ``FashionMNIST/raw``;
- ``cifar10``: torchvision's ``cifar-10-batches-py``, or an ImageFolder layout
  (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) in ``cifar10-jpg`` or in the root itself;
- ``svhn``: ``train_32x32.mat`` / ``test_32x32.mat`` in ``svhn``, ``SVHN`` or the root.

When a dataset is not found there and ``download=True`` (the experiment's default,
``data.download``), torchvision downloads it into the root, or into
``<cache_dir>/data`` when no root is set (where later loads find it); offline, the
error lists every path tried and the download's error. The files are read and checked
by :mod:`fedrdskd.dataset_files` (a truncated file is named with its size). Decoded
image folders and ``.mat`` files are cached on disk as ``.npz`` (``cache_dir``, default
``$FEDRDSKD_CACHE`` or ``~/.cache/fedrdskd``), and every loaded split is memoised in the
process, so a simulation decodes the JPEGs at most once in total.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from logging import INFO
from pathlib import Path

import numpy as np
import torch
from flwr.common import log

from fedrdskd.dataset_files import CIFAR10_CLASSES, Arrays, download_dataset, read_local


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset; ``image_shape`` is (C, H, W) as the models see it."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,),
                         tuple(str(digit) for digit in range(10))),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 10, (1, 28, 28), (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
         "Sneaker", "Bag", "Ankle boot")),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), CIFAR10_CLASSES),
    "svhn": DatasetInfo("svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728),
                        (0.1980, 0.2010, 0.1970), tuple(str(digit) for digit in range(10))),
}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; ``ValueError`` naming the allowed names."""
    if name not in DATASETS:
        raise ValueError(f"Invalid config value dataset.name={name!r}: allowed values are "
                         f"{', '.join(DATASETS)}.")
    return DATASETS[name]


@dataclass(frozen=True)
class ImageDataset:
    """Decoded images (uint8 ``[N, C, H, W]``) and labels (int64 ``[N]``).

    Loaded datasets are shared within a process: treat the tensors as read-only.
    """

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo

    def __len__(self) -> int:
        """The number of images."""
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageDataset:
        """A new dataset holding the samples at ``indices`` (a copy, in that order)."""
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageDataset(self.images[index], self.labels[index], self.info)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for; the message lists paths and the fix."""


def normalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Map a uint8 batch ``[B, C, H, W]`` to float32 ``(x / 255 - mean) / std`` per channel."""
    mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


def batches(dataset: ImageDataset, batch_size: int, *, shuffle: bool,
            generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(normalised float images, labels)`` batches; the last one may be smaller.

    Parameters
    ----------
    dataset : ImageDataset
        The samples.
    batch_size : int
        Samples per batch (>= 1).
    shuffle : bool
        Visit the samples in a random order drawn from ``generator``.
    generator : torch.Generator | None
        Source of the shuffle order (None: torch's global generator).
    """
    if batch_size < 1:
        raise ValueError(f"Invalid config value batch_size={batch_size!r}: must be >= 1.")
    count = len(dataset)
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    for start in range(0, count, batch_size):
        index = order[start:start + batch_size]
        yield normalize(dataset.images[index], dataset.info), dataset.labels[index]


def resolve_data_root(root: str | Path | None) -> Path | None:
    """The data root: ``root`` if given (non-empty), else ``$FEDRDSKD_DATA``, else None."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    from_env = os.environ.get("FEDRDSKD_DATA", "")
    return Path(from_env).expanduser() if from_env else None


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The decoded-image cache: ``cache_dir``, else ``$FEDRDSKD_CACHE``, else ~/.cache/fedrdskd."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    from_env = os.environ.get("FEDRDSKD_CACHE", "")
    return Path(from_env).expanduser() if from_env else Path.home() / ".cache" / "fedrdskd"


# ---- the public loader --------------------------------------------------------------------

_LOADED: dict[tuple[str, str, bool, str], ImageDataset] = {}


def clear_memory_cache() -> None:
    """Forget the datasets memoised in this process (the on-disk cache stays)."""
    _LOADED.clear()


def not_found_message(name: str, train: bool, root: Path | None, tried: Sequence[str],
                      download_error: Exception | None) -> str:
    """One message: the dataset, every path tried, and what to set."""
    split = "train" if train else "test"
    lines = [f"Dataset {name!r} ({split} split) not found."]
    if root is None:
        lines.append("No data root is set (data.root is empty and FEDRDSKD_DATA is unset).")
    if tried:
        lines.append("Tried:")
        lines += [f"  - {path}" for path in tried]
    if download_error is not None:
        lines.append(f"Download failed: {download_error}")
    lines.append("Set data.root=<folder> in the config or the FEDRDSKD_DATA environment "
                 "variable to the folder that holds it, or data.download=true (the "
                 "default) on a machine that is online.")
    return "\n".join(lines)


def load_dataset(name: str, root: str | Path | None, *, train: bool, download: bool = False,
                 cache_dir: str | Path | None = None) -> ImageDataset:
    """Load one split of a dataset as uint8 tensors (memoised per process).

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn``).
    root : str | Path | None
        Data root; None or "" means ``$FEDRDSKD_DATA`` (see :func:`resolve_data_root`).
    train : bool
        The training split (else the test split).
    download : bool (default: False)
        If the files are missing, let torchvision download them into the root (or
        ``<cache_dir>/data`` when no root is set, where a later load finds them). Needs
        internet access.
    cache_dir : str | Path | None (default: None)
        Where decoded images are cached (see :func:`resolve_cache_dir`).

    Returns
    -------
    ImageDataset
        ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``.

    Raises
    ------
    DatasetNotFoundError
        Listing every path tried and what to set.
    """
    info = dataset_info(name)
    data_root = resolve_data_root(root)
    cache = resolve_cache_dir(cache_dir)
    key = (name, str(data_root), train, str(cache))
    if key not in _LOADED:
        arrays = find_or_download(name, data_root, train=train, download=download, cache=cache)
        images, labels = (torch.from_numpy(np.ascontiguousarray(array)) for array in arrays)
        _LOADED[key] = ImageDataset(images, labels, info)
    return _LOADED[key]


def find_or_download(name: str, root: Path | None, *, train: bool, download: bool,
                     cache: Path) -> Arrays:
    """Read the local files; on a miss, download if allowed; else raise the clear error."""
    tried: list[str] = []
    target = root if root is not None else cache / "data"
    arrays = read_local(name, root, train, cache, tried) if root is not None else None
    if arrays is None and download and root is None:  # downloaded by an earlier run
        arrays = read_local(name, target, train, cache, tried)
    if arrays is not None:
        return arrays
    download_error = None
    if download:
        log(INFO, "Dataset %s not found locally; downloading it into %s", name, target)
        try:
            download_dataset(name, target, train)
            arrays = read_local(name, target, train, cache, [])
        except (OSError, RuntimeError) as error:  # offline: URLError is an OSError
            download_error = error
        if arrays is not None:
            return arrays
    raise DatasetNotFoundError(not_found_message(name, train, root, tried, download_error))
