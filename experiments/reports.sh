#!/usr/bin/env bash
# Regenerate every committed report (results/**/report) with the options it was made
# with, then the README / docs/results.md blocks included from them.
# Usage: experiments/reports.sh     (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/python.sh
rounds=(--at-round 1 --at-round 2 --at-round 3 --at-round 5 --at-round 10)

report() {
  local set_dir="$1"
  shift
  "$PYTHON" -m fedrdskd.report "$set_dir" --out "$set_dir/report" --baseline fedavg "$@"
}

for set_dir in results/mnist/dirichlet-0.1-e1 results/mnist/dirichlet-0.1-e5 \
               results/mnist/dirichlet-0.5-e1 results/mnist/dirichlet-0.05-e5; do
  report "$set_dir" --target-accuracy 0.95 --target-accuracy 0.97 --mean-to-round 10 \
    "${rounds[@]}"
done
report results/cifar10/dirichlet-0.3-e5 --target-accuracy 0.45 --target-accuracy 0.50 \
  --mean-to-round 10 "${rounds[@]}"
# The ablations: the preset with one mechanism changed, paired with the preset's runs of
# the same seeds (the bare "fedrdskd" row: rows are named by how they differ from the preset).
ablations() {
  local set_dir="$1"
  shift
  [ -d "$set_dir-ablations" ] || return 0
  "$PYTHON" -m fedrdskd.report "$set_dir-ablations" "$set_dir"/fedrdskd-seed* \
    --out "$set_dir-ablations/report" --baseline fedrdskd --mean-to-round 10 "$@"
}
for set_dir in results/mnist/dirichlet-0.1-e1 results/mnist/dirichlet-0.05-e5 \
               results/mnist/dirichlet-0.5-e1 results/cifar10/dirichlet-0.3-e5; do
  ablations "$set_dir" "${rounds[@]}"
done
# The previous preset's ablations, paired with that preset's runs (rows are named by how
# they differ from today's preset): its other ablations and the two that made today's.
previous="fedrdskd (class_prior=label-counts, generator_channels=64, iterations=10, student_steps=5)"
for set_dir in mnist/dirichlet-0.1-e1 cifar10/dirichlet-0.3-e5; do
  "$PYTHON" -m fedrdskd.report "results/previous-preset/$set_dir-ablations" \
    "results/$set_dir-ablations"/fedrdskd-{previous-preset,label-prior,heavy-server}-seed* \
    --out "results/previous-preset/$set_dir-ablations/report" --baseline "$previous" \
    --mean-to-round 10 "${rounds[@]}"
done
# FedAvg runs from before client sampling followed the seed: no pairs (the report says
# why), the other tables as before.
report results/archive-unseeded-sampling/mnist/dirichlet-0.5-e1 \
  --target-accuracy 0.95 --target-accuracy 0.97 --at-round 1 --at-round 5 --at-round 10
"$PYTHON" scripts/update_readme_results.py
