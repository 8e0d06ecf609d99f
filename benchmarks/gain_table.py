"""Summarise replay records of ``distillation_gain.py --out``: one block per variant.

For each variant (pooled over the seeds and rounds in the files) and each way of
choosing the model it prints, in points of test accuracy:

- ``gain``: mean over rounds of (model - aggregate);
- ``captured``: in rounds where the class-weighted client ensemble leads the
  aggregate by >= 3 points, the mean share of that lead the model gains;
- ``without lead``: mean gain in the other rounds;
- ``worst``: the lowest gain of any round.

Ways of choosing: the distilled model (``beta=1``), each measured interpolation
(``beta=0.5`` ...), and, with ``--client-validation`` records, the beta of lowest pooled
loss on the validating clients (``validated``; 0 = the aggregate is a candidate).

    python benchmarks/gain_table.py benchmarks/output/replay/mnist-0.1-e1-seed*.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

LEAD = 0.03


def accuracy_at(record: dict, beta: str) -> float:
    """Test accuracy of the model at ``beta`` ("0", "1" or a measured interpolation)."""
    if beta == "0":
        return record["aggregate"]
    if beta == "1":
        return record["distilled"]
    return record[f"beta-{beta}"]


def validated(record: dict) -> float:
    """Test accuracy of the beta the validating clients would pick."""
    losses = record["client_loss"]
    return accuracy_at(record, min(losses, key=losses.__getitem__))


def summary(records: list[dict], accuracy: Callable[[dict], float]) -> dict[str, float]:
    """Gain, captured share of the ensemble's lead, gain without a lead, worst round."""
    gains = [accuracy(r) - r["aggregate"] for r in records]
    leads = [r["ensemble"] - r["aggregate"] for r in records]
    led = [(gain, lead) for gain, lead in zip(gains, leads) if lead >= LEAD]
    other = [gain for gain, lead in zip(gains, leads) if lead < LEAD]
    return {"gain": 100 * sum(gains) / len(gains),
            "captured": 100 * sum(g / l for g, l in led) / len(led) if led else float("nan"),
            "led_rounds": len(led),
            "without_lead": 100 * sum(other) / len(other) if other else float("nan"),
            "worst": 100 * min(gains)}


def choices(record: dict) -> dict[str, Callable[[dict], float]]:
    """The ways of choosing a model that ``record`` measured."""
    found: dict[str, Callable[[dict], float]] = {"beta=1": lambda r: r["distilled"]}
    for key in sorted(k for k in record if k.startswith("beta-")):
        beta = key.removeprefix("beta-")
        found[f"beta={beta}"] = lambda r, beta=beta: accuracy_at(r, beta)
    if "client_loss" in record:
        found["validated"] = validated
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for path in args.files:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            by_variant[record["variant"]].append(record)
    print("| variant | choice | seeds | rounds | gain | captured (led rounds) "
          "| without lead | worst | server s/round |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant, records in by_variant.items():
        seeds = ",".join(str(s) for s in sorted({r["seed"] for r in records}))
        seconds = sum(r["server_seconds"] for r in records) / len(records)
        for choice, accuracy in choices(records[0]).items():
            s = summary(records, accuracy)
            print(f"| {variant} | {choice} | {seeds} | {len(records)} | {s['gain']:+.2f} "
                  f"| {s['captured']:.0f} % ({s['led_rounds']}) | {s['without_lead']:+.2f} "
                  f"| {s['worst']:+.1f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
