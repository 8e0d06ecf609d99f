#!/usr/bin/env bash
# CIFAR-10 in FedFTG's protocol scaled to a 2-core CPU (issue 5): the small CNN instead of
# ResNet-18, 100 clients, 10 per round, Dirichlet alpha 0.3, 5 local epochs.
# Data: the JPEG ImageFolder copy of CIFAR-10 under $FEDRDSKD_DATA/cifar10-jpg
# (or torchvision's binary copy under $FEDRDSKD_DATA, see README "Data").
# Usage: experiments/cifar10_compare.sh ROUNDS STRATEGIES SEEDS [overrides]
#   e.g. experiments/cifar10_compare.sh 15 fedavg,fedprox,fedftg_cpu,fedrdskd 0
# The client-ensemble diagnostics use a fixed, seeded 2000-image subset of the test set:
# on the whole set they took 66-82 s per round here (10 CNNs x 10k images) against ~22 s
# of client training (first two rounds of a stopped attempt). The global model is always evaluated on all 10k test images.
# Results: $RESULTS_ROOT/cifar10/dirichlet-0.3-e5/<strategy>-seed<seed>/results.json
set -euo pipefail
cd "$(dirname "$0")/.."
results_root="${RESULTS_ROOT:-$PWD/results}"
rounds="$1" strategies="$2" seeds="$3"
shift 3
fedrdskd -m dataset=cifar10 model=cnn partition=dirichlet partition.alpha=0.3 \
  num_clients=100 fraction_train=0.1 num_rounds="$rounds" local_epochs=5 \
  strategy="$strategies" seed="$seeds" \
  hydra.sweep.dir="${results_root}/cifar10/dirichlet-0.3-e5" \
  server.ensemble_eval_samples=2000 \
  hydra.sweep.subdir='${strategy.name}-seed${seed}' "$@"
