#!/usr/bin/env bash
# Start a Flower SuperLink (deployment engine) on 127.0.0.1 with TLS and SuperNode
# authentication. In flwr 1.41 one HTTPS port serves the Control API (flwr CLI), the Fleet
# API (SuperNodes) and the Runtime API (the ServerApp, started in a subprocess by the
# SuperLink's own SuperExec).
#
# Usage: scripts/deploy/start_superlink.sh [--deploy-dir DIR] [--port PORT]
#   --deploy-dir  created by make_certs.sh (default: $FEDRDSKD_DEPLOY_DIR or <repo>/.deploy)
#   --port        HTTPS port on 127.0.0.1 (default: $FEDRDSKD_SUPERLINK_PORT or 8000)
#
# Writes <deploy-dir>/run/superlink.pid and superlink.address, logs to
# <deploy-dir>/logs/superlink.log. Registered SuperNodes and runs are kept in
# <deploy-dir>/state/superlink.db, so a restarted SuperLink still knows its SuperNodes.
# The ServerApp runs in this repository's directory (relative output paths land here).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

port="${FEDRDSKD_SUPERLINK_PORT:-8000}"
while [ $# -gt 0 ]; do
    case "$1" in
        --deploy-dir) DEPLOY_DIR="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        *) die "unknown argument '$1' (allowed: --deploy-dir DIR, --port PORT)" ;;
    esac
done
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
    || die "--port must be an integer in 1..65535, got '$port'"

need_command flower-superlink
init_deploy_dir
for file in ca.crt server.crt server.key; do
    [ -f "$CERT_DIR/$file" ] || die "missing $CERT_DIR/$file; run scripts/deploy/make_certs.sh first"
done
require_free_port "$port"
mkdir -p "$DEPLOY_DIR/state" "$HOME_DIR/superlink"

cd "$REPO_DIR"
FLWR_HOME="$HOME_DIR/superlink" start_background superlink \
    flower-superlink \
    --ssl-ca-certfile "$CERT_DIR/ca.crt" \
    --ssl-certfile "$CERT_DIR/server.crt" \
    --ssl-keyfile "$CERT_DIR/server.key" \
    --enable-supernode-auth \
    --host 127.0.0.1 \
    --port "$port" \
    --database "$DEPLOY_DIR/state/superlink.db" \
    --disable-runtime-dependency-installation
echo "127.0.0.1:$port" >"$RUN_DIR/superlink.address"
wait_for_port "$port" "$STARTED_PID" "SuperLink"
echo "SuperLink running (pid $STARTED_PID) on https://127.0.0.1:$port; log: $LOG_DIR/superlink.log"
