"""Relabel ``fedrdskd`` runs recorded before the preset changed as ``fedrdskd_paper``.

Until the ``fedrdskd`` preset took the package's own mechanisms (student-aware SGD
fine-tune, label prior, batch reuse), it ran RDSKD as published — what the
``fedrdskd_paper`` preset runs now. Such a run is recognised by its config: strategy
``fedrdskd`` without any of the options added since (``class_prior``,
``student_batch_reuse``, ...). For each one this script

- writes the added options into ``config.strategy`` with the values those runs had
  (RDSKD's behaviour, :data:`fedrdskd.report.PAPER_BEHAVIOUR`), renames the strategy
  ``fedrdskd_paper`` and notes the change in ``summary.relabelled``;
- renames the run folder ``fedrdskd[-x]-seedN`` to ``fedrdskd_paper[-x]-seedN``.

Accuracies, timings and every other value stay as recorded. Usage:
``python scripts/relabel_paper_runs.py [RESULTS_ROOT ...] [--dry-run]`` (default ``results``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedrdskd.report import PAPER_BEHAVIOUR

OLD_NAME, NEW_NAME = "fedrdskd", "fedrdskd_paper"


def relabelled(payload: dict) -> dict | None:
    """The payload as a ``fedrdskd_paper`` run, or ``None`` if it is not an old run."""
    strategy = payload["config"]["strategy"]
    added = {key.removeprefix("strategy."): value for key, value in PAPER_BEHAVIOUR.items()}
    if strategy.get("name") != OLD_NAME or any(key in strategy for key in added):
        return None
    new_strategy = {**strategy, "name": NEW_NAME, **added}
    summary = {**payload.get("summary", {}),
               "relabelled": {"from": OLD_NAME, "to": NEW_NAME,
                              "added_options": sorted(added)}}
    return {**payload, "config": {**payload["config"], "strategy": new_strategy},
            "summary": summary}


def new_folder(run_dir: Path) -> Path:
    """``.../fedrdskd-logits-seed0`` -> ``.../fedrdskd_paper-logits-seed0``."""
    name = run_dir.name
    if not name.startswith(OLD_NAME):
        return run_dir
    return run_dir.with_name(NEW_NAME + name.removeprefix(OLD_NAME))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("results")])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    for root in args.roots:
        for results_path in sorted(root.rglob("results.json")):
            payload = relabelled(json.loads(results_path.read_text()))
            if payload is None:
                continue
            target = new_folder(results_path.parent)
            print(f"{results_path.parent} -> {target}")
            if args.dry_run:
                continue
            results_path.write_text(json.dumps(payload, indent=2) + "\n")
            if target != results_path.parent:
                if target.exists():
                    raise SystemExit(f"{target} exists: move it first.")
                results_path.parent.rename(target)


if __name__ == "__main__":
    main()
