#!/usr/bin/env bash
# Start one Flower SuperNode that connects to the local SuperLink over TLS (verified with
# our CA) and authenticates with its own key. The node's ClientApp loads partition
# `partition-id` of `num-partitions` (its node config).
#
# Usage: scripts/deploy/start_supernode.sh --index I [--num-partitions N] [--port PORT]
#                                         [--extra-node-config "K=V ..."] [--deploy-dir DIR]
#                                         [--timeout S]
#   --index           node index: key keys/node-I, node config partition-id=I
#   --num-partitions  node config num-partitions (default: $FEDRDSKD_NUM_PARTITIONS or 2)
#   --port            port of this node's Runtime API on 127.0.0.1, where its ClientApps
#                     connect (default: 9094 + I); every node needs its own
#   --extra-node-config  more node config entries, e.g. "data-root='/data/site-a'"
#   --deploy-dir      as for the other scripts (default: $FEDRDSKD_DEPLOY_DIR or <repo>/.deploy)
#   --timeout         seconds to wait for the SuperLink to accept the node (default: 60)
#
# Exits 0 once the SuperLink has accepted the node (pid in run/node-I.pid, log in
# logs/node-I.log). Exits 1 if the node stops before that, e.g. because its key was never
# registered: an unknown node is refused ("[code: 2004] Failed to activate SuperNode").
# A node that crashed (SIGKILL) is refused the same way until the SuperLink has declared
# it unavailable, up to 60 s after its last heartbeat; after that it rejoins with its node ID.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

index=""
num_partitions="${FEDRDSKD_NUM_PARTITIONS:-2}"
port=""
extra_node_config=""
timeout_s=60
while [ $# -gt 0 ]; do
    case "$1" in
        --index) index="$2"; shift 2 ;;
        --num-partitions) num_partitions="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --extra-node-config) extra_node_config="$2"; shift 2 ;;
        --deploy-dir) DEPLOY_DIR="$2"; shift 2 ;;
        --timeout) timeout_s="$2"; shift 2 ;;
        *) die "unknown argument '$1' (allowed: --index I, --num-partitions N, --port PORT, --extra-node-config 'K=V ...', --deploy-dir DIR, --timeout S)" ;;
    esac
done
[[ "$index" =~ ^[0-9]+$ ]] || die "--index must be a non-negative integer, got '$index'"
[[ "$num_partitions" =~ ^[1-9][0-9]*$ ]] || die "--num-partitions must be a positive integer, got '$num_partitions'"
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer, got '$timeout_s'"
port="${port:-$((9094 + index))}"
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
    || die "--port must be an integer in 1..65535, got '$port'"

need_command flower-supernode
init_deploy_dir
name="node-$index"
[ -f "$KEY_DIR/$name" ] || die "missing key $KEY_DIR/$name; run scripts/deploy/make_certs.sh --num-nodes $((index + 1))"
address="$(superlink_address)"
require_free_port "$port"
mkdir -p "$HOME_DIR/$name"

# The node's own Runtime API (SuperNode <-> its ClientApp processes) also uses TLS.
cd "$REPO_DIR"
FLWR_HOME="$HOME_DIR/$name" start_background "$name" \
    flower-supernode \
    --superlink "$address" \
    --root-certificates "$CERT_DIR/ca.crt" \
    --auth-supernode-private-key "$KEY_DIR/$name" \
    --node-config "partition-id=$index num-partitions=$num_partitions $extra_node_config" \
    --host 127.0.0.1 \
    --port "$port" \
    --ssl-certfile "$CERT_DIR/server.crt" \
    --ssl-keyfile "$CERT_DIR/server.key" \
    --ssl-ca-certfile "$CERT_DIR/ca.crt"

log_file="$LOG_DIR/$name.log"
for ((tick = 0; tick < timeout_s * 10; tick++)); do
    if grep -q "SuperNode ID:" "$log_file" 2>/dev/null; then
        echo "$name running (pid $STARTED_PID), $(grep -o 'SuperNode ID: [0-9]*' "$log_file"), partition $index of $num_partitions; log: $log_file"
        exit 0
    fi
    if ! kill -0 "$STARTED_PID" 2>/dev/null; then
        rm -f "$RUN_DIR/$name.pid"
        echo "error: $name was not accepted by the SuperLink at $address:" >&2
        sed -e 's/\x1b\[[0-9;]*m//g' "$log_file" | grep -A3 -E "Exit Code|ERROR" >&2 || tail -n 20 "$log_file" >&2
        echo "(an unregistered key is refused; so is a registered node that crashed less than" \
            "60 s ago, until the SuperLink has declared it unavailable: then start it again)" >&2
        exit 1
    fi
    sleep 0.1
done
"$SCRIPT_DIR/stop_all.sh" --deploy-dir "$DEPLOY_DIR" "$name" >/dev/null
die "$name did not connect within ${timeout_s}s (stopped it); see $log_file"
