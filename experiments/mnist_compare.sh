#!/usr/bin/env bash
# The MNIST comparison (issues 3-5): LeNet-5, 20 clients, 10 per round, Dirichlet split.
# Usage: experiments/mnist_compare.sh ALPHA LOCAL_EPOCHS ROUNDS STRATEGIES SEEDS [overrides]
#   e.g. experiments/mnist_compare.sh 0.1 1 30 fedavg,fedprox,fedftg_cpu,fedrdskd 0,1
# Results: $RESULTS_ROOT/mnist/dirichlet-ALPHA-eLOCAL_EPOCHS/<strategy>-seed<seed>/results.json
# (RESULTS_ROOT defaults to results/ in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
results_root="${RESULTS_ROOT:-$PWD/results}"
alpha="$1" epochs="$2" rounds="$3" strategies="$4" seeds="$5"
shift 5
fedrdskd -m dataset=mnist model=lenet5 partition=dirichlet partition.alpha="$alpha" \
  num_clients=20 fraction_train=0.5 num_rounds="$rounds" local_epochs="$epochs" \
  strategy="$strategies" seed="$seeds" \
  hydra.sweep.dir="${results_root}/mnist/dirichlet-${alpha}-e${epochs}" \
  hydra.sweep.subdir='${strategy.name}-seed${seed}' "$@"
