#!/usr/bin/env bash
# The MNIST comparison: LeNet-5, 20 clients, 10 per round, Dirichlet split.
# Usage: experiments/mnist_compare.sh ALPHA LOCAL_EPOCHS ROUNDS STRATEGIES SEEDS [overrides]
#   e.g. experiments/mnist_compare.sh 0.1 1 30 fedavg,fedprox,fedftg_cpu,fedrdskd 0,1
# Results: $RESULTS_ROOT/mnist/dirichlet-ALPHA-eLOCAL_EPOCHS/<strategy>-seed<seed>/results.json
# (RESULTS_ROOT defaults to results/ in the repository). One run at a time; runs with a
# complete results.json are skipped and interrupted ones resume, so the same command
# extends a set with more strategies or seeds (experiments/run_set.py).
# RUN_LABEL=name gives an ablation variant its own run dirs (name-seed<seed>), e.g.
#   RUN_LABEL=fedrdskd-logits experiments/mnist_compare.sh 0.1 1 30 fedrdskd 0,1 strategy.ensemble_combine=logits
# SET=mnist/<folder> puts the runs in another set folder (e.g. the ablations').
# DRY_RUN=1 prints what would run.
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/python.sh
alpha="$1" epochs="$2" rounds="$3" strategies="$4" seeds="$5"
shift 5
exec "$PYTHON" experiments/run_set.py --root "${RESULTS_ROOT:-$PWD/results}" \
  --set "${SET:-mnist/dirichlet-${alpha}-e${epochs}}" --rounds "$rounds" \
  --strategies "$strategies" --seeds "$seeds" ${RUN_LABEL:+--label "$RUN_LABEL"} ${DRY_RUN:+--dry-run} -- \
  dataset=mnist model=lenet5 partition=dirichlet partition.alpha="$alpha" \
  num_clients=20 fraction_train=0.5 local_epochs="$epochs" "$@"
