"""End to end: the ``fedrdskd`` CLI in a subprocess, through Hydra and Ray, on fake MNIST.

As small as a real run gets: 3 clients, all trained each round, 2 rounds; the fake
images encode their label in a bright block, so a few local epochs at a larger
learning rate learn it well above chance (10 %). Marked ``slow`` (each run takes ~40-70 s
on the shared 2-core machine, mostly Ray start-up).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedrdskd.experiment import experiment_from_dict
from fedrdskd.inprocess import run_in_process

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {"initial_test_accuracy", "final_test_accuracy", "best_test_accuracy",
                "total_seconds", "wall_seconds_including_evaluation"}
DISTILLATION_KEYS = {"generator_authenticity", "generator_class_diversity",
                     "generator_inter_sample_diversity", "generator_total", "kd_loss",
                     "distill_seconds", "generator_seconds", "student_seconds",
                     "ensemble_agreement", "kl_before", "kl_after"}


def run_cli(*overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "fedrdskd.cli", *overrides],
                          capture_output=True, text=True, timeout=timeout, env=environment)


def small_run(fake_mnist_root: Path, cache: Path, num_rounds: int = 2) -> list[str]:
    return ["dataset=mnist", f"data.root={fake_mnist_root}", f"data.cache_dir={cache}",
            f"num_rounds={num_rounds}", "num_clients=3", "fraction_train=1.0", "lr=0.05",
            "local_epochs=3"]


def assert_fully_resolved(value, path="config") -> None:
    """No ``${...}`` interpolation left anywhere in the recorded config."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_fully_resolved(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_fully_resolved(item, f"{path}[{index}]")
    else:
        assert not (isinstance(value, str) and "${" in value), (path, value)


def check_run_dir(run_dir: Path, *, strategy: str, num_rounds: int, seed: int = 0) -> dict:
    """The files of a finished run and the structure of its ``results.json``."""
    for name in ("results.json", "accuracy.png", "partition.png"):
        assert (run_dir / name).stat().st_size > 0, name
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results) == {"config", "rounds", "summary"}
    config = results["config"]
    assert_fully_resolved(config)
    assert config["strategy"]["name"] == strategy
    assert (config["num_rounds"], config["num_clients"], config["seed"]) == (num_rounds, 3,
                                                                             seed)
    assert config["output_dir"] == str(run_dir)
    assert {"dataset", "partition", "model", "data", "client", "server"} <= set(config)
    rounds = results["rounds"]
    assert [row["round"] for row in rounds] == list(range(1, num_rounds + 1))
    for row in rounds:
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["round_seconds"] > 0 and math.isfinite(row["test_loss"])
        assert row["num_replies"] == 3 and row["num_excluded"] == 0
    assert rounds[-1]["elapsed_seconds"] == pytest.approx(
        sum(row["round_seconds"] for row in rounds))
    summary = results["summary"]
    assert SUMMARY_KEYS <= set(summary)
    assert summary["final_test_accuracy"] == rounds[-1]["test_accuracy"]
    assert summary["best_test_accuracy"] == max(row["test_accuracy"] for row in rounds)
    return results


@pytest.mark.parametrize("strategy, extra", [
    ("fedavg", []),
    ("fedrdskd", ["strategy.generator_steps=3", "strategy.student_steps=3"]),
])
def test_end_to_end_run(fake_mnist_root, tmp_path, strategy, extra):
    run_dir = tmp_path / "run"
    completed = run_cli(*small_run(fake_mnist_root, tmp_path / "cache"),
                        f"strategy={strategy}", *extra, f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = check_run_dir(run_dir, strategy=strategy, num_rounds=2)
    summary, rounds = results["summary"], results["rounds"]
    assert summary["initial_test_accuracy"] < 0.2  # chance: 10 classes
    assert summary["best_test_accuracy"] > 0.5, [row["test_accuracy"] for row in rounds]
    # the in-process federation (benchmarks' tool) runs the same rounds to the same numbers
    config = {**results["config"], "output_dir": str(tmp_path / "in-process")}
    in_process = run_in_process(experiment_from_dict(config), tmp_path / "in-process")
    replayed = json.loads((tmp_path / "in-process" / "results.json").read_text())["rounds"]
    assert [row["test_accuracy"] for row in replayed] == [row["test_accuracy"]
                                                           for row in rounds]
    assert in_process["final_test_accuracy"] == summary["final_test_accuracy"]
    if strategy == "fedrdskd":
        for row in rounds:
            assert DISTILLATION_KEYS <= set(row), DISTILLATION_KEYS - set(row)
            assert 0.0 <= row["ensemble_agreement"] <= 1.0
            assert row["distill_seconds"] <= row["server_seconds"] <= row["round_seconds"]
        assert results["config"]["strategy"]["generator_steps"] == 3
    else:
        assert not DISTILLATION_KEYS & set(rounds[0])


@pytest.mark.skipif(
    not os.environ.get("FEDRDSKD_TEST_MULTIRUN"),
    reason="a 2-run sweep takes ~2.5 min on the shared 2-core machine (Ray starts once per "
           "run); set FEDRDSKD_TEST_MULTIRUN=1 to run it")
def test_multirun_sweep_writes_one_run_dir_per_seed(fake_mnist_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    completed = run_cli("-m", *small_run(fake_mnist_root, tmp_path / "cache", 1),
                        "strategy=fedavg", "seed=0,1", f"hydra.sweep.dir={sweep_dir}",
                        timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dirs = sorted(path for path in sweep_dir.iterdir() if path.is_dir())
    assert [path.name for path in run_dirs] == ["0", "1"]
    for seed, run_dir in enumerate(run_dirs):
        check_run_dir(run_dir, strategy="fedavg", num_rounds=1, seed=seed)


@pytest.mark.parametrize("override, message", [
    ("num_clients=0", r"Invalid config value num_clients=0: allowed range is [1, "),
    ("partition.alpha=0", r"Invalid config value partition.alpha=0: allowed range is (0.0"),
    ("strategy=fedftg client.send_label_counts=false",
     "Invalid config value client.send_label_counts=False: strategy fedftg needs the "
     "clients' label counts"),
])
def test_bad_input_fails_before_ray_starts(fake_mnist_root, tmp_path, override, message):
    run_dir = tmp_path / "run"
    started = time.perf_counter()
    completed = run_cli(*small_run(fake_mnist_root, tmp_path / "cache"), *override.split(),
                        f"hydra.run.dir={run_dir}", timeout=120)
    seconds = time.perf_counter() - started
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert message in output, output[-2000:]
    assert "ray" not in output.lower(), output[-2000:]  # Ray never started
    assert not (run_dir / "results.json").exists()
    assert not (run_dir / "partition.png").exists()  # failed before the preflight
    assert seconds < 90  # imports only (measured 30 s at load 7; a Ray run takes > 60 s)


def test_a_finished_run_directory_is_refused_before_hydra_writes_to_it(fake_mnist_root,
                                                                         tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "results.json").write_text("{}")
    (run_dir / ".hydra" / "config.yaml").write_text("the finished run's config\n")
    completed = run_cli(*small_run(fake_mnist_root, tmp_path / "cache"),
                        f"hydra.run.dir={run_dir}", timeout=120)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output[-2000:]
    assert f"{run_dir} holds a finished run (results.json)" in output
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "the finished run's config\n"
    assert sorted(path.name for path in run_dir.iterdir()) == [".hydra", "results.json"]
