"""Server-side data-free knowledge distillation in plain PyTorch (no Flower, Ray or Hydra).

Generator networks, RDSKD's loss terms, the weighted teacher ensemble of client models,
the synthesizer interface and the one distillation loop shared by RDSKD and FedFTG.
"""

from fedrdskd.kd.base import Synthesizer, SyntheticBatch
from fedrdskd.kd.distill import DistillationSchedule, run_distillation
from fedrdskd.kd.ensemble import (
    ENSEMBLE_COMBINATIONS,
    ENSEMBLE_WEIGHTINGS,
    TeacherEnsemble,
    combine_member_logits,
    ensemble_weights,
)
from fedrdskd.kd.generators import DAFLGenerator
from fedrdskd.kd.losses import (
    RDSKDGeneratorLoss,
    authenticity_loss,
    class_diversity_loss,
    inter_sample_diversity_loss,
    kd_loss,
)
from fedrdskd.kd.rdskd import RDSKDSynthesizer

__all__ = [
    "DAFLGenerator",
    "DistillationSchedule",
    "ENSEMBLE_COMBINATIONS",
    "ENSEMBLE_WEIGHTINGS",
    "RDSKDGeneratorLoss",
    "RDSKDSynthesizer",
    "SyntheticBatch",
    "Synthesizer",
    "TeacherEnsemble",
    "authenticity_loss",
    "class_diversity_loss",
    "combine_member_logits",
    "ensemble_weights",
    "inter_sample_diversity_loss",
    "kd_loss",
    "run_distillation",
]
