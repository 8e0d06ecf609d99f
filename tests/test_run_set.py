"""experiments/run_set.py: which runs of a set are skipped, resumed or started."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "run_set.py"
spec = importlib.util.spec_from_file_location("run_set", SCRIPT)
run_set = importlib.util.module_from_spec(spec)
sys.modules["run_set"] = run_set  # dataclasses look their module up there
spec.loader.exec_module(run_set)


def recorded(run_dir: Path, rounds: int, *, seed: int = 0, name: str = "fedavg",
             checkpoint: bool = False) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({
        "config": {"seed": seed, "strategy": {"name": name}},
        "rounds": [{"round": r} for r in range(1, rounds + 1)], "summary": {}}))
    if checkpoint:
        (run_dir / "checkpoint.pt").write_bytes(b"")


def planned(root: Path, **options):
    settings = dict(root=root, set_name="mnist/a", rounds=3, strategies=["fedavg"],
                    seeds=[0, 1, 2], overrides=["partition.alpha=0.1"],
                    fedrdskd=["fedrdskd"])
    settings.update(options)
    return run_set.plan(**settings)


def test_complete_runs_are_skipped_interrupted_resumed_missing_started(tmp_path):
    recorded(tmp_path / "mnist/a/fedavg-seed0", 3)
    (tmp_path / "mnist/a/fedavg-seed1").mkdir(parents=True)
    (tmp_path / "mnist/a/fedavg-seed1/checkpoint.pt").write_bytes(b"")
    runs = planned(tmp_path)
    assert [run.action for run in runs] == ["skip", "resume", "fresh"]
    resume, fresh = runs[1].command, runs[2].command
    assert resume[-1] == f"resume_from={tmp_path / 'mnist/a/fedavg-seed1'}"
    assert fresh == ["fedrdskd", "strategy=fedavg", "seed=2", "num_rounds=3",
                     "partition.alpha=0.1", f"hydra.run.dir={tmp_path / 'mnist/a/fedavg-seed2'}"]


def test_more_rounds_resume_a_finished_run_from_its_checkpoint(tmp_path):
    recorded(tmp_path / "mnist/a/fedavg-seed0", 3, checkpoint=True)
    assert planned(tmp_path, rounds=5, seeds=[0])[0].action == "resume"
    recorded(tmp_path / "mnist/a/fedavg-seed1", 3, seed=1)  # committed: no checkpoint
    with pytest.raises(SystemExit, match="3 of 5 rounds and no checkpoint.pt"):
        planned(tmp_path, rounds=5, seeds=[1])


def test_presets_are_named_by_strategy_and_labels_name_variants(tmp_path):
    runs = planned(tmp_path, strategies=["fedftg_cpu"], seeds=[0])
    assert runs[0].run_dir == tmp_path / "mnist/a/fedftg-seed0"
    assert "strategy=fedftg_cpu" in runs[0].command
    runs = planned(tmp_path, strategies=["fedrdskd"], seeds=[1], label="fedrdskd-logits")
    assert runs[0].run_dir == tmp_path / "mnist/a/fedrdskd-logits-seed1"
    with pytest.raises(SystemExit, match="exactly one strategy"):
        planned(tmp_path, strategies=["fedavg", "fedrdskd"], label="x")
    with pytest.raises(SystemExit, match="Unknown strategy preset 'fedsgd'"):
        planned(tmp_path, strategies=["fedsgd"])


def test_a_folder_holding_another_experiment_is_refused(tmp_path):
    recorded(tmp_path / "mnist/a/fedavg-seed0", 3, seed=4)
    with pytest.raises(SystemExit, match="holds another experiment"):
        planned(tmp_path, seeds=[0])


def test_main_runs_one_at_a_time_and_stops_at_a_failure(tmp_path, capsys):
    ok = f"{sys.executable} -c pass"
    assert run_set.main(["--root", str(tmp_path), "--set", "s", "--rounds", "2",
                         "--strategies", "fedavg", "--seeds", "0,1", "--fedrdskd", ok]) == 0
    assert capsys.readouterr().out.count(" fresh ") == 2
    failing = f"{sys.executable} -c 'raise SystemExit(3)'"
    assert run_set.main(["--root", str(tmp_path), "--set", "s", "--rounds", "2",
                         "--strategies", "fedavg", "--seeds", "0,1",
                         "--fedrdskd", failing]) == 1
    output = capsys.readouterr()
    assert "[1/2] fresh" in output.out and "[2/2]" not in output.out
    assert "run the same command again" in output.err
    with pytest.raises(SystemExit, match="go before the Hydra overrides"):
        run_set.main(["--set", "s", "--rounds", "2", "--strategies", "fedavg",
                      "--seeds", "0", "--", "seed=1", "--dry-run"])
