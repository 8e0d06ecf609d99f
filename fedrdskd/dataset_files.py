"""A dataset's files on disk: where each format is found, how it is read and cached.

Each reader returns the images (uint8 ``[N, C, H, W]``) and labels (int64 ``[N]``) of
one split, or ``None`` when its files are absent (appending what it looked for to
``tried``); a file that is there but truncated or corrupt raises
:class:`DatasetFileError` naming it, its size and what to do. Decoded image folders and
``.mat`` files are cached as ``.npz`` (:func:`cached_arrays`).
:func:`download_dataset` lets torchvision fetch a dataset into the layout the readers
expect.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
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
REPLACE_ADVICE = ("copy it again from the original, or delete it and let torchvision "
                  "download it (data.download=true, online)")


class DatasetFileError(ValueError):
    """A dataset file is there but truncated or corrupt; the message names it and the fix."""


def file_error(path: Path, problem: str) -> DatasetFileError:
    """The error for a bad ``path``: its size, ``problem`` and what to do."""
    size = path.stat().st_size if path.is_file() else 0
    return DatasetFileError(f"Dataset file {path} ({size} bytes) {problem}: "
                            f"{REPLACE_ADVICE}.")


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
    def decode(name: str) -> torch.Tensor:
        try:
            return decode_image(read_file(os.path.join(base, name)), mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise file_error(base / name, f"is not a readable image ({error})") from error

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = [decode(name) for name in files]
    return torch.stack(decoded).numpy()


# ---- per-format readers: each returns arrays, or None when its files are absent ----------


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (MNIST's format), from ``path`` or ``path.gz``.

    Raises
    ------
    DatasetFileError
        If the file is not a complete IDX file (truncated download or copy).
    """
    source = path if path.is_file() else path.with_name(path.name + ".gz")
    try:
        payload = source.read_bytes() if source is path else gzip.decompress(
            source.read_bytes())
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise file_error(source, f"is not a complete gzip file ({error})") from error
    zero, type_code, ndim = struct.unpack(">HBB", payload[:4].ljust(4, b"\xff"))
    if zero != 0 or type_code != 0x08 or len(payload) < 4 + 4 * ndim:
        raise file_error(source, f"is not an unsigned-byte IDX file (header {payload[:4]!r})")
    shape = struct.unpack(f">{ndim}I", payload[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(payload) != expected:
        unpacked = " unpacked" if source is not path else ""
        raise file_error(source, f"is truncated or corrupt: its header promises an array of "
                                 f"shape {shape}, {expected} bytes{unpacked}, but it holds "
                                 f"{len(payload)}")
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
        try:
            dataset = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
        except Exception as error:  # noqa: BLE001 - pickle, EOF and reshape errors alike
            raise file_error(batches_dir, f"holds a truncated or corrupt batch file "
                                          f"({type(error).__name__}: {error})") from error
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

    try:
        content = loadmat(str(path))
    except Exception as error:  # noqa: BLE001 - scipy raises several kinds for a bad file
        raise file_error(path, f"is not a readable .mat file ({type(error).__name__}: "
                               f"{error})") from error
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
