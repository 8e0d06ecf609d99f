"""Where distillation keeps the client ensemble's lead: round 1 against the later rounds.

For each set of recorded runs (run folders holding a ``results.json`` with the harness's
``aggregate_accuracy`` and class-weighted probability ensemble), over the rounds where
the ensemble leads the round's own aggregate by >= 3 points, prints the mean share of
the lead kept (``gain / lead``, as the report's "Distillation gain"), the number of such
rounds and their mean lead, for round 1, for rounds 2 and later, and for all rounds.

    python benchmarks/lead_by_round.py results/mnist/dirichlet-0.5-e1/fedrdskd-seed* \\
        --label "MNIST alpha 0.5"

Give ``--label`` once per set and separate the sets with ``--``, e.g.
``lead_by_round.py A/fedrdskd-seed* --label A -- B/fedrdskd-seed* --label B``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from tuning_table import LEAD, lead_and_gain


def split_shares(runs: list[list[dict]]) -> dict[str, tuple[list[float], list[float]]]:
    """``{"round 1" | "rounds 2+" | "all": (shares, leads)}`` over the led rounds."""
    parts: dict[str, tuple[list[float], list[float]]] = {
        "round 1": ([], []), "rounds 2+": ([], []), "all": ([], [])}
    for rounds in runs:
        for row in rounds:
            lead, gain = lead_and_gain(row)
            if lead < LEAD:
                continue
            for name in ("round 1" if row["round"] == 1 else "rounds 2+", "all"):
                parts[name][0].append(gain / lead)
                parts[name][1].append(lead)
    return parts


def cell(shares: list[float], leads: list[float]) -> str:
    """``share % (rounds, mean lead in points)``, or n/a without led rounds."""
    if not shares:
        return "n/a (0)"
    return (f"{100 * statistics.mean(shares):.0f} % ({len(shares)}, "
            f"{100 * statistics.mean(leads):.1f})")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of one set")
    parser.add_argument("--label", required=True, help="the set's name in the table")
    sets, current = [], []
    for argument in argv + ["--"]:
        if argument == "--":
            if current:
                sets.append(parser.parse_args(current))
            current = []
        else:
            current.append(argument)
    print(f"Share of the ensemble's lead kept, rounds where it leads by >= {100 * LEAD:.0f} "
          "points: share (rounds, mean lead in points)\n")
    print("| set | runs | round 1 | rounds 2+ | all |")
    print("|---|---|---|---|---|")
    for chosen in sets:
        runs = [json.loads((path / "results.json").read_text())["rounds"]
                for path in chosen.runs]
        parts = split_shares(runs)
        print(f"| {chosen.label} | {len(runs)} | "
              + " | ".join(cell(*parts[name]) for name in ("round 1", "rounds 2+", "all"))
              + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
