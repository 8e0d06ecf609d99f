"""Fill the report blocks of README.md and docs/results.md from the generated reports.

A block names a section of a ``report.md`` (see :mod:`fedrdskd.report_sections`)::

    <!-- report: results/mnist/dirichlet-0.1-e1/report/report.md#paired -->
    (replaced by that section)
    <!-- /report -->

so result tables are never typed by hand. ``tests/test_readme_results.py`` checks that
every block equals its section. Usage:
``python scripts/update_readme_results.py [--check] [FILE ...]`` (default: README.md and
docs/results.md; ``--check`` writes nothing and exits 1 if a block is out of date).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedrdskd.report_sections import filled

REPOSITORY = Path(__file__).resolve().parents[1]
DOCUMENTS = (REPOSITORY / "README.md", REPOSITORY / "docs" / "results.md")


def main() -> int:
    """Update (or ``--check``) the documents; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", nargs="*", type=Path, default=list(DOCUMENTS))
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a block differs from its report")
    args = parser.parse_args()
    stale = []
    for document in args.documents:
        text = document.read_text()
        updated = filled(text, REPOSITORY)
        if updated == text:
            continue
        stale.append(document)
        if not args.check:
            document.write_text(updated)
            print(f"updated {document}")
    if args.check and stale:
        print("out of date: " + ", ".join(map(str, stale))
              + " (run experiments/reports.sh or scripts/update_readme_results.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
