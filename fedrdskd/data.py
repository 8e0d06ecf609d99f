"""Image datasets (MNIST, Fashion-MNIST, CIFAR-10, SVHN) decoded once into uint8 tensors.

Where each dataset is looked for under the data root (``data.root`` in the config, else
the ``FEDRDSKD_DATA`` environment variable):

- ``mnist`` / ``fashion_mnist``: torchvision's raw IDX layout, ``MNIST/raw`` /
  ``FashionMNIST/raw``;
- ``cifar10``: torchvision's ``cifar-10-batches-py``, or an ImageFolder layout
  (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) in ``cifar10-jpg`` or in the root itself;
- ``svhn``: ``train_32x32.mat`` / ``test_32x32.mat`` in ``svhn``, ``SVHN`` or the root.

With ``download=True`` a missing dataset is fetched by torchvision (online only).
Decoded image folders and ``.mat`` files are cached on disk as ``.npz`` (``cache_dir``,
default ``$FEDRDSKD_CACHE`` or ``~/.cache/fedrdskd``), and every loaded split is memoised
in the process, so a simulation decodes the JPEGs at most once in total.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
import torch
import torchvision
from flwr.common import log

CACHE_FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck")


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


# ---- decoding and the on-disk cache ------------------------------------------------------

Arrays = tuple[np.ndarray, np.ndarray]  # uint8 images [N, C, H, W], int64 labels [N]


def fingerprint(base: Path, names: Sequence[str]) -> str:
    """A key of ``base`` that changes when a file is added, removed, renamed, resized or touched.

    ``names`` are paths relative to ``base``.
    """
    base_text = os.path.realpath(base)
    digest = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}|{base_text}".encode())
    for name in names:
        status = os.stat(os.path.join(base_text, name))
        digest.update(f"\n{name}|{status.st_size}|{status.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def cached_arrays(cache_dir: Path, tag: str, source: tuple[Path, Sequence[str]],
                  decode: Callable[[], Arrays]) -> Arrays:
    """``decode()`` once; later calls read ``<cache_dir>/<tag>-<fingerprint>.npz``.

    ``source`` is the folder and the relative names of the files ``decode`` reads.

    The cache is written atomically (temporary file, then rename), so processes loading
    concurrently never read a half-written file. An unwritable cache only logs a warning.
    """
    path = cache_dir / f"{tag}-{fingerprint(*source)}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return stored["images"], stored["labels"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            log(WARNING, "Ignoring the unreadable cache file %s (%s)", path, error)
    images, labels = decode()
    temporary: Path | None = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".tmp", delete=False) as tmp:
            temporary = Path(tmp.name)
            np.savez(tmp, images=images, labels=labels)
        os.replace(temporary, path)
        log(INFO, "Cached decoded %s in %s", tag, path)
    except OSError as error:
        log(WARNING, "Could not cache decoded %s in %s (%s); set data.cache_dir or "
            "FEDRDSKD_CACHE to a writable folder to skip decoding next time", tag,
            cache_dir, error)
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    return images, labels


def image_folder_files(split_dir: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Files relative to ``split_dir`` (sorted by class, then name), labels, class names."""
    classes = tuple(sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir()))
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        with os.scandir(split_dir / name) as entries:
            names = sorted(entry.name for entry in entries
                           if entry.name.lower().endswith(IMAGE_SUFFIXES))
        files += [f"{name}/{file_name}" for file_name in names]
        labels += [label] * len(names)
    return files, np.asarray(labels, dtype=np.int64), classes


def decode_images(base: Path, files: Sequence[str]) -> np.ndarray:
    """Decode image files to uint8 RGB ``[N, 3, H, W]``.

    torchvision's libjpeg-turbo decoder is ~4x faster than PIL here (60k CIFAR JPEGs:
    ~5 s vs ~15 s on 2 cores) and gives identical pixels; it is deprecated since
    torchvision 0.29, so PIL takes over once it is gone.
    """
    try:
        from torchvision.io import ImageReadMode, decode_image, read_file
    except ImportError:
        from PIL import Image

        return np.stack([np.asarray(Image.open(os.path.join(base, name)).convert("RGB"))
                         for name in files]).transpose(0, 3, 1, 2).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = [decode_image(read_file(os.path.join(base, name)), mode=ImageReadMode.RGB)
                   for name in files]
    return torch.stack(decoded).numpy()


