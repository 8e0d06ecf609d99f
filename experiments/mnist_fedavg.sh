#!/usr/bin/env bash
# The FedAvg reference runs: MNIST, LeNet-5, Dirichlet alpha 0.1 and 0.5, 20 clients,
# 10 per round, 30 rounds, 1 local epoch, seeds 0 and 1 (resumable, see mnist_compare.sh).
# Usage: experiments/mnist_fedavg.sh [extra Hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
for alpha in 0.1 0.5; do
  experiments/mnist_compare.sh "$alpha" 1 30 fedavg 0,1 "$@"
done
