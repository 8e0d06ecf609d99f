"""What the ``fedrdskd`` CLI checks before Ray starts (in-process; one subprocess check is in
``test_simulation.py``): strategy needs, devices, ``resume_from``, and run directories."""

from __future__ import annotations

import pytest
import torch
from hydra_config import hydra_dict
from omegaconf import OmegaConf

from fedrdskd.checkpoint import (CHECKPOINT_NAME, Checkpoint, experiment_fingerprint,
                                 save_checkpoint)
from fedrdskd.cli import RunDirectoryGuard, check_resume, check_strategy_options
from fedrdskd.experiment import experiment_from_dict
from fedrdskd.models import model_factory


def experiment(*overrides: str):
    return experiment_from_dict(hydra_dict("data.root=null", *overrides))


@pytest.mark.parametrize("overrides, message", [
    (["strategy=fedftg", "client.send_label_counts=false"],
     "client.send_label_counts=False: strategy fedftg needs the clients' label counts"),
    (["strategy=fedftg_cpu", "client.send_label_counts=false"],
     "client.send_label_counts=False"),
    (["server.device=cuda:3"], "server.device='cuda:3': torch cannot use this device"),
    (["strategy=fedrdskd", "strategy.generator_steps=2.5"],
     "generator_steps=2.5: must be an integer"),
    (["strategy=fedftg", "strategy.batch_size=16.5"], "batch_size=16.5: must be an integer"),
    (["strategy=fedftg", "strategy.iterations=abc"], "iterations='abc': must be an integer"),
])
def test_strategy_problems_are_found_before_ray(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_strategy_options(experiment(*overrides))


def test_fedftg_without_iterations_needs_no_label_counts():
    check_strategy_options(experiment("strategy=fedftg", "strategy.iterations=0",
                                      "client.send_label_counts=false"))


def write_checkpoint(run_dir, settings) -> None:
    model = model_factory(settings.client.model, settings.client.data.dataset)()
    save_checkpoint(run_dir / CHECKPOINT_NAME, Checkpoint(
        round=1, arrays=model.state_dict(), fingerprint=experiment_fingerprint(settings),
        strategy={}, rng={}))


def test_resume_problems_are_found_before_ray(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"resume_from='{missing}': no checkpoint"):
        check_resume(experiment(f"resume_from={missing}"))
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir, experiment())
    check_resume(experiment(f"resume_from={run_dir}"))  # the same settings: fine
    with pytest.raises(ValueError, match=r"other settings \(seed: checkpoint 0, config 5\)"):
        check_resume(experiment(f"resume_from={run_dir}", "seed=5"))
    path = run_dir / CHECKPOINT_NAME
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        check_resume(experiment(f"resume_from={run_dir}"))


def test_resume_with_another_strategys_state_is_refused(tmp_path):
    write_checkpoint(tmp_path, experiment())
    distilling = experiment("strategy=fedrdskd", f"resume_from={tmp_path}")
    with pytest.raises(ValueError, match="strategy: checkpoint 'fedavg', config 'fedrdskd'"):
        check_resume(distilling, check_strategy_options(distilling))


def hydra_config(run_dir, **task):
    return OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)},
                                       "sweep": {"dir": str(run_dir)}},
                             **hydra_dict("data.root=null"), **task})


def test_a_directory_holding_a_run_is_refused_unless_resuming_it(tmp_path):
    guard = RunDirectoryGuard()
    guard.on_run_start(hydra_config(tmp_path / "fresh"))  # nothing there: fine
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="holds a finished run .*resume_from="):
        guard.on_run_start(hydra_config(finished))
    write_checkpoint(finished, experiment())
    guard.on_run_start(hydra_config(finished, resume_from=str(finished)))
    guard.on_run_start(hydra_config(finished, resume_from=str(finished / CHECKPOINT_NAME)))
    with pytest.raises(SystemExit, match="other settings"):  # refused before Hydra writes
        guard.on_run_start(hydra_config(finished, resume_from=str(finished), seed=3))
    with pytest.raises(SystemExit, match="holds a finished run"):
        guard.on_run_start(hydra_config(finished, resume_from=str(tmp_path / "other")))


def test_a_sweep_into_folders_holding_runs_is_refused(tmp_path):
    (tmp_path / "0").mkdir()
    RunDirectoryGuard().on_multirun_start(hydra_config(tmp_path))
    torch.save({}, tmp_path / "0" / CHECKPOINT_NAME)
    with pytest.raises(SystemExit, match=r"holds an interrupted run.*hydra\.sweep\.dir"):
        RunDirectoryGuard().on_multirun_start(hydra_config(tmp_path))
