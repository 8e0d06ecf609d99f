"""Paired statistics (fedrdskd.paired) against intervals computed by hand."""

from __future__ import annotations

import math

import pytest

from fedrdskd.paired import (ACCURACY_TIE_TOLERANCE, BOOTSTRAP_METHOD, T_METHOD,
                             bootstrap_interval, compare_paired, detectable_rounds,
                             t_interval, verdict, wins_ties_losses)

# Student t quantiles t_{0.975, n-1} from a table: n = 2, 3, 5 seeds.
T_975 = {1: 12.7062047, 2: 4.3026527, 4: 2.7764451}


def test_t_interval_for_three_seeds_by_hand():
    # d = 2, 4, 6 points: mean 0.04, s = 0.02, s / sqrt(3) = 0.0115470;
    # half width 4.3026527 * 0.0115470 = 0.0496828 -> [-0.0096828, 0.0896828].
    interval = t_interval([0.02, 0.04, 0.06])
    assert interval.method == T_METHOD
    assert interval.low == pytest.approx(0.04 - T_975[2] * 0.02 / math.sqrt(3), abs=1e-7)
    assert (interval.low, interval.high) == pytest.approx((-0.0096828, 0.0896828), abs=1e-7)
    assert not interval.excludes_zero()


def test_t_interval_for_five_seeds_by_hand():
    # d = -1 ... -5 points: mean -0.03, s = 0.0158114, s / sqrt(5) = 0.0070711;
    # half width 2.7764451 * 0.0070711 = 0.0196324 -> [-0.0496324, -0.0103676].
    interval = t_interval([-0.01, -0.02, -0.03, -0.04, -0.05])
    assert (interval.low, interval.high) == pytest.approx((-0.0496324, -0.0103676),
                                                          abs=1e-7)
    assert interval.excludes_zero()


def test_one_seed_has_no_interval_and_no_verdict():
    assert t_interval([0.3]) is None
    result = compare_paired([0.3], tolerance=ACCURACY_TIE_TOLERANCE)
    assert result["interval"] is None and result["bootstrap"] is None
    assert result["verdict"] == "no detectable difference (1 seed)"
    assert (result["wins"], result["ties"], result["losses"]) == (1, 0, 0)


def test_verdicts_follow_the_interval_and_the_direction():
    # 3 seeds: d = 3, 4, 5 points, s = 0.01, half width 4.3026527 * 0.0057735 = 0.0248413
    better = compare_paired([0.03, 0.04, 0.05], tolerance=ACCURACY_TIE_TOLERANCE)
    assert better["mean"] == pytest.approx(0.04)
    assert (better["interval"]["low"], better["interval"]["high"]) == pytest.approx(
        (0.0151587, 0.0648413), abs=1e-7)
    assert better["verdict"] == "better"
    crossing = compare_paired([0.02, 0.04, 0.06], tolerance=ACCURACY_TIE_TOLERANCE)
    assert crossing["verdict"] == "no detectable difference (3 seeds)"
    worse = compare_paired([-0.01, -0.02, -0.03, -0.04, -0.05],
                           tolerance=ACCURACY_TIE_TOLERANCE)
    assert worse["verdict"] == "worse" and worse["losses"] == 5
    # Rounds to a target: fewer is better, so an interval below 0 is "better".
    fewer_rounds = compare_paired([-2.0, -3.0, -2.0], tolerance=0.0, higher_is_better=False)
    assert fewer_rounds["verdict"] == "better" and fewer_rounds["wins"] == 3
    assert verdict(None, 2) == "no detectable difference (2 seeds)"
    # Both seeds 0.02 points worse: a zero-width interval below 0, but each seed a tie.
    tie = compare_paired([-0.0002, -0.0002], tolerance=ACCURACY_TIE_TOLERANCE)
    assert tie["interval"]["high"] < 0 and tie["ties"] == 2
    assert tie["verdict"] == "no detectable difference (2 seeds)"


def test_wins_ties_losses_with_the_tolerance():
    differences = [0.01, 0.0004, -0.0005, -0.02, 0.0]
    assert wins_ties_losses(differences, ACCURACY_TIE_TOLERANCE) == (1, 3, 1)
    assert wins_ties_losses([-2.0, 0.0, 1.0], 0.0, higher_is_better=False) == (1, 1, 1)


def test_bootstrap_is_reproducible_and_added_from_five_seeds():
    differences = [0.01, 0.02, 0.03, 0.04, 0.05]
    first = bootstrap_interval(differences)
    assert first == bootstrap_interval(differences)  # fixed seed: the same report
    assert first.method == BOOTSTRAP_METHOD
    # the mean of 5 draws from {1..5} points lies in [1, 5]; the percentile interval is
    # narrower than the t interval [1.04, 4.96] here and holds the mean 3
    assert 0.01 < first.low < 0.03 < first.high < 0.05
    assert compare_paired(differences[:4], tolerance=0.0)["bootstrap"] is None
    result = compare_paired(differences, tolerance=0.0)
    assert result["bootstrap"]["method"] == BOOTSTRAP_METHOD
    assert result["interval"]["method"] == T_METHOD  # the verdict uses the t interval


def test_detectable_rounds_lists_rounds_whose_interval_excludes_zero():
    per_round = {1: [0.10, 0.12, 0.11], 2: [0.05, -0.05, 0.0], 4: [-0.05, -0.06, -0.04],
                 5: [-0.02, -0.03, -0.025], 6: [-0.5]}
    assert detectable_rounds(per_round) == {"better": [1], "worse": [4, 5]}
