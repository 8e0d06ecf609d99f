"""Non-IID partitions (Dirichlet, pathological, IID) with Flower's ``flwr-datasets``.

The labels are wrapped in a labels-only ``datasets.Dataset`` (no images, works offline)
and split by Flower's own partitioners, so the splits follow the same algorithms as
other Flower baselines; the result is one index array per client into the image tensors.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.common import log

from fedrdskd.data import ImageDataset, load_dataset, resolve_data_root

PARTITION_SCHEMES = ("dirichlet", "pathological", "iid")


def _invalid(key: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"Invalid config value {key}={value!r}: {allowed}.")


def validate_partition_settings(labels: np.ndarray, num_partitions: int, scheme: str, *,
                                alpha: float, classes_per_client: int,
                                min_partition_size: int) -> None:
    """Raise ``ValueError`` naming the config key of the first bad setting."""
    if scheme not in PARTITION_SCHEMES:
        raise _invalid("partition.name", scheme,
                       f"allowed values are {', '.join(PARTITION_SCHEMES)}")
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
    if not 1 <= num_partitions <= len(labels):
        raise _invalid("num_clients", num_partitions,
                       f"allowed range is [1, {len(labels)}] (the number of training samples)")
    if scheme == "dirichlet" and not (np.isfinite(alpha) and alpha > 0):
        raise _invalid("partition.alpha", alpha, "must be a finite number > 0")
    num_classes = len(np.unique(labels))
    if scheme == "pathological" and not 1 <= classes_per_client <= num_classes:
        raise _invalid("partition.classes_per_client", classes_per_client,
                       f"allowed range is [1, {num_classes}] (the number of classes)")
    if not 0 <= min_partition_size * num_partitions <= len(labels):
        raise _invalid("partition.min_partition_size", min_partition_size,
                       f"must be >= 0 and at most {len(labels) // num_partitions} so that "
                       f"num_clients={num_partitions} partitions fit in {len(labels)} samples")


def _flower_partitioner(num_partitions: int, scheme: str, *, alpha: float,
                        classes_per_client: int, min_partition_size: int, seed: int):
    # Imported here: flwr_datasets (with HF datasets) takes ~2 s to import, and only
    # the process that partitions needs it.
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if scheme == "dirichlet":
        return DirichletPartitioner(num_partitions=num_partitions, partition_by="label",
                                    alpha=alpha, min_partition_size=min_partition_size,
                                    self_balancing=False, shuffle=True, seed=seed)
    if scheme == "pathological":
        # "first-deterministic" is the original paper's assignment: client i surely
        # holds class i mod C, so every class is used once num_partitions >= C.
        return PathologicalPartitioner(
            num_partitions=num_partitions, partition_by="label",
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic", shuffle=True, seed=seed)
    return IidPartitioner(num_partitions=num_partitions)


def report_partitioner_warnings(scheme: str, caught: Sequence[warnings.WarningMessage],
                                min_partition_size: int) -> None:
    """Log flwr-datasets' warnings: one line for the Dirichlet redraws, others as they are."""
    redraws = [item for item in caught if "min_partition_size" in str(item.message)]
    if redraws:
        log(INFO, "%s partition: redrew the Dirichlet shares %d time(s) until every client "
            "had >= partition.min_partition_size=%d samples", scheme, len(redraws),
            min_partition_size)
    for item in caught:
        if item not in redraws:
            log(WARNING, "%s partition: %s", scheme, item.message)


