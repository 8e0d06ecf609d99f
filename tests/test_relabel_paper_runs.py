"""scripts/relabel_paper_runs.py: old fedrdskd runs become fedrdskd_paper runs, values kept."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from fedrdskd.report import PAPER_BEHAVIOUR, load_run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "relabel_paper_runs.py"
spec = importlib.util.spec_from_file_location("relabel_paper_runs", SCRIPT)
relabel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(relabel)


def old_payload(name: str = "fedrdskd", **strategy) -> dict:
    return {"config": {"seed": 3, "strategy": {"name": name, "student_steps": 50, **strategy}},
            "rounds": [{"round": 1, "test_accuracy": 0.25}], "summary": {"final": 0.25}}


def test_old_run_gets_paper_name_and_the_added_options_at_rdskd_values():
    payload = relabel.relabelled(old_payload())
    strategy = payload["config"]["strategy"]
    assert strategy["name"] == "fedrdskd_paper"
    assert strategy["class_prior"] == "uniform" and strategy["student_batch_reuse"] == 1
    assert strategy["weight_hard_sample"] == 0.0 and strategy["student_interpolation"] == 1.0
    assert strategy["student_steps"] == 50
    assert payload["rounds"] == old_payload()["rounds"]
    assert payload["summary"]["final"] == 0.25
    assert payload["summary"]["relabelled"]["from"] == "fedrdskd"
    assert len(payload["summary"]["relabelled"]["added_options"]) == len(PAPER_BEHAVIOUR)


def test_new_runs_and_other_strategies_are_left_alone():
    assert relabel.relabelled(old_payload(class_prior="label-counts")) is None
    assert relabel.relabelled(old_payload(name="fedftg")) is None
    assert relabel.relabelled(old_payload(name="fedrdskd_paper")) is None


def test_folder_names_keep_their_variant_suffix():
    assert relabel.new_folder(Path("r/fedrdskd-logits-seed1")) == Path(
        "r/fedrdskd_paper-logits-seed1")
    assert relabel.new_folder(Path("r/fedrdskd-seed0")) == Path("r/fedrdskd_paper-seed0")
    assert relabel.new_folder(Path("r/fedavg-seed0")) == Path("r/fedavg-seed0")


def test_script_moves_the_run_and_the_report_reads_it_as_before(tmp_path):
    run_dir = tmp_path / "set" / "fedrdskd-seed3"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(old_payload()))
    before = load_run(run_dir / "results.json")
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=True)
    after = load_run(tmp_path / "set" / "fedrdskd_paper-seed3" / "results.json")
    assert not run_dir.exists()
    assert after.config["strategy.name"] == "fedrdskd_paper"
    assert {k: v for k, v in after.config.items() if k != "strategy.name"} == {
        k: v for k, v in before.config.items() if k != "strategy.name"}
    assert after.rounds == before.rounds
