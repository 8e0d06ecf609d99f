"""The command line of ``fedrdskd-report`` (grouping rules: :mod:`fedrdskd.report`).

    fedrdskd-report results/mnist/dirichlet-0.1-e1 --out report --mean-to-round 10

Every refusal (runs that differ in more than the seed and the strategy, an ambiguous
``--baseline``, a missing path, a bad option value) is logged with what to do and exits
with code 2. Runs that cannot be paired (client sampling not seeded) do not stop the
report: its paired section says which and why.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from logging import ERROR, INFO
from pathlib import Path

from flwr.common import log

from fedrdskd.report import DEFAULT_IGNORED_KEYS, find_results, group_runs, load_run
from fedrdskd.report_paired import DEFAULT_BASELINE
from fedrdskd.report_table import write_report


def _parse_target(text: str) -> float | str:
    if text.lower() == "fedavg":
        return "fedavg"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"target accuracy '{text}' is neither a number nor 'fedavg'") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"target accuracy {value} is outside (0, 1]: give a fraction, e.g. 0.95")
    return value


def _parse_round(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"round '{text}' is not a positive integer")
    return int(text)


def _parse_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of rounds (0 = off)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``fedrdskd-report``."""
    parser = argparse.ArgumentParser(
        prog="fedrdskd-report",
        description="Compare fedrdskd runs: Markdown/JSON tables and accuracy plots.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders, Hydra multirun folders or results.json files")
    parser.add_argument("--out", default=".", type=Path,
                        help="folder for report.md, report.json and the plots "
                             "(default: the current directory)")
    parser.add_argument("--target-accuracy", action="append", type=_parse_target,
                        dest="targets", metavar="T",
                        help="accuracy in (0, 1] to count rounds to, or 'fedavg' for the "
                             "table's FedAvg final mean accuracy; repeatable "
                             "(default: fedavg)")
    parser.add_argument("--at-round", action="append", type=_parse_round, dest="at_rounds",
                        metavar="R", help="report accuracy after round R; repeatable "
                                          "(default: 5 and 10)")
    parser.add_argument("--ignore-key", action="append", default=[], dest="ignore_keys",
                        metavar="KEY", help="config key (or pattern) allowed to differ, "
                                            "in addition to: "
                                            + ", ".join(DEFAULT_IGNORED_KEYS))
    parser.add_argument("--y-min", type=float, default=None, metavar="Y",
                        help="lower end of the plots' accuracy axis, e.g. 0.9 to zoom in "
                             "(default: automatic)")
    parser.add_argument("--mean-to-round", type=_parse_round, default=None, metavar="N",
                        help="also report the mean accuracy over rounds 1..N per seed "
                             "(how fast accuracy comes, all along)")
    parser.add_argument("--mean-last-rounds", type=_parse_count, default=5, metavar="N",
                        help="also compare, paired, the mean accuracy over the last N rounds "
                             "(where the runs end up; less noisy than the final round); "
                             "0 = off (default: 5)")
    parser.add_argument("--split-by", action="append", default=[], metavar="KEY",
                        help="config key whose values make separate tables")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, metavar="NAME",
                        help="row every other strategy is paired with by seed: a strategy "
                             "name, or a row's exact label when several rows share the "
                             f"name (default: {DEFAULT_BASELINE})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fedrdskd-report``: parse ``argv``, write the report; the exit code.

    Returns 2 on a refusal (logged with what to do).
    """
    args = build_parser().parse_args(argv)
    try:
        runs = [run for run in map(load_run, find_results(args.run_dirs)) if run]
        ignore_keys = (*DEFAULT_IGNORED_KEYS, *args.ignore_keys)
        tables = group_runs(runs, ignore_keys=ignore_keys, split_by=args.split_by)
        written = write_report(tables, args.out, targets=args.targets or ["fedavg"],
                               at_rounds=args.at_rounds or [5, 10], y_min=args.y_min,
                               mean_to_round=args.mean_to_round, baseline=args.baseline,
                               ignore_keys=ignore_keys,
                               mean_last_rounds=args.mean_last_rounds)
    except (FileNotFoundError, ValueError) as error:
        log(ERROR, "fedrdskd-report: %s", error)
        return 2
    for path in written:
        log(INFO, "wrote %s", path)
    return 0
