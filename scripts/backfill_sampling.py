"""Add ``summary.sampling`` to ``results.json`` files recorded before it existed.

Runs now record whether client sampling followed the seed (every node reported its
partition id, see :mod:`fedrdskd.sampling`). For older runs the ServerApp's log line
"N nodes reported their partition id." in the run's ``cli.log`` says the same: the
run was seeded if every such line reports ``num_clients`` nodes. A run whose log has
no such line predates the query (its sampling did not follow the seed) and gets
``seeded: false``. The record says where it came from: ``"source": "cli.log"``.

Usage: ``python scripts/backfill_sampling.py [RESULTS_ROOT ...] [--force] [--dry-run]``
(default ``results``). Files that already have ``summary.sampling`` are left alone
unless ``--force``; ``--dry-run`` only prints what would be written.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from fedrdskd.sampling import SAMPLING_SUMMARY_KEY

LOG_NAME = "cli.log"
REPORTED = re.compile(r"(\d+) nodes reported their partition id\.")


def sampling_from_log(log_text: str, num_clients: int) -> dict[str, Any]:
    """The sampling record a run's ``cli.log`` implies (``num_clients`` from its config).

    A resumed run logs one line per start; it was seeded only if every start was.
    """
    counts = [int(match) for match in REPORTED.findall(log_text)]
    reported = min(counts) if counts else 0
    return {"seeded": bool(counts) and reported >= num_clients,
            "nodes_reported": reported, "nodes": num_clients, "source": LOG_NAME}


def backfill(results_path: Path, *, force: bool = False) -> dict[str, Any] | None:
    """The record to add to one ``results.json``, or ``None`` if it has one already."""
    payload = json.loads(results_path.read_text())
    summary = payload.setdefault("summary", {})
    if SAMPLING_SUMMARY_KEY in summary and not force:
        return None
    log_file = results_path.parent / LOG_NAME
    log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
    return sampling_from_log(log_text, int(payload["config"]["num_clients"]))


def write_record(results_path: Path, record: dict[str, Any]) -> None:
    """Put ``record`` into the file's summary, keeping the writer's JSON layout."""
    payload = json.loads(results_path.read_text())
    payload.setdefault("summary", {})[SAMPLING_SUMMARY_KEY] = record
    results_path.write_text(json.dumps(payload, indent=2))


def main() -> None:
    """Backfill every ``results.json`` below the given roots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", default=[Path("results")], type=Path)
    parser.add_argument("--force", action="store_true",
                        help="rewrite records that exist already")
    parser.add_argument("--dry-run", action="store_true", help="write nothing")
    args = parser.parse_args()
    for root in args.roots:
        for results_path in sorted(root.rglob("results.json")):
            record = backfill(results_path, force=args.force)
            if record is None:
                print(f"{results_path}: has {SAMPLING_SUMMARY_KEY} already, kept")
                continue
            if not args.dry_run:
                write_record(results_path, record)
            print(f"{results_path}: {record}")


if __name__ == "__main__":
    main()