def partition_labels(labels: np.ndarray, num_partitions: int, scheme: str, *,
                     alpha: float = 0.5, classes_per_client: int = 2,
                     min_partition_size: int = 10, seed: int = 0) -> list[np.ndarray]:
    """Split sample indices into ``num_partitions`` client partitions.

    Parameters
    ----------
    labels : np.ndarray
        Integer class label of every training sample, ``[N]``.
    num_partitions : int
        Number of clients, in [1, N].
    scheme : str
        ``"dirichlet"`` (per-class client shares ~ Dir(alpha)), ``"pathological"``
        (exactly ``classes_per_client`` classes per client) or ``"iid"``.
    alpha : float (default: 0.5)
        Dirichlet concentration (> 0); smaller means more label skew.
    classes_per_client : int (default: 2)
        Classes per client of the pathological scheme, in [1, number of classes].
    min_partition_size : int (default: 10)
        Every partition gets at least this many samples: the Dirichlet draw is repeated
        (Flower allows 11 draws); the other schemes raise if it does not hold.
    seed : int (default: 0)
        Same seed, same split.

    Returns
    -------
    list[np.ndarray]
        Disjoint, sorted int64 index arrays into ``labels`` that together cover all of it.
    """
    import datasets

    labels = np.asarray(labels).astype(np.int64)
    validate_partition_settings(labels, num_partitions, scheme, alpha=alpha,
                                classes_per_client=classes_per_client,
                                min_partition_size=min_partition_size)
    # Like FederatedDataset(shuffle=True): a seeded order first, so IID shards (which
    # are contiguous) do not follow the class-sorted order of an image folder.
    order = np.random.default_rng(seed).permutation(len(labels))
    partitioner = _flower_partitioner(num_partitions, scheme, alpha=alpha,
                                      classes_per_client=classes_per_client,
                                      min_partition_size=min_partition_size, seed=seed)
    partitioner.dataset = datasets.Dataset.from_dict({"label": labels[order], "index": order})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # ``[:]`` reads the column at once (iterating a datasets Column is ~50x slower).
            partitions = [np.sort(np.asarray(partitioner.load_partition(pid)["index"][:],
                                             dtype=np.int64)) for pid in range(num_partitions)]
        except ValueError as error:
            raise ValueError(
                f"Cannot build a {scheme} partition with num_clients={num_partitions}, "
                f"partition.alpha={alpha}, partition.classes_per_client={classes_per_client},"
                f" partition.min_partition_size={min_partition_size} ({error}). Raise "
                "partition.alpha, or lower partition.min_partition_size (0 disables it) "
                "or num_clients.") from error
    report_partitioner_warnings(scheme, caught, min_partition_size)
    smallest = min(len(part) for part in partitions)
    if smallest < min_partition_size:
        raise ValueError(f"The {scheme} partition gives a client only {smallest} samples, "
                         f"fewer than partition.min_partition_size={min_partition_size}: "
                         "lower num_clients or partition.min_partition_size.")
    return partitions


def check_test_fraction(test_fraction: float) -> None:
    """``ValueError`` naming ``partition.test_fraction`` unless it is in [0, 1)."""
    if not 0.0 <= test_fraction < 1.0:
        raise _invalid("partition.test_fraction", test_fraction, "allowed range is [0, 1)")


def split_local_test(indices: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a client's indices into (train, test), seeded.

    The test part has ``floor(n * test_fraction)`` samples, but at least one when
    ``test_fraction > 0`` and the client has two or more; train keeps the rest (never
    empty). Both parts are sorted.
    """
    check_test_fraction(test_fraction)
    indices = np.asarray(indices, dtype=np.int64)
    num_test = int(len(indices) * test_fraction)
    if test_fraction > 0 and len(indices) >= 2:
        num_test = max(1, num_test)
    num_test = min(num_test, max(0, len(indices) - 1))
    shuffled = np.random.default_rng(seed).permutation(indices)
    return np.sort(shuffled[num_test:]), np.sort(shuffled[:num_test])


def label_count_matrix(labels: np.ndarray, partitions: Sequence[np.ndarray],
                       num_classes: int) -> np.ndarray:
    """Per-client label counts ``[K, C]`` (int64)."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[np.asarray(part, dtype=np.int64)],
                                 minlength=num_classes)[:num_classes]
                     for part in partitions]).astype(np.int64)


def format_label_summary(counts: np.ndarray, *, max_rows: int = 20) -> str:
    """Compact text of a ``[K, C]`` count matrix: totals, then up to ``max_rows`` clients.

    Parameters
    ----------
    counts : np.ndarray
        Label counts per client (rows) and class (columns).
    max_rows : int (default: 20)
        Client rows shown; the rest are summarised in one line.
    """
    counts = np.asarray(counts, dtype=np.int64)
    sizes = counts.sum(axis=1)
    present = (counts > 0).sum(axis=1)
    lines = [
        f"{counts.shape[0]} clients, {counts.shape[1]} classes, {int(sizes.sum())} samples; "
        f"samples per client min {sizes.min()} / median {int(np.median(sizes))} / max "
        f"{sizes.max()}; classes per client min {present.min()} / mean "
        f"{present.mean():.1f} / max {present.max()}",
    ]
    width = max(len(str(int(counts.max(initial=0)))), len(str(counts.shape[1] - 1))) + 1
    total_width = max(len(str(int(sizes.max(initial=0)))), 5)
    header = "".join(f"{label:>{width}}" for label in range(counts.shape[1]))
    lines.append(f"client {'total':>{total_width}} |{header}")
    for client, row in enumerate(counts[:max_rows]):
        cells = "".join(f"{count:>{width}}" for count in row)
        lines.append(f"{client:>6} {sizes[client]:>{total_width}} |{cells}")
    if counts.shape[0] > max_rows:
        lines.append(f"... {counts.shape[0] - max_rows} more clients")
    return "\n".join(lines)


