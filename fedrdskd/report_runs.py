"""The data of a report: one run's ``results.json``, a strategy's row, a table.

Plain data classes shared by the report's modules (:mod:`fedrdskd.report` groups runs
into them; the table, pairing, cost and rendering modules read them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED_KEY = "seed"


@dataclass(frozen=True)
class Run:
    """One ``results.json``: flat config, per-round rows and summary."""

    results_path: Path
    config: dict[str, Any]
    rounds: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        """The folder holding ``results.json``."""
        return self.results_path.parent

    @property
    def seed(self) -> Any:
        """The run's seed (``None`` if the config has none)."""
        return self.config.get(SEED_KEY)


@dataclass
class StrategyRow:
    """The runs of one strategy configuration in one table (one per seed)."""

    label: str
    name: str
    options: dict[str, Any]
    runs: list[Run] = field(default_factory=list)


@dataclass
class Table:
    """One dataset x partition (x ``--split-by`` values) comparison."""

    identity: dict[str, Any]
    settings: dict[str, Any]
    rows: list[StrategyRow]
