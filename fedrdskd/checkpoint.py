"""Checkpoints after every round, and resuming an interrupted run from one.

After each round the ServerApp writes ``checkpoint.pt`` in the run's output directory
(atomically: a temporary file in the same directory, then ``os.replace``, so a crash
while writing leaves the previous checkpoint intact). Setting ``resume_from`` (Hydra
``resume_from=...``, run config ``resume-from``) to that file or to the run directory
continues with the next round and writes the full results (old rows + new).

How rounds are driven
---------------------
Uninterrupted and resumed runs both go through :func:`fedrdskd.rounds.run_rounds`
(Flower's ``Strategy.start`` loop from any first round, see there why), whose
after-round hook (:meth:`fedrdskd.bookkeeping.ServerRun.after_round`) writes the
checkpoint.

What a checkpoint holds
-----------------------
- the global model arrays after the round, and the round number;
- the strategy's own state: the distillation state of the fedrdskd/fedftg mixins
  (generator, its optimiser, the synthesizer's RNG, see
  :meth:`~fedrdskd.strategies.distillation.DistillationMixin.distillation_state`) and
  the server optimiser moments ``m_t``/``v_t`` of FedAdam/FedYogi/FedAdagrad bases
  (their ``current_arrays`` need not be saved: ``configure_train`` resets it from the
  global model every round). Other Flower bases keep no state across rounds. A
  strategy given by ``_target_`` with other state is not covered;
- the per-round metrics (clients' aggregated train/evaluate metrics, centralised
  test metrics and round times), from which the results rows are rebuilt;
- the Python, NumPy and torch (CPU) RNG states. (Client sampling does not depend on
  them: the strategy samples from a stream seeded by ``(seed, round)``, see
  :mod:`fedrdskd.sampling`.)

Resuming gives the same results as an uninterrupted run with the same seed (up to
floating point on the same hardware): the restored model, strategy state and schedule
are the same, and client sampling, seeded by ``(seed, round)`` over the nodes in
partition order, picks the same partitions as long as every node reports its
partition id (``summary.sampling.seeded``).

Checkpoints are pickles (``torch.load(weights_only=False)``, because they hold NumPy
RNG states and the synthesizers' NumPy arrays): resume only from files you wrote.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.common import log

from fedrdskd.experiment import ExperimentConfig

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format-version", "round", "arrays", "strategy", "train-metrics",
                  "evaluate-metrics", "recorder", "rng", "fingerprint")


@dataclass
class Checkpoint:
    """Everything needed to continue a run after ``round``.

    Attributes
    ----------
    round : int
        The last completed round.
    arrays : dict[str, torch.Tensor]
        The global model after that round (CPU state dict).
    strategy : dict[str, Any]
        :func:`strategy_state` of the run's strategy.
    train_metrics, evaluate_metrics : dict[int, dict[str, Any]]
        The clients' aggregated train / evaluate metrics per round.
    recorder : dict[str, Any]
        The centralised test metrics and round times so far: ``{"evaluations": {round:
        {"test_loss", "test_accuracy"}}, "wall-seconds": {round: seconds}}``.
    rng : dict[str, Any]
        :func:`capture_rng_states`.
    fingerprint : dict[str, Any]
        :func:`experiment_fingerprint` of the run that wrote it.
    """

    round: int
    arrays: dict[str, torch.Tensor]
    strategy: dict[str, Any] = field(default_factory=dict)
    train_metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    evaluate_metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    recorder: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """The dict written with ``torch.save`` (kebab-case keys)."""
        return {"format-version": FORMAT_VERSION, "round": self.round,
                "arrays": self.arrays, "strategy": self.strategy,
                "train-metrics": self.train_metrics,
                "evaluate-metrics": self.evaluate_metrics, "recorder": self.recorder,
                "rng": self.rng, "fingerprint": self.fingerprint}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Checkpoint:
        """Inverse of :meth:`to_payload`."""
        return cls(round=int(payload["round"]), arrays=payload["arrays"],
                   strategy=payload["strategy"], train_metrics=payload["train-metrics"],
                   evaluate_metrics=payload["evaluate-metrics"],
                   recorder=payload["recorder"], rng=payload["rng"],
                   fingerprint=payload["fingerprint"])

    def array_record(self) -> ArrayRecord:
        """The global model as Flower arrays."""
        return ArrayRecord(self.arrays)


# ---- RNG states ------------------------------------------------------------------------
def capture_rng_states() -> dict[str, Any]:
    """The global Python, NumPy and torch CPU RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


# ---- strategy state ------------------------------------------------------------------
def strategy_state(strategy: Any) -> dict[str, Any]:
    """What the strategy carries from one round to the next (see the module docstring).

    Returns
    -------
    dict[str, Any]
        ``{"distillation": ...}`` for the distillation mixins, ``{"server-optimizer":
        {"m_t": ..., "v_t": ...}}`` for FedOpt bases, both or neither.
    """
    state: dict[str, Any] = {}
    if hasattr(strategy, "distillation_state"):
        state["distillation"] = strategy.distillation_state()
    if hasattr(strategy, "m_t") and hasattr(strategy, "v_t"):
        state["server-optimizer"] = {"m_t": _copy_arrays(strategy.m_t),
                                     "v_t": _copy_arrays(strategy.v_t)}
    return state


