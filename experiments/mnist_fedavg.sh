#!/usr/bin/env bash
# Issue 2's reference runs: FedAvg on MNIST, LeNet-5, Dirichlet alpha 0.1 and 0.5,
# 20 clients, 10 per round, 30 rounds, 1 local epoch, seeds 0 and 1.
# Usage: experiments/mnist_fedavg.sh [extra Hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
for alpha in 0.1 0.5; do
  fedrdskd -m dataset=mnist model=lenet5 partition=dirichlet partition.alpha="$alpha" \
    num_clients=20 fraction_train=0.5 num_rounds=30 local_epochs=1 \
    strategy=fedavg seed=0,1 \
    hydra.sweep.dir="results/mnist/dirichlet-${alpha}-e1" \
    hydra.sweep.subdir='${strategy.name}-seed${seed}' "$@"
done