# ---- per-format readers: each returns arrays, or None when its files are absent ----------


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (MNIST's format), from ``path`` or ``path.gz``."""
    payload = path.read_bytes() if path.is_file() else gzip.decompress(
        path.with_name(path.name + ".gz").read_bytes())
    zero, type_code, ndim = struct.unpack(">HBB", payload[:4])
    if zero != 0 or type_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {payload[:4]!r}).")
    shape = struct.unpack(f">{ndim}I", payload[4:4 + 4 * ndim])
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def read_idx_family(root: Path, folder: str, train: bool, tried: list[str]) -> Arrays | None:
    """MNIST / Fashion-MNIST from torchvision's raw IDX files under ``root/<folder>/raw``.

    Either the uncompressed or the ``.gz`` files are enough.
    """
    raw = root / folder / "raw"
    prefix = "train" if train else "t10k"
    images_path, labels_path = (raw / f"{prefix}-{kind}" for kind in
                                ("images-idx3-ubyte", "labels-idx1-ubyte"))
    tried.append(f"{images_path}[.gz] (torchvision {folder} raw IDX files)")
    found = [path.is_file() or path.with_name(path.name + ".gz").is_file()
             for path in (images_path, labels_path)]
    if not all(found):
        return None
    return read_idx(images_path)[:, None], read_idx(labels_path).astype(np.int64)


def read_cifar10(root: Path, train: bool, cache_dir: Path, tried: list[str]) -> Arrays | None:
    """CIFAR-10 from torchvision's python batches or from an ImageFolder layout."""
    batches_dir = root / "cifar-10-batches-py"
    tried.append(f"{batches_dir} (torchvision CIFAR-10 python batches)")
    if batches_dir.is_dir():
        dataset = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
        return (dataset.data.transpose(0, 3, 1, 2).copy(),
                np.asarray(dataset.targets, dtype=np.int64))
    split = "train" if train else "test"
    for folder in (root / "cifar10-jpg", root):
        tried.append(f"{folder / split}/<class>/*.jpg (ImageFolder)")
        if (folder / split).is_dir():
            split_dir = folder / split
            files, labels, classes = image_folder_files(split_dir)
            if classes != CIFAR10_CLASSES:
                raise ValueError(f"{split_dir} has class folders {list(classes)}; "
                                 f"CIFAR-10 needs exactly {list(CIFAR10_CLASSES)}.")
            return cached_arrays(cache_dir, f"cifar10-{split}", (split_dir, files),
                                 lambda: (decode_images(split_dir, files), labels))
    return None


def read_svhn_mat(path: Path) -> Arrays:
    """SVHN's ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] (10 means digit 0)."""
    from scipy.io import loadmat

    content = loadmat(str(path))
    images = np.ascontiguousarray(content["X"].transpose(3, 2, 0, 1), dtype=np.uint8)
    labels = content["y"].reshape(-1).astype(np.int64) % 10
    return images, labels


def read_svhn(root: Path, train: bool, cache_dir: Path, tried: list[str]) -> Arrays | None:
    """SVHN from a local ``train_32x32.mat`` / ``test_32x32.mat``."""
    file_name = f"{'train' if train else 'test'}_32x32.mat"
    for folder in (root / "svhn", root / "SVHN", root):
        tried.append(str(folder / file_name))
        if (folder / file_name).is_file():
            path = folder / file_name
            return cached_arrays(cache_dir, f"svhn-{path.stem}", (folder, [file_name]),
                                 lambda: read_svhn_mat(path))
    return None


def read_local(name: str, root: Path, train: bool, cache_dir: Path,
               tried: list[str]) -> Arrays | None:
    """Dispatch to the reader of ``name``."""
    if name in ("mnist", "fashion_mnist"):
        folder = "MNIST" if name == "mnist" else "FashionMNIST"
        return read_idx_family(root, folder, train, tried)
    if name == "cifar10":
        return read_cifar10(root, train, cache_dir, tried)
    return read_svhn(root, train, cache_dir, tried)


def download_dataset(name: str, root: Path, train: bool) -> None:
    """Let torchvision download ``name`` into ``root`` (where :func:`read_local` looks)."""
    if name == "svhn":
        split = "train" if train else "test"
        torchvision.datasets.SVHN(str(root / "svhn"), split=split, download=True)
        return
    loaders = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10,
               "fashion_mnist": torchvision.datasets.FashionMNIST}
    loaders[name](str(root), train=train, download=True)


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
    else:
        lines.append("Tried:")
        lines += [f"  - {path}" for path in tried]
    if download_error is not None:
        lines.append(f"Download failed: {download_error}")
    lines.append("Set data.root=<folder> in the config or the FEDRDSKD_DATA environment "
                 "variable to the folder that holds it, or data.download=true when online.")
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
        ``<cache_dir>/data`` when no root is set). Needs internet access.
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
    arrays = read_local(name, root, train, cache, tried) if root is not None else None
    if arrays is not None:
        return arrays
    download_error = None
    if download:
        target = root if root is not None else cache / "data"
        log(INFO, "Downloading %s into %s", name, target)
        try:
            download_dataset(name, target, train)
            arrays = read_local(name, target, train, cache, [])
        except (OSError, RuntimeError) as error:  # offline: URLError is an OSError
            download_error = error
        if arrays is not None:
            return arrays
    raise DatasetNotFoundError(not_found_message(name, train, root, tried, download_error))
