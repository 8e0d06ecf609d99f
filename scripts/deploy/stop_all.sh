#!/usr/bin/env bash
# Stop the processes started by start_superlink.sh / start_supernode.sh, by the pids in
# <deploy-dir>/run/*.pid, together with everything they started (SuperExec, ServerApp and
# ClientApp processes). SuperNodes are stopped before the SuperLink.
#
# Usage: scripts/deploy/stop_all.sh [--deploy-dir DIR] [--signal TERM|KILL] [--grace S] [NAME ...]
#   --deploy-dir  as for the other scripts (default: $FEDRDSKD_DEPLOY_DIR or <repo>/.deploy)
#   --signal      TERM (default): graceful, a SuperNode tells the SuperLink it leaves;
#                 KILL: every process of the tree at once, like a crashed machine
#   --grace       seconds to wait for a graceful stop before force-killing (default: 10)
#   NAME          only these, e.g. `node-1` or `superlink` (default: all pid files)
#
# A pid file whose process is gone, or whose pid now belongs to something that is not a
# Flower process, is removed without killing anything.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

signal="TERM"
grace_s=10
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        --deploy-dir) DEPLOY_DIR="$2"; shift 2 ;;
        --signal) signal="$2"; shift 2 ;;
        --grace) grace_s="$2"; shift 2 ;;
        --*) die "unknown option '$1' (allowed: --deploy-dir DIR, --signal TERM|KILL, --grace S, NAME...)" ;;
        *) names+=("$1"); shift ;;
    esac
done
[[ "$signal" == "TERM" || "$signal" == "KILL" ]] || die "--signal must be TERM or KILL, got '$signal'"
[[ "$grace_s" =~ ^[0-9]+$ ]] || die "--grace must be a non-negative integer, got '$grace_s'"
need_command ps

[ -d "$DEPLOY_DIR/run" ] || exit 0  # nothing was ever started here
init_deploy_dir
if [ "${#names[@]}" -eq 0 ]; then
    for pid_file in "$RUN_DIR"/node-*.pid "$RUN_DIR"/superlink.pid; do
        [ -f "$pid_file" ] && names+=("$(basename "$pid_file" .pid)")
    done
fi

# All descendants of a pid (children first found, breadth-first), one per line.
descendants() {
    local table queue=("$1") pid child
    table="$(ps -e -o pid=,ppid=)"
    while [ "${#queue[@]}" -gt 0 ]; do
        pid="${queue[0]}"
        queue=("${queue[@]:1}")
        while read -r child; do
            echo "$child"
            queue+=("$child")
        done < <(awk -v parent="$pid" '$2 == parent { print $1 }' <<<"$table")
    done
}

is_flower_process() {
    ps -o args= -p "$1" 2>/dev/null | grep -qE "flower-(superlink|supernode|superexec)"
}

# True if any of the pids still runs (a zombie, waiting for its parent to reap it, does not).
alive() {
    local pid state
    for pid in "$@"; do
        state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
        [ -n "$state" ] && [[ "$state" != Z* ]] && return 0
    done
    return 1
}

stop_tree() {
    local name="$1" pid_file="$RUN_DIR/$1.pid" root tree tick
    [ -f "$pid_file" ] || { echo "$name: no pid file"; return; }
    root="$(cat "$pid_file")"
    if ! is_flower_process "$root"; then
        rm -f "$pid_file"
        echo "$name: not running"
        return
    fi
    mapfile -t tree < <(echo "$root"; descendants "$root")
    # start_background makes the root a process group leader; its group is killed with
    # the tree (children that started their own session, e.g. SuperExec, are in the tree).
    local group=""
    [ "$(ps -o pgid= -p "$root" 2>/dev/null | tr -d ' ')" = "$root" ] && group="-$root"
    if [ "$signal" = "KILL" ]; then
        kill -KILL ${group:+-- "$group"} "${tree[@]}" 2>/dev/null || true
        echo "$name: killed (pids ${tree[*]})"
    else
        # The root signs off (a SuperNode tells the SuperLink it leaves); what it leaves
        # behind, e.g. a ClientApp still training, is killed once the root is gone.
        kill -TERM "$root" 2>/dev/null || true
        for ((tick = 0; tick < grace_s * 10; tick++)); do
            alive "$root" || break
            sleep 0.1
        done
        if alive "$root"; then
            echo "$name: did not stop within ${grace_s}s, force-killing (pids ${tree[*]})"
        else
            echo "$name: stopped (pids ${tree[*]})"
        fi
        kill -KILL ${group:+-- "$group"} "${tree[@]}" 2>/dev/null || true
    fi
    for ((tick = 0; tick < 50; tick++)); do  # SIGKILL is not instant: wait up to 5 s
        alive "${tree[@]}" || break
        sleep 0.1
    done
    rm -f "$pid_file"
    [ "$name" = "superlink" ] && rm -f "$RUN_DIR/superlink.address"
    return 0
}

for name in "${names[@]}"; do
    stop_tree "$name"
done
