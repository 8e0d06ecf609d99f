"""Run a recorded set (strategies x seeds) one run at a time, resumably.

    python experiments/run_set.py --set mnist/dirichlet-0.1-e1 --rounds 30 \
        --strategies fedavg,fedprox,fedftg_cpu,fedrdskd --seeds 0,1 \
        -- dataset=mnist model=lenet5 partition=dirichlet partition.alpha=0.1 ...

Each run goes to ``<root>/<set>/<label>-seed<seed>``, where the label is the strategy
preset's ``name`` (``fedftg_cpu`` -> ``fedftg``) or ``--label`` for an ablation variant
(one strategy only). For each run, in order:

- ``results.json`` with at least ``--rounds`` rounds: complete, skipped;
- ``checkpoint.pt`` there: resumed (``resume_from=<dir>``; also extends a finished run
  to more rounds);
- neither: started afresh (``hydra.run.dir=<dir>``);
- ``results.json`` with fewer rounds and no checkpoint: refused (it would be
  overwritten); delete the folder to start it again.

Stopping the script (or a crash) loses at most the current round of the current run;
run the same command again to go on. A run that fails stops the set (exit code 1).
Runs are one at a time (no Hydra multirun), so the runs of a set do not compete for
the CPU. ``--dry-run`` prints what would run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
PRESETS = REPOSITORY / "fedrdskd" / "conf" / "strategy"
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class PlannedRun:
    """One run of the set: where it goes, what to do, and the command."""

    run_dir: Path
    action: str
    command: list[str]


def preset_name(preset: str) -> str:
    """The ``name`` of strategy preset ``preset`` (``fedftg_cpu`` -> ``fedftg``)."""
    path = PRESETS / f"{preset}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise SystemExit(f"Unknown strategy preset '{preset}': choose from {known}.")
    return str(yaml.safe_load(path.read_text())["name"])


def run_action(run_dir: Path, rounds: int, seed: int, name: str) -> str:
    """``"skip"``, ``"resume"`` or ``"fresh"`` for one run dir (see the module docstring).

    Raises
    ------
    SystemExit
        The folder holds another experiment (seed or strategy), or an incomplete
        ``results.json`` without a checkpoint to continue from.
    """
    results = run_dir / "results.json"
    recorded = None
    if results.exists():
        payload = json.loads(results.read_text())
        config = payload["config"]
        if config.get("seed") != seed or config["strategy"].get("name") != name:
            raise SystemExit(
                f"{run_dir} holds another experiment (seed {config.get('seed')}, strategy "
                f"{config['strategy'].get('name')}), not seed {seed} of {name}: move it.")
        recorded = len(payload["rounds"])
        if recorded >= rounds:
            return "skip"
    if (run_dir / CHECKPOINT).exists():
        return "resume"
    if recorded is not None:
        raise SystemExit(
            f"{run_dir} has a results.json with {recorded} of {rounds} rounds and no "
            f"{CHECKPOINT} to continue from; delete the folder to run it again, or ask "
            f"for --rounds {recorded}.")
    return "fresh"


def plan(*, root: Path, set_name: str, rounds: int, strategies: list[str],
         seeds: list[int], overrides: list[str], label: str | None = None,
         fedrdskd: list[str] | None = None) -> list[PlannedRun]:
    """Every run of the set, strategies outer, seeds inner, with its action."""
    if label and len(strategies) != 1:
        raise SystemExit("--label names one variant: give exactly one strategy with it.")
    fedrdskd = fedrdskd or [sys.executable, "-m", "fedrdskd.cli"]
    planned = []
    for preset in strategies:
        name = preset_name(preset)
        for seed in seeds:
            run_dir = root / set_name / f"{label or name}-seed{seed}"
            action = run_action(run_dir, rounds, seed, name)
            command = [*fedrdskd, f"strategy={preset}", f"seed={seed}",
                       f"num_rounds={rounds}", *overrides, f"hydra.run.dir={run_dir}"]
            if action == "resume":
                command.append(f"resume_from={run_dir}")
            planned.append(PlannedRun(run_dir, action, command))
    return planned


def _list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def build_parser() -> argparse.ArgumentParser:
    """The command line (Hydra overrides after ``--``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, dest="set_name",
                        help="set folder below --root, e.g. mnist/dirichlet-0.1-e1")
    parser.add_argument("--rounds", required=True, type=int, help="num_rounds of every run")
    parser.add_argument("--strategies", required=True, type=_list,
                        help="comma-separated strategy presets, e.g. fedavg,fedftg_cpu")
    parser.add_argument("--seeds", required=True,
                        type=lambda text: [int(seed) for seed in _list(text)],
                        help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--label", default=None,
                        help="run-dir name instead of the preset's name (one strategy)")
    parser.add_argument("--root", type=Path, default=REPOSITORY / "results",
                        help="results root (default: results/ in the repository)")
    parser.add_argument("--fedrdskd", type=shlex.split, default=None,
                        help="command that runs one experiment (default: this Python "
                             "with -m fedrdskd.cli)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the set; returns the exit code."""
    args = build_parser().parse_args(argv)
    options = [override for override in args.overrides if override.startswith("-")]
    if options:
        raise SystemExit(f"{' '.join(options)}: options of run_set.py go before the Hydra "
                         "overrides (and before '--'); Hydra overrides look like key=value.")
    planned = plan(root=args.root, set_name=args.set_name, rounds=args.rounds,
                   strategies=args.strategies, seeds=args.seeds, overrides=args.overrides,
                   label=args.label, fedrdskd=args.fedrdskd)
    for index, run in enumerate(planned, start=1):
        print(f"[{index}/{len(planned)}] {run.action:6} {run.run_dir}", flush=True)
        if run.action == "skip" or args.dry_run:
            if args.dry_run and run.action != "skip":
                print("  " + shlex.join(run.command), flush=True)
            continue
        if subprocess.run(run.command, check=False).returncode != 0:
            print(f"Run {run.run_dir} failed; fix it and run the same command again "
                  "(finished runs are skipped, this one resumes from its last round).",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