def load_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Restore what :func:`strategy_state` returned into a freshly built strategy.

    Raises
    ------
    ValueError
        If the checkpoint was written by a strategy with different state.
    """
    has_distillation = hasattr(strategy, "distillation_state")
    if has_distillation != ("distillation" in state):
        raise ValueError("The checkpoint's strategy state does not match the configured "
                         f"strategy {type(strategy).__name__} (distillation state "
                         f"{'missing' if has_distillation else 'unexpected'}).")
    if has_distillation:
        strategy.load_distillation_state(state["distillation"])
    if "server-optimizer" in state and hasattr(strategy, "m_t"):
        strategy.m_t = _copy_arrays(state["server-optimizer"]["m_t"])
        strategy.v_t = _copy_arrays(state["server-optimizer"]["v_t"])


def _copy_arrays(arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    return None if arrays is None else {k: np.array(v, copy=True) for k, v in arrays.items()}


# ---- compatibility -------------------------------------------------------------------
def experiment_fingerprint(experiment: ExperimentConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the run that wrote the checkpoint."""
    return {"seed": experiment.seed, "strategy": experiment.strategy.name,
            "dataset": experiment.client.data.dataset, "model": experiment.client.model,
            "num_clients": experiment.num_clients}


def check_compatible(checkpoint: Checkpoint, experiment: ExperimentConfig,
                     path: Path) -> None:
    """Refuse to resume with different core settings or fewer rounds than done.

    Raises
    ------
    ValueError
        Naming the settings that differ, or ``num_rounds``.
    """
    expected = experiment_fingerprint(experiment)
    differing = [f"{key}: checkpoint {checkpoint.fingerprint.get(key)!r}, config "
                 f"{value!r}" for key, value in expected.items()
                 if checkpoint.fingerprint.get(key) != value]
    if differing:
        raise ValueError(f"Cannot resume from {path}: it was written with other "
                         f"settings ({'; '.join(differing)}).")
    if checkpoint.round > experiment.num_rounds:
        raise ValueError(f"Invalid config value num_rounds={experiment.num_rounds!r}: the "
                         f"checkpoint {path} has already completed {checkpoint.round} "
                         f"rounds; allowed range is [{checkpoint.round}, 1000000].")


# ---- files ---------------------------------------------------------------------------
def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            torch.save(checkpoint.to_payload(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def checkpoint_path(resume_from: str | os.PathLike) -> Path:
    """The checkpoint file named by ``resume_from`` (a file, or a run directory).

    Raises
    ------
    ValueError
        If there is no such file, naming ``resume_from``.
    """
    path = Path(resume_from).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ValueError(f"Invalid config value resume_from={str(resume_from)!r}: no "
                         f"checkpoint at {path}; give a {CHECKPOINT_NAME} or the run "
                         "directory that holds one.")
    return path


def existing_run_problem(run_dir: str | os.PathLike,
                         resume_from: str | os.PathLike | None) -> str | None:
    """Why a new run must not write into ``run_dir``, or ``None``.

    A folder holding a finished run (``results.json``) or an interrupted one
    (``checkpoint.pt``) is refused unless the new run resumes it (``resume_from`` is
    that folder or its checkpoint): it would overwrite that run's files.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    held = [name for name in ("results.json", CHECKPOINT_NAME) if (run_dir / name).is_file()]
    if not held:
        return None
    if resume_from and Path(resume_from).expanduser().resolve() in (
            run_dir, run_dir / CHECKPOINT_NAME):
        return None
    kind = "a finished run" if "results.json" in held else "an interrupted run"
    return (f"{run_dir} holds {kind} ({', '.join(held)}); a new run there would overwrite "
            "its files. Choose another hydra.run.dir (or output-dir), or continue that run "
            f"with resume_from={run_dir}.")


def load_checkpoint(resume_from: str | os.PathLike) -> tuple[Checkpoint, Path]:
    """Read and sanity-check the checkpoint named by ``resume_from``.

    Returns
    -------
    tuple[Checkpoint, Path]
        The checkpoint and the file it was read from.

    Raises
    ------
    ValueError
        If the path holds no checkpoint, or not one this version wrote.
    """
    path = checkpoint_path(resume_from)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"Invalid config value resume_from={str(resume_from)!r}: "
                         f"{path} is not a readable checkpoint ({error}).") from error
    missing = [key for key in _REQUIRED_KEYS
               if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise ValueError(f"Invalid config value resume_from={str(resume_from)!r}: {path} "
                         f"is not a fedrdskd checkpoint (missing {', '.join(missing)}).")
    if payload["format-version"] != FORMAT_VERSION:
        raise ValueError(f"Invalid config value resume_from={str(resume_from)!r}: {path} "
                         f"has checkpoint format {payload['format-version']!r}, this "
                         f"version reads format {FORMAT_VERSION}.")
    checkpoint = Checkpoint.from_payload(payload)
    log(INFO, "Loaded checkpoint %s (after round %d)", path, checkpoint.round)
    return checkpoint, path
