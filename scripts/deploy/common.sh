# Shared settings and helpers for the scripts in scripts/deploy/ (sourced, not run).
# shellcheck disable=SC2034  # the variables set here are used by the sourcing scripts
#
# Environment variables (all optional):
#   FEDRDSKD_DEPLOY_DIR   where certificates, keys, logs, pid files and Flower homes live
#                         (default: <repo>/.deploy; never commit it)
#   FEDRDSKD_VENV         virtual environment whose bin/ provides flwr, flower-superlink, ...
#                         (default: the one already on PATH, else <repo>/.venv)

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
DEPLOY_DIR="${FEDRDSKD_DEPLOY_DIR:-$REPO_DIR/.deploy}"

# Flower's console scripts must be on PATH: the SuperLink and the SuperNodes start
# `flower-superexec`, `flwr-serverapp` and `flwr-clientapp` by name.
if [ -n "${FEDRDSKD_VENV:-}" ]; then
    PATH="$FEDRDSKD_VENV/bin:$PATH"
elif ! command -v flower-superlink >/dev/null 2>&1 && [ -x "$REPO_DIR/.venv/bin/flower-superlink" ]; then
    PATH="$REPO_DIR/.venv/bin:$PATH"
fi
export PATH

# The Python interpreter of that environment (it has `cryptography`, a Flower dependency).
if command -v flower-superlink >/dev/null 2>&1 \
    && [ -x "$(dirname "$(command -v flower-superlink)")/python" ]; then
    FLWR_PYTHON="$(dirname "$(command -v flower-superlink)")/python"
else
    FLWR_PYTHON="python3"
fi

# Offline-friendly Flower: run the apps in this environment instead of building a fresh
# one per run (which would download torch), and make no calls home.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1

die() {
    echo "error: $*" >&2
    exit 1
}

need_command() {
    command -v "$1" >/dev/null 2>&1 \
        || die "'$1' not found on PATH; install it or set FEDRDSKD_VENV to the project's virtual environment"
}

# Absolute path of the deploy directory (created if missing).
init_deploy_dir() {
    mkdir -p "$DEPLOY_DIR"
    DEPLOY_DIR="$(cd "$DEPLOY_DIR" && pwd)"
    CERT_DIR="$DEPLOY_DIR/certs"
    KEY_DIR="$DEPLOY_DIR/keys"
    RUN_DIR="$DEPLOY_DIR/run"
    LOG_DIR="$DEPLOY_DIR/logs"
    HOME_DIR="$DEPLOY_DIR/home"
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$HOME_DIR"
}

# The SuperLink's address as written by start_superlink.sh.
superlink_address() {
    [ -f "$RUN_DIR/superlink.address" ] \
        || die "no SuperLink recorded in $RUN_DIR; run scripts/deploy/start_superlink.sh first"
    cat "$RUN_DIR/superlink.address"
}

# Wait until a TCP port accepts connections on 127.0.0.1, or the process dies.
wait_for_port() {
    local port="$1" pid="$2" name="$3" timeout_s="${4:-60}" waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) exited during start-up; see its log in $LOG_DIR"
        [ "$waited" -lt "$((timeout_s * 10))" ] || die "$name did not open port $port within ${timeout_s}s"
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Fail early if something already listens on the port (a stale deployment, another app).
require_free_port() {
    local port="$1"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is already in use; pick another one or run scripts/deploy/stop_all.sh"
    fi
}

# Start a command in the background with its own log, record its pid in RUN_DIR/<name>.pid.
# The command leads its own process group (setsid), so a Ctrl-C in the starting shell or
# the end of the caller's process group does not take it down, and stop_all.sh can signal
# the group as a whole.
start_background() {
    local name="$1"
    shift
    local pid_file="$RUN_DIR/$name.pid"
    if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        die "$name already runs (pid $(cat "$pid_file")); stop it with scripts/deploy/stop_all.sh"
    fi
    setsid nohup "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo "$!" >"$pid_file"
    STARTED_PID="$!"
}
