"""Keys of everything that crosses the wire between the ServerApp and the ClientApp (one home each).

Both sides import their keys from here; neither writes them as literals. Some keys are
Flower's own (the defaults of its strategies, or what they add to a message); they are
listed so that our side names them once too.

Training (``train``): the server sends the global model as the ArrayRecord
:data:`ARRAYS_KEY` and the ConfigRecord :data:`CONFIG_KEY` holding the local training
settings (:data:`LR_KEY`, :data:`MOMENTUM_KEY`, :data:`WEIGHT_DECAY_KEY`,
:data:`LOCAL_EPOCHS_KEY`, :data:`BATCH_SIZE_KEY`, :data:`SEED_KEY`; Flower adds
:data:`SERVER_ROUND_KEY`, and FedProx :data:`PROXIMAL_MU_KEY`). The client replies with
:data:`ARRAYS_KEY`, the MetricRecord :data:`METRICS_KEY` (:data:`NUM_EXAMPLES_KEY`,
:data:`TRAIN_LOSS_KEY`, :data:`TRAIN_SECONDS_KEY`) and, optionally, the ConfigRecord
:data:`LABEL_COUNTS_KEY` holding ``{LABEL_COUNTS_KEY: [n_0, ..., n_{C-1}]}``.

Evaluation (``evaluate``): the reply's :data:`METRICS_KEY` holds :data:`EVAL_LOSS_KEY`,
:data:`EVAL_ACCURACY_KEY` and :data:`NUM_EXAMPLES_KEY`.

Partition query (``query``, see :mod:`fedrdskd.sampling`): the reply holds the
MetricRecord :data:`NODE_INFO_KEY` with ``{PARTITION_ID_KEY: id}``.

Candidate validation (``evaluate.candidates``, sent by a distillation strategy with
``validation_betas``): the message holds the aggregate as ArrayRecord
:data:`CANDIDATE_START_KEY`, the distilled model as :data:`CANDIDATE_END_KEY` and a
ConfigRecord :data:`CANDIDATE_CONFIG_KEY` with ``{BETAS_KEY: [β_0, ...]}``. The client
evaluates ``start + β (end − start)`` for each β on its held-out local split and replies
with the MetricRecord :data:`CANDIDATE_REPLY_KEY` holding ``{LOSSES_KEY: [...],
ACCURACIES_KEY: [...], NUM_EXAMPLES_KEY: n}``. No data leaves the client, only these
numbers, as in Flower's federated evaluation.

Node config (set by the SuperNode or the simulation): :data:`PARTITION_ID_KEY`,
:data:`NUM_PARTITIONS_KEY` and, optionally, :data:`DATA_ROOT_KEY` (the node's own data).
"""

from __future__ import annotations

from flwr.app import MessageType

# ---- records (Flower's FedAvg defaults: arrayrecord_key, configrecord_key) ----------------
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"

# ---- training config sent to the clients -----------------------------------------------
SERVER_ROUND_KEY = "server-round"  # added by Flower's strategies
PROXIMAL_MU_KEY = "proximal-mu"  # added by Flower's FedProx
LR_KEY = "lr"
MOMENTUM_KEY = "momentum"
WEIGHT_DECAY_KEY = "weight-decay"
LOCAL_EPOCHS_KEY = "local-epochs"
BATCH_SIZE_KEY = "batch-size"
SEED_KEY = "seed"

# ---- the clients' replies ----------------------------------------------------------------
NUM_EXAMPLES_KEY = "num-examples"  # Flower's weighted_by_key default
TRAIN_LOSS_KEY = "train-loss"
TRAIN_SECONDS_KEY = "train-seconds"
LABEL_COUNTS_KEY = "label-counts"
LABEL_COUNTS_FORMAT = (f'content["{LABEL_COUNTS_KEY}"] = ConfigRecord({{"{LABEL_COUNTS_KEY}": '
                       '[n_0, ..., n_{C-1}]})')
"""How a training reply carries its per-class label counts (a ClientApp's side, in words)."""
EVAL_LOSS_KEY = "eval-loss"
EVAL_ACCURACY_KEY = "eval-accuracy"

# ---- partition query and node config -----------------------------------------------------
NODE_INFO_KEY = "node-info"
PARTITION_ID_KEY = "partition-id"  # also the node-config key of Flower's simulation
NUM_PARTITIONS_KEY = "num-partitions"
DATA_ROOT_KEY = "data-root"

# ---- candidate validation ----------------------------------------------------------------
CANDIDATES_ACTION = "candidates"
CANDIDATES_MESSAGE_TYPE = f"{MessageType.EVALUATE}.{CANDIDATES_ACTION}"
CANDIDATE_START_KEY = "start"
CANDIDATE_END_KEY = "end"
CANDIDATE_CONFIG_KEY = CONFIG_KEY
BETAS_KEY = "betas"
CANDIDATE_REPLY_KEY = "candidate-losses"
LOSSES_KEY = "losses"
ACCURACIES_KEY = "accuracies"
