"""Keys of the messages between the fedrdskd strategies and ClientApps (one home for each).

Training reply (``train``): ``"arrays"`` (ArrayRecord), ``"metrics"`` (MetricRecord with
``num-examples``, ``train-loss`` and ``train-seconds``) and, optionally, the ConfigRecord
:data:`LABEL_COUNTS_KEY` holding ``{LABEL_COUNTS_KEY: [n_0, ..., n_{C-1}]}``.

Candidate validation (``evaluate.candidates``, sent by a distillation strategy with
``validation_betas``): the message holds the aggregate as ArrayRecord
:data:`CANDIDATE_START_KEY`, the distilled model as :data:`CANDIDATE_END_KEY` and a
ConfigRecord :data:`CANDIDATE_CONFIG_KEY` with ``{BETAS_KEY: [β_0, ...]}``. The client
evaluates ``start + β (end − start)`` for each β on its held-out local split and replies
with the MetricRecord :data:`CANDIDATE_REPLY_KEY` holding ``{LOSSES_KEY: [...],
ACCURACIES_KEY: [...], "num-examples": n}``. No data leaves the client, only these
numbers, as in Flower's federated evaluation.
"""

from __future__ import annotations

from flwr.app import MessageType

LABEL_COUNTS_KEY = "label-counts"
NUM_EXAMPLES_KEY = "num-examples"
TRAIN_SECONDS_KEY = "train-seconds"

CANDIDATES_ACTION = "candidates"
CANDIDATES_MESSAGE_TYPE = f"{MessageType.EVALUATE}.{CANDIDATES_ACTION}"
CANDIDATE_START_KEY = "start"
CANDIDATE_END_KEY = "end"
CANDIDATE_CONFIG_KEY = "config"
BETAS_KEY = "betas"
CANDIDATE_REPLY_KEY = "candidate-losses"
LOSSES_KEY = "losses"
ACCURACIES_KEY = "accuracies"
