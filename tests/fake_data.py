"""Small datasets written in the real on-disk formats, for fast end-to-end tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format MNIST uses (and its .gz twin)."""
    type_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, type_code, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(payload)
    with gzip.open(str(path) + ".gz", "wb") as handle:
        handle.write(payload)


def class_pattern_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy images whose bright block position encodes the label (learnable)."""
    images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.int64)
    block = size // 4
    for index, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[index, row * block:(row + 1) * block, col * block:(col + 1) * block] += 180
    return np.clip(images, 0, 255).astype(np.uint8)


def write_fake_mnist(root: Path, *, num_train: int = 600, num_test: int = 200,
                     seed: int = 0) -> Path:
    """Write a tiny MNIST-format dataset under ``root/MNIST/raw`` and return ``root``."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        labels[:10] = np.arange(10)  # every class present
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", class_pattern_images(labels, 28, rng))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root
