"""Paired comparisons over seeds: differences, intervals, wins/ties/losses, verdicts.

Two runs with the same seed share partitions, client sampling and the initial model,
so the difference ``d_s = strategy_s - baseline_s`` of a measure removes what the seed
decides and leaves what the strategy changes. Over ``n`` paired seeds:

- mean difference ``d̄`` and its **95 % Student t interval**
  ``d̄ ± t_{0.975, n-1} · s / √n`` (``s`` the sample standard deviation of the
  ``d_s``, ``ddof=1``); no interval for one seed;
- with ``n >= 5`` also a **paired bootstrap** interval: the 2.5 and 97.5 percentiles of
  the mean of ``n`` differences drawn with replacement, :data:`BOOTSTRAP_RESAMPLES`
  times, from a generator seeded with :data:`BOOTSTRAP_SEED` (the same report every
  time);
- **wins / ties / losses**: a seed is a tie when ``|d_s| <= tolerance``
  (:data:`ACCURACY_TIE_TOLERANCE` = 0.05 accuracy points, :data:`ROUNDS_TIE_TOLERANCE`
  = 0 rounds), else a win or a loss by the measure's direction;
- a **verdict** from the t interval: ``better`` or ``worse`` only when it excludes 0
  and the mean difference is larger than a tie, else ``no detectable difference
  (n seeds)``. (With two seeds whose differences are equal, e.g. one round each, the
  t interval has zero width: such a verdict rests on two seeds agreeing exactly.)

Plain NumPy/SciPy: no Flower, no plotting, no report layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
BOOTSTRAP_MIN_SEEDS = 5
ACCURACY_TIE_TOLERANCE = 0.0005
"""Accuracy differences up to 0.05 points (5 of 10 000 test images) count as a tie."""
ROUNDS_TIE_TOLERANCE = 0.0
"""Rounds-to-target differences count as a tie only when equal."""
BETTER = "better"
WORSE = "worse"
NOT_PAIRED = "not paired"
"""The verdict when no seed could be paired."""
T_METHOD = "student-t"
BOOTSTRAP_METHOD = "paired-bootstrap-percentile"


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` for the mean difference.

    Attributes
    ----------
    low, high : float
        The interval's ends.
    method : str
        :data:`T_METHOD` or :data:`BOOTSTRAP_METHOD`.
    """

    low: float
    high: float
    method: str

    def excludes_zero(self) -> bool:
        """Whether 0 lies outside ``[low, high]``."""
        return self.low > 0.0 or self.high < 0.0

    def as_dict(self) -> dict[str, Any]:
        """``{"low", "high", "method"}`` for JSON."""
        return {"low": self.low, "high": self.high, "method": self.method}


def no_difference(num_seeds: int) -> str:
    """The verdict text when the interval holds 0: ``no detectable difference (n seeds)``."""
    return f"no detectable difference ({num_seeds} seed{'' if num_seeds == 1 else 's'})"


def t_interval(differences: Sequence[float],
               confidence: float = CONFIDENCE) -> Interval | None:
    """Student t interval ``d̄ ± t_{(1+c)/2, n-1} · s / √n``; ``None`` for fewer than 2."""
    values = np.asarray(differences, dtype=float)
    if values.size < 2:
        return None
    half_width = (stats.t.ppf((1.0 + confidence) / 2.0, df=values.size - 1)
                  * values.std(ddof=1) / np.sqrt(values.size))
    mean = float(values.mean())
    return Interval(mean - float(half_width), mean + float(half_width), T_METHOD)


def bootstrap_interval(differences: Sequence[float], *, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """Percentile interval of the mean of ``differences`` resampled with replacement.

    The seeds are resampled as pairs (their differences), ``resamples`` times, by a
    generator seeded with ``seed``; ``None`` for fewer than 2 differences.
    """
    values = np.asarray(differences, dtype=float)
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(low), float(high), BOOTSTRAP_METHOD)


def wins_ties_losses(differences: Sequence[float], tolerance: float,
                     higher_is_better: bool = True) -> tuple[int, int, int]:
    """Seeds where the strategy won, tied (``|d| <= tolerance``) and lost."""
    sign = 1.0 if higher_is_better else -1.0
    wins = ties = losses = 0
    for difference in differences:
        if abs(difference) <= tolerance + 1e-12:
            ties += 1
        elif sign * difference > 0:
            wins += 1
        else:
            losses += 1
    return wins, ties, losses


def verdict(interval: Interval | None, num_seeds: int, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when ``interval`` excludes 0, else ``no detectable difference``.

    ``not paired`` for 0 seeds.
    """
    if num_seeds == 0:
        return NOT_PAIRED
    if interval is None or not interval.excludes_zero():
        return no_difference(num_seeds)
    above = interval.low > 0.0
    return BETTER if above == higher_is_better else WORSE


def compare_paired(differences: Sequence[float], *, tolerance: float,
                   higher_is_better: bool = True) -> dict[str, Any]:
    """Everything the report states about one measure of one strategy.

    Parameters
    ----------
    differences : Sequence[float]
        ``strategy - baseline`` per paired seed.
    tolerance : float
        Largest ``|difference|`` that is a tie.
    higher_is_better : bool (default: True)
        ``False`` for measures such as rounds to a target.

    Returns
    -------
    dict[str, Any]
        ``n``, ``differences``, ``mean``, ``interval`` (t, or ``None`` for one seed),
        ``bootstrap`` (``None`` below :data:`BOOTSTRAP_MIN_SEEDS` seeds), ``wins``,
        ``ties``, ``losses`` and ``verdict`` (from the t interval).
    """
    values = [float(value) for value in differences]
    interval = t_interval(values)
    bootstrap = bootstrap_interval(values) if len(values) >= BOOTSTRAP_MIN_SEEDS else None
    wins, ties, losses = wins_ties_losses(values, tolerance, higher_is_better)
    mean = float(np.mean(values)) if values else None
    outcome = verdict(interval, len(values), higher_is_better)
    if outcome in (BETTER, WORSE) and mean is not None and abs(mean) <= tolerance + 1e-12:
        outcome = no_difference(len(values))  # a tie, however narrow the interval
    return {"n": len(values), "differences": values, "mean": mean,
            "interval": interval.as_dict() if interval else None,
            "bootstrap": bootstrap.as_dict() if bootstrap else None,
            "wins": wins, "ties": ties, "losses": losses, "verdict": outcome}


def detectable_rounds(per_round: Mapping[int, Sequence[float]],
                      higher_is_better: bool = True) -> dict[str, list[int]]:
    """Rounds whose paired t interval lies entirely above / below 0.

    Parameters
    ----------
    per_round : dict[int, Sequence[float]]
        Round -> the paired differences at that round.

    Returns
    -------
    dict[str, list[int]]
        ``{"better": [...], "worse": [...]}`` (rounds with one seed are in neither).

    Notes
    -----
    Each round is tested on its own at 95 %, without a correction for the number of
    rounds: over 20 rounds with no true difference, about one is listed by chance.
    """
    found: dict[str, list[int]] = {BETTER: [], WORSE: []}
    for server_round in sorted(per_round):
        interval = t_interval(per_round[server_round])
        outcome = verdict(interval, len(per_round[server_round]), higher_is_better)
        if outcome in found:
            found[outcome].append(server_round)
    return found
