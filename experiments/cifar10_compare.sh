#!/usr/bin/env bash
# CIFAR-10 in FedFTG's protocol scaled to a 2-core CPU: the small CNN instead of
# ResNet-18, 100 clients, 10 per round, Dirichlet alpha 0.3, 5 local epochs.
# Data: the JPEG ImageFolder copy of CIFAR-10 under $FEDRDSKD_DATA/cifar10-jpg
# (or torchvision's binary copy under $FEDRDSKD_DATA, see README "Data").
# Usage: experiments/cifar10_compare.sh ROUNDS STRATEGIES SEEDS [overrides]
#   e.g. experiments/cifar10_compare.sh 15 fedavg,fedprox,fedftg_cpu,fedrdskd 0,1
# The client-ensemble diagnostics use a fixed, seeded 2000-image subset of the test set:
# on the whole set they took 66-82 s per round here (10 CNNs x 10k images) against ~22 s
# of client training (first two rounds of a stopped attempt). The global model is always
# evaluated on all 10k test images.
# Results: $RESULTS_ROOT/cifar10/dirichlet-0.3-e5/<strategy>-seed<seed>/results.json.
# One run at a time, resumable, complete runs skipped (experiments/run_set.py);
# RUN_LABEL=name for an ablation variant's run dirs, SET=cifar10/<folder> for another
# set folder (e.g. the ablations').
# DRY_RUN=1 prints what would run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/python.sh
rounds="$1" strategies="$2" seeds="$3"
shift 3
exec "$PYTHON" experiments/run_set.py --root "${RESULTS_ROOT:-$PWD/results}" \
  --set "${SET:-cifar10/dirichlet-0.3-e5}" --rounds "$rounds" \
  --strategies "$strategies" --seeds "$seeds" ${RUN_LABEL:+--label "$RUN_LABEL"} ${DRY_RUN:+--dry-run} -- \
  dataset=cifar10 model=cnn partition=dirichlet partition.alpha=0.3 \
  num_clients=100 fraction_train=0.1 local_epochs=5 server.ensemble_eval_samples=2000 "$@"
