#!/usr/bin/env bash
# Point the flwr CLI at the local SuperLink (TLS, verified with our CA) and register the
# SuperNodes' public keys, so that only these nodes may join.
#
# Usage: scripts/deploy/configure_federation.sh [--deploy-dir DIR] [--name NAME] [--num-nodes N]
#   --deploy-dir  as for the other scripts (default: $FEDRDSKD_DEPLOY_DIR or <repo>/.deploy)
#   --name        name of the SuperLink connection, used as `flwr run . NAME`
#                 (default: fedrdskd-local)
#   --num-nodes   register keys node-0 .. node-(N-1) (default: 2)
#
# The flwr CLI reads its connections from $FLWR_HOME/config.toml. This script writes an
# isolated one, <deploy-dir>/home/cli/config.toml, and <deploy-dir>/env.sh that exports
# FLWR_HOME (and PATH) for it, so ~/.flwr stays untouched. Needs a running SuperLink
# (start_superlink.sh). Running it again is safe: registered keys are skipped.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

name="fedrdskd-local"
num_nodes=2
while [ $# -gt 0 ]; do
    case "$1" in
        --deploy-dir) DEPLOY_DIR="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --num-nodes) num_nodes="$2"; shift 2 ;;
        *) die "unknown argument '$1' (allowed: --deploy-dir DIR, --name NAME, --num-nodes N)" ;;
    esac
done
[[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || die "--name must match [A-Za-z0-9_-]+, got '$name'"
[[ "$num_nodes" =~ ^[0-9]+$ ]] || die "--num-nodes must be a non-negative integer, got '$num_nodes'"

need_command flwr
init_deploy_dir
address="$(superlink_address)"
export FLWR_HOME="$HOME_DIR/cli"
mkdir -p "$FLWR_HOME"

cat >"$FLWR_HOME/config.toml" <<EOF
# Written by scripts/deploy/configure_federation.sh
[superlink]
default = "$name"

[superlink.$name]
address = "$address"
root-certificates = "$CERT_DIR/ca.crt"
EOF

cat >"$DEPLOY_DIR/env.sh" <<EOF
# Source this file to use the flwr CLI with the local deployment in $DEPLOY_DIR.
export FLWR_HOME="$FLWR_HOME"
export PATH="$(dirname "$(command -v flwr)"):\$PATH"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
EOF

for ((index = 0; index < num_nodes; index++)); do
    public_key="$KEY_DIR/node-$index.pub"
    [ -f "$public_key" ] || die "missing $public_key; run scripts/deploy/make_certs.sh --num-nodes $num_nodes"
    if output="$(flwr supernode register "$public_key" "$name" 2>&1)"; then
        echo "registered node-$index: $(grep -o 'SuperNode [0-9]*' <<<"$output")"
    elif grep -q "Public key already in use" <<<"$output"; then
        echo "node-$index already registered"
    else
        die "registering node-$index failed:"$'\n'"$output"
    fi
done
echo "flwr CLI configured: source $DEPLOY_DIR/env.sh, then: flwr run . $name --stream"
