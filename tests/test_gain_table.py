"""benchmarks/gain_table.py: replay summaries computed by hand on three records."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gain_table.py"
spec = importlib.util.spec_from_file_location("gain_table", SCRIPT)
gain_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gain_table)

RECORDS = [
    # ensemble leads by 10 points; distillation gains 5, beta 0.5 gains 2
    {"aggregate": 0.50, "ensemble": 0.60, "distilled": 0.55, "beta-0.5": 0.52,
     "client_loss": {"0": 1.0, "0.5": 0.9, "1": 0.8}},
    # no lead; distillation loses 2, beta 0.5 gains 1; the clients pick the aggregate
    {"aggregate": 0.80, "ensemble": 0.81, "distilled": 0.78, "beta-0.5": 0.81,
     "client_loss": {"0": 0.5, "0.5": 0.6, "1": 0.7}},
    # lead of 4 points; distillation gains 1; the clients pick 0.5 (gain 3)
    {"aggregate": 0.70, "ensemble": 0.74, "distilled": 0.71, "beta-0.5": 0.73,
     "client_loss": {"0": 0.5, "0.5": 0.4, "1": 0.45}},
]


def test_distilled_model_summary():
    s = gain_table.summary(RECORDS, lambda r: r["distilled"])
    assert s["gain"] == pytest.approx((5 - 2 + 1) / 3)
    assert s["captured"] == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert s["led_rounds"] == 2
    assert s["without_lead"] == pytest.approx(-2)
    assert s["worst"] == pytest.approx(-2)


def test_validated_choice_takes_the_beta_of_lowest_client_loss():
    assert [gain_table.validated(r) for r in RECORDS] == [0.55, 0.80, 0.73]
    s = gain_table.summary(RECORDS, gain_table.validated)
    assert s["gain"] == pytest.approx((5 + 0 + 3) / 3)
    assert s["without_lead"] == pytest.approx(0)


def test_choices_list_each_measured_beta():
    assert list(gain_table.choices(RECORDS[0])) == ["beta=1", "beta=0.5", "validated"]
    assert list(gain_table.choices({"distilled": 0.5})) == ["beta=1"]
