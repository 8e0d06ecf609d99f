"""benchmarks/lead_by_round.py: the ensemble's lead kept in round 1 and later, by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def lead_by_round(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports tuning_table beside it
    spec = importlib.util.spec_from_file_location("lead_by_round", BENCHMARKS / "lead_by_round.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(server_round, aggregate, ensemble, distilled):
    return {"round": server_round, "aggregate_accuracy": aggregate,
            "ensemble_accuracy_class_weighted_probabilities": ensemble,
            "test_accuracy": distilled}


RUNS = [
    # round 1: lead 20 points, 5 kept (25 %); round 2: lead 10, 5 kept (50 %);
    # round 3: lead 1 point, not a led round
    [row(1, 0.50, 0.70, 0.55), row(2, 0.80, 0.90, 0.85), row(3, 0.90, 0.91, 0.89)],
    # round 1: lead 4 points, 2 kept (50 %); round 2: no lead
    [row(1, 0.60, 0.64, 0.62), row(2, 0.90, 0.90, 0.91)],
]


def test_shares_split_round_1_from_the_rest(lead_by_round):
    parts = lead_by_round.split_shares(RUNS)
    assert parts["round 1"][0] == pytest.approx([0.25, 0.5])
    assert parts["round 1"][1] == pytest.approx([0.20, 0.04])
    assert parts["rounds 2+"][0] == pytest.approx([0.5])
    assert parts["all"][0] == pytest.approx([0.25, 0.5, 0.5])
    assert lead_by_round.cell(*parts["round 1"]) == "38 % (2, 12.0)"
    assert lead_by_round.cell([], []) == "n/a (0)"


def test_table_has_one_line_per_set(lead_by_round, tmp_path, capsys):
    folders = []
    for index, rounds in enumerate(RUNS):
        folder = tmp_path / f"run{index}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"rounds": rounds}))
        folders.append(str(folder))
    lead_by_round.main([*folders, "--label", "both", "--", folders[1], "--label", "second"])
    lines = capsys.readouterr().out.splitlines()
    assert "| both | 2 | 38 % (2, 12.0) | 50 % (1, 10.0) | 42 % (3, 11.3) |" in lines
    assert "| second | 1 | 50 % (1, 4.0) | n/a (0) | 50 % (1, 4.0) |" in lines
