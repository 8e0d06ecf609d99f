"""``fedrdskd-report`` on small synthetic ``results.json`` files (no training, no Ray)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from fake_results import main_table, report_of, tables_of, write_run

from fedrdskd.report import ConfigMismatchError, find_results
from fedrdskd.report_cli import main
from fedrdskd.report_table import write_report


@pytest.fixture
def two_strategies(tmp_path: Path) -> Path:
    """FedAvg and FedRDSKD, two seeds each, in one tree."""
    root = tmp_path / "runs"
    write_run(root / "avg0", [0.5, 0.8, 0.90], seed=0, round_seconds=10.0)
    write_run(root / "avg1", [0.6, 0.7, 0.95], seed=1, round_seconds=12.0)
    write_run(root / "kd0", [0.7, 0.9, 0.92], strategy="fedrdskd", seed=0,
              server_seconds=3.0, ensemble=[0.8, 0.9, 0.93],
              strategy_options={"generator_steps": 20})
    write_run(root / "kd1", [0.9, 0.93, 0.94], strategy="fedrdskd", seed=1,
              server_seconds=5.0, ensemble=[0.85, 0.9, 0.95],
              strategy_options={"generator_steps": 20})
    return root


def test_table_values_are_means_and_sample_stds_over_seeds(tmp_path, two_strategies):
    report = report_of(tmp_path, two_strategies)
    (table,) = report["tables"]
    avg, kd = table["rows"]
    assert (avg["strategy"], kd["strategy"]) == ("fedavg", "fedrdskd")
    assert avg["num_seeds"] == 2 and sorted(avg["seeds"]) == [0, 1]
    assert avg["final_test_accuracy"]["mean"] == pytest.approx(0.925)
    assert avg["final_test_accuracy"]["std"] == pytest.approx(0.05 / math.sqrt(2))
    assert avg["best_test_accuracy"]["mean"] == pytest.approx(0.925)
    assert avg["accuracy_at_round"]["2"]["mean"] == pytest.approx(0.75)
    assert avg["accuracy_at_round"]["2"]["std"] == pytest.approx(0.1 / math.sqrt(2))
    assert avg["total_seconds"]["mean"] == pytest.approx(33.0)
    assert kd["best_test_accuracy"]["mean"] == pytest.approx(0.93)
    assert kd["server_seconds_per_round"]["mean"] == pytest.approx(4.0)
    assert kd["final_ensemble_accuracy"]["mean"] == pytest.approx(0.94)
    assert avg["final_ensemble_accuracy"]["mean"] is None
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| fedavg | 2 | 92.50 ± 3.54 | 92.50 ± 3.54 | 75.00 ± 7.07 | — |" in markdown
    assert "## mnist · dirichlet · alpha=0.1" in markdown
    (settings,) = [line for line in markdown.splitlines() if line.startswith("- fedrdskd: ")]
    # options a run predates are filled with the behaviour it had (logit teacher, RDSKD as
    # published), beside the options it set
    for option in ("ensemble_combine=logits", "generator_steps=20", "weight_hard_sample=0.0",
                   "class_prior=uniform", "validation_betas=[]"):
        assert option in settings


def test_curve_is_mean_min_max_over_seeds_with_round_zero(tmp_path, two_strategies):
    avg = report_of(tmp_path, two_strategies)["tables"][0]["rows"][0]
    curve = avg["curve"]
    assert curve["round"] == [0, 1, 2, 3]
    assert curve["accuracy_mean"] == pytest.approx([0.1, 0.55, 0.75, 0.925])
    assert curve["accuracy_min"] == pytest.approx([0.1, 0.5, 0.7, 0.90])
    assert curve["accuracy_max"] == pytest.approx([0.1, 0.6, 0.8, 0.95])
    assert curve["elapsed_seconds_mean"] == pytest.approx([0.0, 11.0, 22.0, 33.0])


def test_rounds_to_target_counts_seeds_and_reports_not_reached(tmp_path, two_strategies):
    report = report_of(tmp_path, two_strategies, targets=(0.9, 0.99, "fedavg"))
    table = report["tables"][0]
    assert [t["target"] for t in table["targets"]] == pytest.approx([0.9, 0.99, 0.925])
    avg, kd = table["rows"]
    at_90, at_99, at_fedavg = avg["targets"]
    assert (at_90["reached"], at_90["rounds"]["mean"]) == (2, 3.0)
    assert at_90["seconds"]["mean"] == pytest.approx((30.0 + 36.0) / 2)
    assert at_99["reached"] == 0 and at_99["rounds"]["mean"] is None
    assert (at_fedavg["reached"], at_fedavg["rounds"]["values"]) == (1, [3])
    assert kd["targets"][0]["rounds"]["values"] == [2, 1]
    assert (kd["targets"][2]["reached"], kd["targets"][2]["rounds"]["values"]) == (1, [2])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "rounds to FedAvg final 92.50%" in markdown
    assert "| 3 (2/2) | 33 ± 4 | not reached (0/2) | — | 3 (1/2) | 36 |" in markdown
    assert "| 1.5 (2/2) | 15 ± 7 | not reached (0/2) | — | 2 (1/2) | 20 |" in markdown


def test_no_fedavg_row_means_no_default_target(tmp_path):
    write_run(tmp_path / "runs" / "kd", [0.5, 0.9], strategy="fedrdskd")
    table = report_of(tmp_path, tmp_path / "runs")["tables"][0]
    assert table["targets"] == [] and table["rows"][0]["targets"] == []


def test_refuses_to_average_seeds_with_different_configs(tmp_path):
    first = write_run(tmp_path / "a", [0.5, 0.9], seed=0)
    second = write_run(tmp_path / "b", [0.5, 0.9], seed=1, lr=0.1)
    with pytest.raises(ConfigMismatchError) as error:
        tables_of(first, second)
    message = str(error.value)
    assert "lr: 0.01 in" in message and "0.1 in" in message
    assert str(first) in message and str(second) in message
    assert "--split-by lr" in message
    assert main([str(first), str(second), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "report.md").exists()


def test_refuses_strategies_compared_under_different_settings_unless_split(tmp_path):
    write_run(tmp_path / "runs" / "avg", [0.5, 0.9], local_epochs=1)
    write_run(tmp_path / "runs" / "kd", [0.5, 0.9], strategy="fedrdskd", local_epochs=5)
    with pytest.raises(ConfigMismatchError, match="local_epochs: 1 in .*; 5 in"):
        tables_of(tmp_path / "runs")
    tables = tables_of(tmp_path / "runs", split_by=["local_epochs"])
    assert [len(table.rows) for table in tables] == [1, 1]
    report = report_of(tmp_path, tmp_path / "runs", split_by=["local_epochs"])
    assert [t["id"] for t in report["tables"]] == ["mnist-dirichlet-alpha0.1-local_epochs1",
                                                   "mnist-dirichlet-alpha0.1-local_epochs5"]


def test_refuses_duplicate_seed_in_one_row(tmp_path):
    write_run(tmp_path / "runs" / "x", [0.5, 0.9], seed=3)
    write_run(tmp_path / "runs" / "y", [0.6, 0.9], seed=3)
    with pytest.raises(ConfigMismatchError, match="seed=3"):
        tables_of(tmp_path / "runs")


def test_ignored_keys_may_differ_and_ignore_key_extends_them(tmp_path):
    write_run(tmp_path / "runs" / "a", [0.5, 0.9], seed=0, server__device="cpu")
    write_run(tmp_path / "runs" / "b", [0.5, 0.9], seed=1, server__device="cuda:0",
              client__num_cpus=2, lr=0.1)
    with pytest.raises(ConfigMismatchError) as error:
        tables_of(tmp_path / "runs")
    assert "  lr: " in str(error.value) and "  server.device: " not in str(error.value)
    (table,) = tables_of(tmp_path / "runs", ignore_keys=["lr", "server", "client",
                                                          "data", "output_dir"])
    assert table.rows[0].label == "fedavg" and len(table.rows[0].runs) == 2


def test_partitions_make_tables_and_strategy_variants_make_labelled_rows(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a01", [0.5, 0.9], partition__alpha=0.1)
    write_run(root / "a05", [0.5, 0.9], partition__alpha=0.5)
    for steps in (10, 20):
        write_run(root / f"kd{steps}", [0.5, 0.9], strategy="fedrdskd", seed=steps,
                  strategy_options={"generator_steps": steps}, partition__alpha=0.1)
    tables = tables_of(root)
    assert [table.identity["partition.alpha"] for table in tables] == [0.1, 0.5]
    assert [row.label for row in tables[0].rows] == [
        "fedavg", "fedrdskd (generator_steps=10)", "fedrdskd (generator_steps=20)"]
    merged = tables_of(root, ignore_keys=["output_dir", "data", "strategy.generator_steps"])
    assert [(row.label, len(row.runs)) for row in merged[0].rows] == [("fedavg", 1),
                                                                      ("fedrdskd", 2)]


def test_ablation_rows_name_only_the_options_that_leave_the_preset(tmp_path):
    root = tmp_path / "runs"
    preset = {"weight_hard_sample": 1.0, "class_prior": "uniform"}  # fedrdskd.yaml's
    for name, changed in (("preset", {}), ("no-hard", {"weight_hard_sample": 0.0}),
                          ("label-counts", {"class_prior": "label-counts"})):
        write_run(root / name, [0.5, 0.9], strategy="fedrdskd",
                  strategy_options={**preset, **changed})
    (table,) = tables_of(root)
    assert [row.label for row in table.rows] == [
        "fedrdskd", "fedrdskd (class_prior=label-counts)", "fedrdskd (weight_hard_sample=0.0)"]
    shutil.rmtree(root / "label-counts")  # a lone ablation still leaves the preset bare
    assert [row.label for row in tables_of(root)[0].rows] == [
        "fedrdskd", "fedrdskd (weight_hard_sample=0.0)"]


def test_options_the_preset_lacks_leave_the_value_most_rows_share(tmp_path):
    root = tmp_path / "runs"
    for name, x, y in (("a", 1, 1), ("b", 1, 2), ("c", 2, 1)):
        write_run(root / name, [0.5, 0.9], strategy="fedrdskd",
                  strategy_options={"x_not_in_preset": x, "y_not_in_preset": y})
    assert [row.label for row in tables_of(root)[0].rows] == [
        "fedrdskd", "fedrdskd (x_not_in_preset=2)", "fedrdskd (y_not_in_preset=2)"]


def test_finds_hydra_multirun_layout_and_names_searched_paths(tmp_path):
    sweep = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    for job, seed in enumerate((0, 1, 2)):
        write_run(sweep / str(job), [0.5, 0.9], seed=seed)
        (sweep / str(job) / ".hydra").mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    found = find_results([tmp_path / "multirun"])
    assert [path.parent.name for path in found] == ["0", "1", "2"]
    assert find_results([sweep / "1", sweep / "1" / "results.json"]) == [found[1]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No results.json found at or below '.*empty'"):
        find_results([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_results([tmp_path / "nowhere"])


def test_cli_writes_report_json_markdown_and_plots(tmp_path, two_strategies):
    out = tmp_path / "report"
    assert main([str(two_strategies), "--out", str(out), "--target-accuracy", "0.9",
                 "--at-round", "1", "--at-round", "50"]) == 0
    report = json.loads((out / "report.json").read_text())
    (table,) = report["tables"]
    assert table["plots"] == {"rounds": "mnist-dirichlet-alpha0.1-rounds.png",
                              "time": "mnist-dirichlet-alpha0.1-time.png",
                              "paired": "mnist-dirichlet-alpha0.1-paired.png"}
    for name in table["plots"].values():
        assert (out / name).stat().st_size > 1000
        assert f"]({name})" in (out / "report.md").read_text()
    assert table["at_rounds"] == [1] and table["targets"][0]["label"] == "90%"
    assert table["settings"]["num_clients"] == 20 and "data.root" not in table["settings"]
    assert "runs' own recorded timings" in report["note"]


def test_mean_accuracy_to_round_averages_each_seed_then_over_seeds(tmp_path,
                                                                   two_strategies):
    out = tmp_path / "report"
    assert main([str(two_strategies), "--out", str(out), "--mean-to-round", "2"]) == 0
    (table,) = json.loads((out / "report.json").read_text())["tables"]
    avg, kd = table["rows"]
    assert table["mean_to_round"] == 2
    assert avg["mean_accuracy_to_round"]["values"] == pytest.approx([0.65, 0.65])
    assert avg["mean_accuracy_to_round"]["std"] == pytest.approx(0.0)
    assert kd["mean_accuracy_to_round"]["values"] == pytest.approx([0.8, 0.915])
    markdown = (out / "report.md").read_text()
    assert "| mean acc. r1-2 % |" in main_table(out / "report.md")
    assert "| fedavg | 2 | 92.50 ± 3.54 | 92.50 ± 3.54 | 65.00 ± 0.00 | — |" in markdown
    # N beyond the last round is cut to it; without the option there is no column.
    assert main([str(two_strategies), "--out", str(out), "--mean-to-round", "50"]) == 0
    (table,) = json.loads((out / "report.json").read_text())["tables"]
    assert table["mean_to_round"] == 3
    assert table["rows"][0]["mean_accuracy_to_round"]["values"] == pytest.approx(
        [(0.5 + 0.8 + 0.9) / 3, (0.6 + 0.7 + 0.95) / 3])
    report = report_of(tmp_path, two_strategies)
    assert "mean_accuracy_to_round" not in report["tables"][0]["rows"][0]
    assert "mean acc. r1-" not in main_table(tmp_path / "out" / "report.md")


def test_probability_ensemble_is_shown_when_every_run_of_the_table_has_it(tmp_path):
    probabilities = "ensemble_accuracy_class_weighted_probabilities"
    root = tmp_path / "runs"
    write_run(root / "a", [0.5, 0.9], ensemble=[0.6, 0.95], ensemble_key=probabilities)
    write_run(root / "b", [0.5, 0.9], strategy="fedrdskd", ensemble=[0.7, 0.97],
              ensemble_key=probabilities)
    table = report_of(tmp_path, root)["tables"][0]
    assert table["ensemble_combination"] == "probabilities"
    assert table["rows"][1]["final_ensemble_accuracy"]["mean"] == pytest.approx(0.97)
    assert "members' probabilities combined" in (tmp_path / "out" / "report.md").read_text()
    # One run without it: the table falls back to the logit ensemble, for every row.
    write_run(root / "c", [0.5, 0.9], seed=1, ensemble=[0.1, 0.2])
    table = report_of(tmp_path, root)["tables"][0]
    assert table["ensemble_combination"] == "logits"
    assert table["rows"][0]["final_ensemble_accuracy"]["values"] == [None, 0.2]


def test_options_added_later_take_the_behaviour_older_runs_had(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "old", [0.5, 0.9], strategy="fedrdskd")  # recorded before the keys
    write_run(root / "new", [0.6, 0.9], strategy="fedrdskd",
              strategy_options={"ensemble_combine": "probabilities",
                                "persist_student_optimizer": False})
    write_run(root / "same", [0.7, 0.9], strategy="fedrdskd", seed=1,
              strategy_options={"ensemble_combine": "logits",
                                "persist_student_optimizer": False})
    rows = report_of(tmp_path, root)["tables"][0]["rows"]
    assert sorted((row["strategy"], row["num_seeds"]) for row in rows) == [
        ("fedrdskd", 1), ("fedrdskd (ensemble_combine=logits)", 2)]  # the preset: bare


def test_cli_rejects_target_given_in_percent(tmp_path, two_strategies, capsys):
    with pytest.raises(SystemExit):
        main([str(two_strategies), "--target-accuracy", "95"])
    assert "give a fraction, e.g. 0.95" in capsys.readouterr().err


def test_null_metrics_and_missing_keys_are_handled(tmp_path):
    run_dir = write_run(tmp_path / "runs" / "a", [0.5, 0.9], server_seconds=None)
    payload = json.loads((run_dir / "results.json").read_text())
    payload["rounds"][1]["test_accuracy"] = None
    payload["summary"] = {}
    (run_dir / "results.json").write_text(json.dumps(payload))
    row = report_of(tmp_path, tmp_path / "runs")["tables"][0]["rows"][0]
    assert row["final_test_accuracy"]["mean"] is None
    assert row["best_test_accuracy"]["mean"] == pytest.approx(0.5)
    assert row["server_seconds_per_round"]["mean"] is None
    assert row["total_seconds"]["mean"] == pytest.approx(20.0)
    assert row["curve"]["round"] == [1, 2]


def test_rows_with_different_seeds_are_flagged(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1, 10):
        write_run(root / f"avg{seed}", [0.5, 0.9], seed=seed)
    write_run(root / "kd0", [0.5, 0.9], strategy="fedrdskd", seed=0)
    report_of(tmp_path, root)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "rows ran different seeds" in markdown and "fedavg 0, 1, 10; fedrdskd 0" in markdown


def test_y_min_zooms_plots_and_is_checked(tmp_path, two_strategies):
    assert main([str(two_strategies), "--out", str(tmp_path / "zoom"), "--y-min", "0.9"]) == 0
    assert (tmp_path / "zoom" / "mnist-dirichlet-alpha0.1-rounds.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="y_min=95.0 is outside"):
        write_report(tables_of(two_strategies), tmp_path / "bad", targets=[], at_rounds=[],
                     y_min=95.0)


def test_run_dirs_are_named_as_given_and_resumed_runs_compare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(Path("runs") / "a", [0.5, 0.9], seed=0)
    write_run(Path("runs") / "b", [0.6, 0.9], seed=1, resume_from="runs/b")
    (table,) = tables_of(Path("runs"))
    assert [str(run.run_dir) for run in table.rows[0].runs] == ["runs/a", "runs/b"]
