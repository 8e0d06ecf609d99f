"""Plots of ``fedrdskd-report``: accuracy per round and per second, paired differences.

Per table: accuracy vs round and vs wall-clock seconds, and the paired per-round
difference to the baseline.

Each strategy is one solid line (mean over seeds) with a band from the minimum to the
maximum over seeds; the class-weighted client ensemble, where recorded, is a dashed
line in the strategy's colour (a single grey one if it is the same for all strategies).
The x value of the time plot is the mean over seeds of ``elapsed_seconds`` at a round.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

X_AXES = {"rounds": ("round", "round"),
          "time": ("elapsed_seconds_mean", "wall-clock seconds (runs' own timings)")}


def _array(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def _shared_ensemble(rows: Sequence[dict[str, Any]]) -> np.ndarray | None:
    """The ensemble curve if all strategies recorded the very same one, else ``None``."""
    curves = [_array(row["curve"]["ensemble_accuracy_mean"]) for row in rows]
    if len(curves) < 2 or any(len(curve) != len(curves[0]) for curve in curves):
        return None
    if all(np.allclose(curve, curves[0], equal_nan=True) for curve in curves[1:]):
        return curves[0]
    return None


def _draw(axis: Any, rows: Sequence[dict[str, Any]], x_key: str) -> None:
    shared = _shared_ensemble(rows)
    for index, row in enumerate(rows):
        curve, colour = row["curve"], f"C{index % 10}"
        x = _array(curve[x_key])
        axis.plot(x, _array(curve["accuracy_mean"]), color=colour, marker="o",
                  markersize=2.5, label=f"{row['strategy']} (n={row['num_seeds']})")
        if row["num_seeds"] > 1:
            axis.fill_between(x, _array(curve["accuracy_min"]), _array(curve["accuracy_max"]),
                              color=colour, alpha=0.2, linewidth=0)
        ensemble = _array(curve["ensemble_accuracy_mean"])
        if shared is None and np.isfinite(ensemble).any():
            axis.plot(x, ensemble, "--", color=colour, linewidth=1.2,
                      label=f"{row['strategy']}: client ensemble")
    if shared is not None and np.isfinite(shared).any():
        axis.plot(_array(rows[0]["curve"][x_key]), shared, "--", color="grey",
                  linewidth=1.2, label="client ensemble")


def plot_table(table: dict[str, Any], stem: Path, heading: str,
               y_min: float | None = None) -> dict[str, Path]:
    """Write ``<stem>-rounds.png`` and ``<stem>-time.png`` for one summarised table.

    Parameters
    ----------
    table : dict[str, Any]
        A table from :func:`fedrdskd.report_table.summarise_table` (uses ``rows`` and
        each row's ``curve``, ``strategy`` and ``num_seeds``).
    stem : Path
        Output path without the suffix, e.g. ``report/mnist-dirichlet-alpha0.1``.
    heading : str
        Plot title.
    y_min : float | None (default: None)
        Lower end of the accuracy axis, to zoom in on the last points of a percent
        (``None``: matplotlib's choice, which includes the initial model's accuracy).

    Returns
    -------
    dict[str, Path]
        ``{"rounds": path, "time": path}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for name, (x_key, x_label) in X_AXES.items():
        figure, axis = plt.subplots(figsize=(6.4, 4.4))
        _draw(axis, table["rows"], x_key)
        axis.set_xlabel(x_label)
        axis.set_ylabel("test accuracy")
        if y_min is not None:
            axis.set_ylim(bottom=y_min, top=1.0)
        axis.set_title(f"{heading}\nmean over seeds, band: min–max over seeds; "
                       "dashed: class-weighted client ensemble", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        paths[name] = stem.with_name(f"{stem.name}-{name}.png")
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(paths[name], dpi=120)
        plt.close(figure)
    return paths


def plot_paired(paired: dict[str, Any], path: Path, heading: str) -> Path | None:
    """Paired per-round accuracy difference to the baseline, with its t interval band.

    One line per strategy (mean over the paired seeds of ``strategy - baseline`` at each
    round, in accuracy points), a band for the 95 % Student t interval where at least
    two seeds are paired, and a zero line.

    Parameters
    ----------
    paired : dict[str, Any]
        The ``paired`` part of a summarised table
        (:func:`fedrdskd.report_paired.summarise_paired`).
    path : Path
        The PNG to write.
    heading : str
        Plot title.

    Returns
    -------
    Path | None
        ``path``, or ``None`` (nothing written) when no strategy has a pair.
    """
    curves = [strategy for strategy in paired["strategies"]
              if strategy["per_round"]["round"]]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    axis.axhline(0.0, color="black", linewidth=0.8)
    for index, strategy in enumerate(curves):
        per_round, colour = strategy["per_round"], f"C{(index + 1) % 10}"
        rounds = _array(per_round["round"])
        axis.plot(rounds, 100 * _array(per_round["mean"]), color=colour, marker="o",
                  markersize=2.5,
                  label=f"{strategy['strategy']} (n={max(per_round['n'])})")
        low, high = 100 * _array(per_round["low"]), 100 * _array(per_round["high"])
        if np.isfinite(low).any():
            axis.fill_between(rounds, low, high, color=colour, alpha=0.2, linewidth=0)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("round")
    axis.set_ylabel(f"test accuracy − {paired['baseline']} (points)")
    axis.set_title(f"{heading}\npaired by seed, difference to {paired['baseline']}; band: "
                   "95 % Student t interval over seeds", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
