"""The report's paired comparison, cost and distillation gain on synthetic runs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from fake_results import report_of, write_run

from fedrdskd.report import DEFAULT_IGNORED_KEYS, ConfigMismatchError, load_run
from fedrdskd.report_cli import main
from fedrdskd.report_paired import pair_runs
from fedrdskd.report_runs import StrategyRow
from fedrdskd.report_sections import find_section

T_975 = {2: 4.3026527, 4: 2.7764451}  # t_{0.975, n-1} for 3 and 5 seeds, from a table

BASELINE = [[0.50, 0.60, 0.70, 0.80, 0.90],
            [0.51, 0.61, 0.71, 0.81, 0.91],
            [0.52, 0.62, 0.72, 0.82, 0.92]]
# Per-round differences: round 1 +10/+12/+11 points, round 2 +5/-5/0, round 3 +2/0/-1,
# round 4 -5/-6/-4, round 5 -2/-3/-2.5.
STRATEGY = [[0.60, 0.65, 0.72, 0.75, 0.88],
            [0.63, 0.56, 0.71, 0.75, 0.88],
            [0.63, 0.62, 0.71, 0.78, 0.895]]


@pytest.fixture
def three_seeds(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root / f"fedavg-seed{seed}", BASELINE[seed], seed=seed)
        write_run(root / f"fedrdskd-seed{seed}", STRATEGY[seed], strategy="fedrdskd",
                  seed=seed)
    return root


def measure(strategy: dict, name: str, **match) -> dict:
    return next(m for m in strategy["measures"] if m["measure"] == name
                and all(m.get(key) == value for key, value in match.items()))


def test_three_seeds_by_hand(tmp_path, three_seeds):
    report = report_of(tmp_path, three_seeds, targets=(0.66, 0.9, 0.99), at_rounds=(1,))
    paired = report["tables"][0]["paired"]
    assert paired["baseline"] == "fedavg" and paired["mean_to_round"] == 5
    (strategy,) = paired["strategies"]
    assert strategy["strategy"] == "fedrdskd" and strategy["paired_seeds"] == [0, 1, 2]
    # Mean over rounds 1-5 per seed: d = 0.10/5, -0.02/5, 0.035/5 = 0.02, -0.004, 0.007;
    # mean 0.0076667, s = 0.0120139, s/sqrt(3) = 0.0069362, half width 4.3026527 x that
    # = 0.0298441 -> [-0.0221774, 0.0375108]: crosses 0.
    mean = measure(strategy, "mean_accuracy_to_round")
    assert mean["differences"] == pytest.approx([0.02, -0.004, 0.007], abs=1e-9)
    assert mean["mean"] == pytest.approx(0.0076667, abs=1e-7)
    half = T_975[2] * 0.0120139 / math.sqrt(3)
    assert (mean["interval"]["low"], mean["interval"]["high"]) == pytest.approx(
        (0.0076667 - half, 0.0076667 + half), abs=1e-6)
    assert (mean["wins"], mean["ties"], mean["losses"]) == (2, 0, 1)
    assert mean["verdict"] == "no detectable difference (3 seeds)"
    # Final accuracy: d = -2, -3, -2.5 points; s = 0.005, half width 0.0124209.
    final = measure(strategy, "final_test_accuracy")
    assert (final["interval"]["low"], final["interval"]["high"]) == pytest.approx(
        (-0.0374209, -0.0125791), abs=1e-6)
    assert final["verdict"] == "worse" and final["losses"] == 3
    assert measure(strategy, "best_test_accuracy")["verdict"] == "worse"
    assert measure(strategy, "accuracy_at_round", round=1)["verdict"] == "better"
    # Rounds to 66 %: round 3 everywhere -> three ties; to 90 %: only FedAvg reaches it.
    level = measure(strategy, "rounds_to_target", target=0.66)
    assert level["differences"] == [0.0, 0.0, 0.0] and level["ties"] == 3
    assert level["verdict"] == "no detectable difference (3 seeds)"
    unreached = measure(strategy, "rounds_to_target", target=0.9)
    assert (unreached["n"], unreached["losses"], unreached["only_baseline_reached"]) == (
        0, 3, 3)
    assert unreached["verdict"].startswith("no interval")
    nobody = measure(strategy, "rounds_to_target", target=0.99)
    assert (nobody["ties"], nobody["verdict"]) == (3, "neither reached it (3 of 3 seeds)")
    per_round = strategy["per_round"]
    assert (per_round["better"], per_round["worse"]) == ([1], [4, 5])
    assert per_round["text"] == "detectably better at round 1; detectably worse at rounds 4, 5"
    assert per_round["mean"][3] == pytest.approx(-0.05)


def test_mean_over_the_last_rounds_is_paired_too(tmp_path, three_seeds):
    out = tmp_path / "out"
    assert main([str(three_seeds), "--out", str(out), "--mean-last-rounds", "2"]) == 0
    (strategy,) = json.loads((out / "report.json").read_text())["tables"][0]["paired"][
        "strategies"]
    last = measure(strategy, "mean_accuracy_to_round", first_round=4)
    # rounds 4-5: (-5 - 2) / 2, (-6 - 3) / 2, (-4 - 2.5) / 2 points
    assert last["label"] == "mean acc. r4-5" and last["round"] == 5
    assert last["differences"] == pytest.approx([-0.035, -0.045, -0.0325], abs=1e-9)
    assert last["verdict"] == "worse"
    assert "| fedrdskd | mean acc. r4-5 (points) | 3 | -3.75 |" in (out / "report.md").read_text()
    # as many rounds as the runs have (the CLI's default 5 here) adds nothing new
    assert main([str(three_seeds), "--out", str(tmp_path / "all")]) == 0
    (strategy,) = json.loads((tmp_path / "all" / "report.json").read_text())["tables"][0][
        "paired"]["strategies"]
    assert [m["label"] for m in strategy["measures"]][:2] == ["mean acc. r1-5", "acc. @5"]


def test_negative_last_rounds_is_refused(tmp_path, three_seeds, capsys):
    with pytest.raises(SystemExit):
        main([str(three_seeds), "--out", str(tmp_path / "out"), "--mean-last-rounds", "-1"])
    assert "whole number of rounds" in capsys.readouterr().err


def test_markdown_puts_the_paired_verdict_first_and_the_plot_is_written(tmp_path,
                                                                        three_seeds):
    report = report_of(tmp_path, three_seeds)
    table = report["tables"][0]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.index("### Paired with fedavg") < markdown.index("### Over seeds")
    headline = find_section(markdown, "paired")
    assert "95 % CI: Student t over the paired seeds" in headline
    assert "bootstrap" not in headline  # fewer than 5 seeds
    assert ("| fedrdskd | 3 | +0.77 | [-2.22, +3.75] | 2/0/1 | no detectable difference "
            "(3 seeds) | detectably better at round 1; detectably worse at rounds 4, 5 |"
            ) in headline
    assert "| fedrdskd | final acc. (points) | 3 | -2.50 | [-3.74, -1.26] | 0/0/3 | worse |" \
        in find_section(markdown, "paired-details")
    plot = tmp_path / "out" / table["plots"]["paired"]
    assert plot.name == "mnist-dirichlet-alpha0.1-paired.png" and plot.stat().st_size > 1000
    assert f"]({plot.name})" in markdown


def test_five_seeds_add_a_bootstrap_interval(tmp_path):
    root = tmp_path / "runs"
    for seed in range(5):
        write_run(root / f"avg{seed}", [0.5, 0.7], seed=seed)
        shift = 0.01 * (seed + 1)
        write_run(root / f"kd{seed}", [0.5 + shift, 0.7 + shift], strategy="fedrdskd",
                  seed=seed)
    (strategy,) = report_of(tmp_path, root)["tables"][0]["paired"]["strategies"]
    mean = measure(strategy, "mean_accuracy_to_round")
    # d = 1..5 points: mean 0.03, half width 2.7764451 x 0.0158114 / sqrt(5) = 0.0196324
    assert (mean["interval"]["low"], mean["interval"]["high"]) == pytest.approx(
        (0.0103676, 0.0496324), abs=1e-6)
    assert mean["verdict"] == "better" and (mean["wins"], mean["losses"]) == (5, 0)
    assert 0.01 < mean["bootstrap"]["low"] < 0.03 < mean["bootstrap"]["high"] < 0.05
    headline = find_section((tmp_path / "out" / "report.md").read_text(), "paired")
    assert "95 % CI (bootstrap)" in headline and "paired bootstrap (percentile" in headline


def test_pair_with_a_differing_config_is_refused_naming_the_key(tmp_path):
    baseline = load_run(write_run(tmp_path / "avg", [0.5, 0.9], seed=0) / "results.json")
    other = load_run(write_run(tmp_path / "kd", [0.6, 0.9], strategy="fedrdskd", seed=0,
                               lr=0.1) / "results.json")
    rows = [StrategyRow(run.config["strategy.name"], run.config["strategy.name"], {}, [run])
            for run in (other, baseline)]
    with pytest.raises(ConfigMismatchError) as error:
        pair_runs(rows[0], rows[1], DEFAULT_IGNORED_KEYS, refused={})
    message = str(error.value)
    assert "Refusing to pair" in message and "lr: 0.01 in" in message and "0.1 in" in message
    assert str(tmp_path / "avg") in message and "--ignore-key lr" in message


def test_unseeded_runs_are_refused_by_name_and_the_report_is_still_written(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "avg0", [0.5, 0.9], seed=0, sampling=None)  # recorded before
    write_run(root / "avg1", [0.5, 0.9], seed=1,
              sampling={"seeded": False, "nodes_reported": 18, "nodes": 20})
    write_run(root / "avg2", [0.5, 0.9], seed=2)
    for seed in (0, 1, 2, 3):
        write_run(root / f"kd{seed}", [0.6, 0.9], strategy="fedrdskd", seed=seed)
    paired = report_of(tmp_path, root)["tables"][0]["paired"]
    refused = {entry["run_dir"]: entry["reason"] for entry in paired["refused"]}
    assert set(refused) == {str(root / "avg0"), str(root / "avg1")}
    assert "does not record whether client sampling followed the seed" in refused[
        str(root / "avg0")]
    assert "18 of 20 nodes reported their partition id" in refused[str(root / "avg1")]
    (strategy,) = paired["strategies"]
    assert strategy["paired_seeds"] == [2]
    assert strategy["left_out"] == {"strategy_only": [3], "baseline_only": [],
                                    "refused": [0, 1]}
    headline = find_section((tmp_path / "out" / "report.md").read_text(), "paired")
    assert f"- Pairing refused for {root / 'avg1'}: its client sampling did not" in headline
    assert "- fedrdskd: seed(s) 3 not paired (no fedavg run)." in headline
    assert "| fedrdskd | 1 | +5.00 | — (1 seed) |" in headline
    assert "no detectable difference (1 seed)" in headline


def test_a_table_of_unseeded_baseline_runs_only_says_why(tmp_path):
    root = tmp_path / "archive"
    for seed in (0, 1):
        write_run(root / f"avg{seed}", [0.5, 0.9], seed=seed,
                  sampling={"seeded": False, "nodes_reported": 0, "nodes": 20})
    assert main([str(root), "--out", str(tmp_path / "out"), "--baseline", "fedavg"]) == 0
    headline = find_section((tmp_path / "out" / "report.md").read_text(), "paired")
    assert "No paired comparison: no strategy other than fedavg" in headline
    assert headline.count("- Pairing refused for ") == 2
    assert "| fedavg | 2 |" in find_section((tmp_path / "out" / "report.md").read_text(),
                                           "table")


def test_baseline_shared_by_ablation_rows_must_name_the_label(tmp_path, caplog):
    root = tmp_path / "runs"
    write_run(root / "avg", [0.5, 0.9])
    for steps in (10, 20):
        write_run(root / f"kd{steps}", [0.6, 0.9], strategy="fedrdskd",
                  strategy_options={"generator_steps": steps})
    with caplog.at_level(logging.ERROR, logger="flwr"):
        assert main([str(root), "--out", str(tmp_path / "out"), "--baseline",
                     "fedrdskd"]) == 2
    assert "'fedrdskd (generator_steps=10)', 'fedrdskd (generator_steps=20)'" in caplog.text
    label = "fedrdskd (generator_steps=10)"
    assert main([str(root), "--out", str(tmp_path / "out"), "--baseline", label]) == 0
    paired = json.loads((tmp_path / "out" / "report.json").read_text())["tables"][0]["paired"]
    assert paired["baseline"] == label
    assert [s["strategy"] for s in paired["strategies"]] == [
        "fedavg", "fedrdskd (generator_steps=20)"]


def test_cost_uses_the_clients_own_seconds(tmp_path):
    root = tmp_path / "runs"
    clients = [{"client_train_seconds_max": 10.0, "client_train_seconds_sum": 40.0}] * 2
    write_run(root / "avg", [0.5, 0.8], server_seconds=1.0, extra_rows=clients)
    write_run(root / "kd", [0.7, 0.9], strategy="fedrdskd", server_seconds=3.0,
              extra_rows=clients)
    write_run(root / "old", [0.7, 0.9], strategy="fedprox")  # no client seconds
    table = report_of(tmp_path, root)["tables"][0]
    cost = table["cost"]
    # Compute seconds per round 11 (FedAvg) and 13 (FedRDSKD): T* = 22 s, FedAvg's total.
    assert cost["compute_span_seconds"] == pytest.approx(22.0)
    avg, prox, kd = cost["rows"]
    assert avg["server_to_client_seconds"]["mean"] == pytest.approx(0.1)
    assert kd["server_to_client_seconds"]["mean"] == pytest.approx(0.3)
    assert kd["server_to_summed_client_seconds"]["mean"] == pytest.approx(3.0 / 40.0)
    # Accuracy held: initial 0.1 until the end of round 1, then round 1's.
    assert avg["mean_accuracy_over_compute_seconds"]["mean"] == pytest.approx(
        (0.1 * 11 + 0.5 * 11) / 22)
    assert kd["mean_accuracy_over_compute_seconds"]["mean"] == pytest.approx(
        (0.1 * 13 + 0.7 * 9) / 22)
    assert kd["total_compute_seconds"]["mean"] == pytest.approx(26.0)
    assert prox["server_to_client_seconds"]["mean"] is None
    section = find_section((tmp_path / "out" / "report.md").read_text(), "cost")
    assert "| fedprox | 1 | n/a | n/a | n/a | n/a | n/a |" in section
    assert "| fedrdskd | 1 | 10.00 | 0.30 | 0.07 | 26 |" in section
    assert "mean acc. over compute s 0-22 %" in section
    kd_paired = table["paired"]["strategies"][1]
    assert kd_paired["strategy"] == "fedrdskd"
    over_compute = measure(kd_paired, "mean_accuracy_over_compute_seconds")
    assert over_compute["mean"] == pytest.approx((7.6 - 6.6) / 22)


def test_distillation_gain_where_rows_record_the_aggregate(tmp_path):
    probabilities = "ensemble_accuracy_class_weighted_probabilities"
    root = tmp_path / "runs"
    write_run(root / "avg", [0.5, 0.7, 0.9])
    aggregate = [{"aggregate_accuracy": value} for value in (0.5, 0.78, 0.91)]
    write_run(root / "kd", [0.6, 0.8, 0.9], strategy="fedrdskd", extra_rows=aggregate,
              ensemble=[0.7, 0.80, 0.92], ensemble_key=probabilities)
    (gain,) = report_of(tmp_path, root)["tables"][0]["distillation_gain"]
    # gains +10, +2, -1 points; leads 20, 2, 1 points: one round with a lead >= 3 points
    # (half of it captured), two without (mean gain +0.5 points).
    assert gain["strategy"] == "fedrdskd"
    assert gain["gain"]["mean"] == pytest.approx(0.11 / 3)
    assert (gain["lead_rounds"], gain["lead_share_captured"]) == (1, pytest.approx(0.5))
    assert (gain["other_rounds"], gain["other_rounds_gain"]) == (2, pytest.approx(0.005))
    section = find_section((tmp_path / "out" / "report.md").read_text(),
                           "distillation-gain")
    assert "| fedrdskd | 1 | 3.67 | 1 | 0.50 | 2 | +0.50 |" in section
