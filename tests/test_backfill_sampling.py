"""scripts/backfill_sampling.py: summary.sampling of old runs from their cli.log."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "backfill_sampling.py"
spec = importlib.util.spec_from_file_location("backfill_sampling", SCRIPT)
backfill_sampling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(backfill_sampling)

LINE = "[2026-11-23 07:56:11,076][flwr][INFO] - {n} nodes reported their partition id.\n"


def old_run(run_dir: Path, log_text: str | None, num_clients: int = 20) -> Path:
    run_dir.mkdir(parents=True)
    path = run_dir / "results.json"
    path.write_text(json.dumps({"config": {"num_clients": num_clients}, "rounds": [],
                                "summary": {"total_seconds": 1.0}}, indent=2))
    if log_text is not None:
        (run_dir / "cli.log").write_text(log_text)
    return path


def test_records_follow_the_log_line(tmp_path):
    seeded = old_run(tmp_path / "a", "x\n" + LINE.format(n=20))
    partial = old_run(tmp_path / "b", LINE.format(n=20) + LINE.format(n=19))  # resumed
    before = old_run(tmp_path / "c", "no query back then\n")
    no_log = old_run(tmp_path / "d", None)
    assert backfill_sampling.backfill(seeded) == {
        "seeded": True, "nodes_reported": 20, "nodes": 20, "source": "cli.log"}
    assert backfill_sampling.backfill(partial)["seeded"] is False
    assert backfill_sampling.backfill(before) == {
        "seeded": False, "nodes_reported": 0, "nodes": 20, "source": "cli.log"}
    assert backfill_sampling.backfill(no_log)["seeded"] is False


def test_writing_keeps_the_file_and_is_not_repeated(tmp_path):
    path = old_run(tmp_path / "a", LINE.format(n=20))
    backfill_sampling.write_record(path, backfill_sampling.backfill(path))
    payload = json.loads(path.read_text())
    assert payload["summary"] == {"total_seconds": 1.0, "sampling": {
        "seeded": True, "nodes_reported": 20, "nodes": 20, "source": "cli.log"}}
    assert backfill_sampling.backfill(path) is None
    assert backfill_sampling.backfill(path, force=True)["seeded"] is True