def plot_partition(counts: np.ndarray, path: str | Path, *, title: str = "") -> None:
    """Save a stacked bar chart of the label counts: one bar per client, one colour per class.

    Parameters
    ----------
    counts : np.ndarray
        ``[K, C]`` label counts (:func:`label_count_matrix`).
    path : str | Path
        Output image file (format from the suffix, e.g. ``partition.png``).
    title : str (default: "")
        Figure title.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    counts = np.asarray(counts)
    num_clients, num_classes = counts.shape
    figure = Figure(figsize=(min(16.0, 4.0 + 0.25 * num_clients), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colour_map = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    bottom = np.zeros(num_clients)
    for label in range(num_classes):
        axes.bar(np.arange(num_clients), counts[:, label], bottom=bottom, width=0.85,
                 label=str(label), color=colour_map(label % colour_map.N))
        bottom += counts[:, label]
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("client")
    axes.set_ylabel("samples")
    axes.set_title(title or f"label counts of {num_clients} clients")
    axes.legend(title="class", loc="upper left", bbox_to_anchor=(1.0, 1.0),
                ncols=1 if num_classes <= 20 else 2, fontsize="small")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


@dataclass(frozen=True)
class ClientData:
    """One client's local data: its train and held-out test splits.

    ``label_counts`` are the per-class counts of the *train* split (length C).
    """

    train: ImageDataset
    test: ImageDataset
    label_counts: np.ndarray


@functools.lru_cache(maxsize=8)
def _cached_partitions(dataset: str, root: str, *, num_partitions: int, scheme: str,
                       alpha: float, classes_per_client: int, min_partition_size: int,
                       seed: int, download: bool, cache_dir: str | None) -> tuple[np.ndarray, ...]:
    train = load_dataset(dataset, root or None, train=True, download=download,
                         cache_dir=cache_dir)
    return tuple(partition_labels(
        train.labels.numpy(), num_partitions, scheme, alpha=alpha,
        classes_per_client=classes_per_client, min_partition_size=min_partition_size,
        seed=seed))


def client_split_seed(seed: int, partition_id: int) -> int:
    """The seed of a client's train/test split, derived from (seed, partition_id)."""
    return int(np.random.SeedSequence([seed, partition_id]).generate_state(1)[0])


def load_client_data(dataset: str, root: str | Path | None, *, partition_id: int,
                     num_partitions: int, scheme: str, alpha: float, classes_per_client: int,
                     min_partition_size: int, test_fraction: float, seed: int,
                     download: bool = False, cache_dir: str | Path | None = None) -> ClientData:
    """The train/test data of client ``partition_id`` (memoised per process).

    The dataset is loaded and partitioned once per process and setting; later calls for
    other partition ids only index the shared tensors. Arguments are those of
    :func:`~fedrdskd.data.load_dataset`, :func:`partition_labels` and
    :func:`split_local_test`; the split's seed is derived from ``seed`` and
    ``partition_id``.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"Invalid partition-id={partition_id!r}: allowed range is "
                         f"[0, {num_partitions - 1}] (num_clients={num_partitions}).")
    check_test_fraction(test_fraction)
    data_root = resolve_data_root(root)
    partitions = _cached_partitions(
        dataset, str(data_root) if data_root is not None else "",
        num_partitions=num_partitions, scheme=scheme, alpha=float(alpha),
        classes_per_client=int(classes_per_client),
        min_partition_size=int(min_partition_size), seed=int(seed), download=download,
        cache_dir=str(cache_dir) if cache_dir is not None else None)
    full = load_dataset(dataset, data_root, train=True, download=download,
                        cache_dir=cache_dir)
    train_indices, test_indices = split_local_test(
        partitions[partition_id], test_fraction, client_split_seed(seed, partition_id))
    train = full.subset(train_indices)
    counts = np.bincount(train.labels.numpy(), minlength=full.info.num_classes)
    return ClientData(train=train, test=full.subset(test_indices),
                      label_counts=counts.astype(np.int64))
