"""Non-IID partitions: coverage, reproducibility, skew vs alpha, pathological classes,
minimum sizes, validation messages, local test splits, summaries, plots, client data."""

from __future__ import annotations

import numpy as np
import pytest
from fake_data import write_fake_mnist

from fedrdskd import partitions
from fedrdskd.data import clear_memory_cache
from fedrdskd.partitions import (format_label_summary, label_count_matrix, load_client_data,
                                 partition_labels, plot_partition, split_local_test)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """3000 samples of 10 classes, class-sorted like an image folder."""
    return np.sort(np.random.default_rng(0).integers(0, 10, 3000))


def assert_disjoint_cover(parts: list[np.ndarray], total: int) -> None:
    assert sum(len(part) for part in parts) == total
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(total))


def mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    counts = label_count_matrix(labels, parts, 10).astype(float)
    shares = counts / counts.sum(axis=1, keepdims=True)
    logs = np.log(np.where(shares > 0, shares, 1.0))
    return float(-(shares * logs).sum(axis=1).mean())


@pytest.mark.parametrize("scheme", ["dirichlet", "pathological", "iid"])
def test_partitions_are_disjoint_cover_and_seeded(labels, scheme):
    parts = partition_labels(labels, 20, scheme, alpha=0.5, seed=3)
    assert len(parts) == 20
    assert_disjoint_cover(parts, len(labels))
    assert all(part.dtype == np.int64 for part in parts)
    again = partition_labels(labels, 20, scheme, alpha=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_labels(labels, 20, scheme, alpha=0.5, seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_label_skew_grows_as_alpha_falls(labels):
    entropies = [mean_label_entropy(labels, partition_labels(labels, 10, "dirichlet",
                                                             alpha=alpha, seed=0))
                 for alpha in (100.0, 1.0, 0.1)]
    assert entropies[0] > 2.2  # near log(10) = 2.30: almost uniform
    assert entropies[0] > entropies[1] > entropies[2]
    assert entropies[2] < 1.2


@pytest.mark.parametrize("classes_per_client", [1, 2, 3])
def test_pathological_gives_exactly_k_classes(labels, classes_per_client):
    parts = partition_labels(labels, 20, "pathological",
                             classes_per_client=classes_per_client, seed=0)
    present = (label_count_matrix(labels, parts, 10) > 0).sum(axis=1)
    assert present.tolist() == [classes_per_client] * 20


def test_iid_is_balanced_even_on_class_sorted_labels(labels):
    parts = partition_labels(labels, 7, "iid", seed=0)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert (label_count_matrix(labels, parts, 10) > 0).all()


def test_minimum_partition_size_is_respected(labels):
    sizes = [len(part) for part in partition_labels(labels, 20, "dirichlet", alpha=0.3,
                                                    min_partition_size=0, seed=0)]
    assert min(sizes) < 40  # without the minimum, some client is small ...
    parts = partition_labels(labels, 20, "dirichlet", alpha=0.3, min_partition_size=40,
                             seed=0)
    assert min(len(part) for part in parts) >= 40  # ... with it, none is


def test_pathological_below_minimum_size_raises():
    labels = np.array([0] * 5 + [1] * 200)  # 5 clients share class 0's 5 samples
    with pytest.raises(ValueError, match="partition.min_partition_size=10"):
        partition_labels(labels, 10, "pathological", classes_per_client=1, seed=0)


def test_unreachable_dirichlet_minimum_names_the_keys():
    labels = np.repeat(np.arange(10), 30)
    with pytest.raises(ValueError, match="partition.alpha=0.001.*min_partition_size=10.*"
                                         "Raise partition.alpha"):
        partition_labels(labels, 30, "dirichlet", alpha=0.001, min_partition_size=10)


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 0.0}, "partition.alpha=0.0: must be a finite number > 0"),
    ({"alpha": -1.0}, "partition.alpha=-1.0"),
    ({"alpha": float("nan")}, "partition.alpha=nan"),
    ({"num_partitions": 0}, r"num_clients=0: allowed range is \[1, 3000\]"),
    ({"num_partitions": 3001}, "num_clients=3001"),
    ({"scheme": "shards"}, "partition.name='shards': allowed values are dirichlet, "
                           "pathological, iid"),
    ({"scheme": "pathological", "classes_per_client": 0},
     r"partition.classes_per_client=0: allowed range is \[1, 10\]"),
    ({"scheme": "pathological", "classes_per_client": 11}, "classes_per_client=11"),
    ({"min_partition_size": 301}, "partition.min_partition_size=301: must be >= 0 and at "
                                  "most 300"),
    ({"min_partition_size": -1}, "partition.min_partition_size=-1"),
])
def test_bad_values_raise_naming_the_key(labels, kwargs, message):
    arguments = {"num_partitions": 10, "scheme": "dirichlet", **kwargs}
    with pytest.raises(ValueError, match=message):
        partition_labels(labels, arguments.pop("num_partitions"), arguments.pop("scheme"),
                         **arguments)


