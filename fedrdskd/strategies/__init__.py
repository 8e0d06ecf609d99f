"""Flower Message-API strategies with server-side data-free distillation.

``FedRDSKD`` (FedAvg + RDSKD) and ``FedFTG`` (FedAvg + FedFTG fine-tuning); their mixins
add the same distillation to any other Message-API strategy (``FedProx``, ``FedAdam``,
``FedTrimmedAvg``, ...) without copying it.
"""

from fedrdskd.strategies.client_ensemble import ClientEnsembleMixin
from fedrdskd.strategies.distillation import DistillationMixin
from fedrdskd.strategies.fedftg import FedFTG, FedFTGMixin
from fedrdskd.strategies.fedrdskd import FedRDSKD, RDSKDMixin

__all__ = [
    "ClientEnsembleMixin",
    "DistillationMixin",
    "FedFTG",
    "FedFTGMixin",
    "FedRDSKD",
    "RDSKDMixin",
]
