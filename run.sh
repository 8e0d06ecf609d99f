#!/usr/bin/env bash
# One entry point for newcomers and CI.
#   ./run.sh test [pytest args]          set up .venv, then run the test suite
#   ./run.sh lint                         set up .venv, then ruff and mypy on the package
#   ./run.sh experiment [hydra overrides] set up .venv, then run an experiment (default: FedAvg on MNIST)
#   ./run.sh setup                        only set up .venv
# FEDRDSKD_VENV overrides where the virtual environment lives (default: .venv here).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${FEDRDSKD_VENV:-.venv}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first, pinned to the wheels this project is tested with.
    "$VENV/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
}

command="${1:-}"
shift || true
case "$command" in
    setup) setup ;;
    test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
    lint) setup; "$VENV/bin/ruff" check; exec "$VENV/bin/mypy" ;;
    experiment) setup; exec "$VENV/bin/fedrdskd" "$@" ;;
    *) echo "usage: ./run.sh {test|lint|experiment|setup} [args...]" >&2; exit 2 ;;
esac
