"""Truncated or corrupt dataset files are named with their size; missing data is downloaded."""

from __future__ import annotations

import re

import pytest

from fake_data import write_fake_mnist
from fedrdskd import data
from fedrdskd.data import DatasetNotFoundError, clear_memory_cache, load_dataset
from fedrdskd.dataset_files import DatasetFileError


@pytest.fixture(autouse=True)
def fresh_memo():
    clear_memory_cache()
    yield
    clear_memory_cache()


def test_truncated_idx_file_names_the_file_and_both_sizes(tmp_path):
    raw = write_fake_mnist(tmp_path, num_train=20, num_test=10) / "MNIST" / "raw"
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-16])  # as an interrupted copy leaves it
    with pytest.raises(DatasetFileError) as error:
        load_dataset("mnist", tmp_path, train=False)
    message = str(error.value)
    assert str(images) in message and f"({images.stat().st_size} bytes)" in message
    assert "shape (10, 28, 28), 7856 bytes, but it holds 7840" in message
    assert "copy it again" in message and "data.download=true" in message


def test_truncated_gzip_names_the_file(tmp_path):
    raw = write_fake_mnist(tmp_path, num_train=20, num_test=10) / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").unlink()
    gzipped = raw / "train-labels-idx1-ubyte.gz"
    gzipped.write_bytes(gzipped.read_bytes()[:20])
    with pytest.raises(DatasetFileError, match=re.escape(f"{gzipped} (20 bytes) is not a "
                                                         "complete gzip file")):
        load_dataset("mnist", tmp_path, train=True)


def test_corrupt_svhn_mat_file_is_named(tmp_path):
    mat = tmp_path / "svhn" / "test_32x32.mat"
    mat.parent.mkdir()
    mat.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DatasetFileError, match=re.escape(f"{mat} (30 bytes) is not a "
                                                         "readable .mat file")):
        load_dataset("svhn", tmp_path, train=False, cache_dir=tmp_path / "cache")


def fake_downloader(calls):
    """A torchvision download that writes the files where the readers look (no network)."""
    def download(name, root, train):
        calls.append((name, root, train))
        write_fake_mnist(root, num_train=20, num_test=10)
    return download


def test_missing_data_is_downloaded_into_the_cache_and_found_there_next_time(
        monkeypatch, tmp_path):
    monkeypatch.delenv("FEDRDSKD_DATA", raising=False)
    calls = []
    monkeypatch.setattr(data, "download_dataset", fake_downloader(calls))
    train = load_dataset("mnist", None, train=True, download=True, cache_dir=tmp_path)
    assert len(train) == 20 and calls == [("mnist", tmp_path / "data", True)]
    clear_memory_cache()
    again = load_dataset("mnist", None, train=True, download=True, cache_dir=tmp_path)
    assert len(again) == 20 and len(calls) == 1  # found locally, not downloaded again


def test_missing_data_under_a_root_is_downloaded_into_it(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(data, "download_dataset", fake_downloader(calls))
    test = load_dataset("mnist", tmp_path / "root", train=False, download=True,
                        cache_dir=tmp_path / "cache")
    assert len(test) == 10 and calls == [("mnist", tmp_path / "root", False)]


def test_offline_download_keeps_the_paths_tried_and_adds_the_error(monkeypatch, tmp_path):
    def offline(name, root, train):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error "
                           "[Errno -2] Name or service not known>")

    monkeypatch.setattr(data, "download_dataset", offline)
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("mnist", tmp_path, train=True, download=True, cache_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "Download failed: Error downloading" in message
    assert "Name or service not known" in message
    assert "data.root=<folder>" in message and "FEDRDSKD_DATA" in message


def test_the_experiment_downloads_by_default():
    from fedrdskd.experiment import DataSettings

    assert DataSettings().download is True