def test_split_local_test_sizes_disjoint_and_seeded():
    indices = np.arange(100, 200)
    train, test = split_local_test(indices, 0.1, seed=5)
    assert len(train) == 90 and len(test) == 10
    assert np.array_equal(np.sort(np.concatenate([train, test])), indices)
    again_train, again_test = split_local_test(indices, 0.1, seed=5)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert not np.array_equal(test, split_local_test(indices, 0.1, seed=6)[1])


@pytest.mark.parametrize("count, fraction, expected", [
    (10, 0.0, (10, 0)), (2, 0.1, (1, 1)), (1, 0.5, (1, 0)), (15, 0.5, (8, 7)),
])
def test_split_local_test_edge_sizes(count, fraction, expected):
    train, test = split_local_test(np.arange(count), fraction, seed=0)
    assert (len(train), len(test)) == expected


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_split_local_test_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"partition.test_fraction=.*allowed range is \[0, 1\)"):
        split_local_test(np.arange(10), fraction, seed=0)


def test_label_count_matrix_golden():
    counts = label_count_matrix(np.array([0, 1, 1, 2]), [np.array([0, 1]), np.array([2, 3])],
                                num_classes=4)
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0]]
    assert counts.dtype == np.int64


def test_format_label_summary():
    counts = np.array([[5, 0, 1], [0, 7, 0], [2, 2, 2]])
    text = format_label_summary(counts, max_rows=2)
    lines = text.splitlines()
    assert lines[0].startswith("3 clients, 3 classes, 19 samples")
    assert "min 6 / median 6 / max 7" in lines[0]
    assert "classes per client min 1 / mean 2.0 / max 3" in lines[0]
    assert lines[1].split() == ["client", "total", "|", "0", "1", "2"]
    assert lines[2].split() == ["0", "6", "|", "5", "0", "1"]
    assert lines[-1] == "... 1 more clients"


def test_plot_partition_writes_a_png(tmp_path):
    path = tmp_path / "plots" / "partition.png"
    plot_partition(np.array([[5, 0, 1], [0, 7, 0]]), path, title="tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_client_data_partitions_once_and_covers_the_dataset(tmp_path):
    clear_memory_cache()
    partitions._cached_partitions.cache_clear()
    write_fake_mnist(tmp_path, num_train=400, num_test=100)
    settings = dict(num_partitions=4, scheme="dirichlet", alpha=0.5, classes_per_client=2,
                    min_partition_size=10, test_fraction=0.2, seed=1)
    clients = [load_client_data("mnist", tmp_path, partition_id=pid, **settings)
               for pid in range(4)]
    info = partitions._cached_partitions.cache_info()
    assert (info.misses, info.hits) == (1, 3)
    assert sum(len(c.train) + len(c.test) for c in clients) == 400
    for client in clients:
        assert len(client.test) == max(1, int(0.2 * (len(client.train) + len(client.test))))
        expected_counts = np.bincount(client.train.labels.numpy(), minlength=10)
        assert np.array_equal(client.label_counts, expected_counts)
        assert client.train.images.shape[1:] == (1, 28, 28)
    again = load_client_data("mnist", tmp_path, partition_id=2, **settings)
    assert np.array_equal(again.test.labels.numpy(), clients[2].test.labels.numpy())
    with pytest.raises(ValueError, match=r"partition-id=4: allowed range is \[0, 3\]"):
        load_client_data("mnist", tmp_path, partition_id=4, **settings)
    clear_memory_cache()
