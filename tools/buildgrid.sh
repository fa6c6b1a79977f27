#!/usr/bin/env bash
# Remote execution on 127.0.0.1: a BuildGrid server (action cache, CAS,
# Execution and Bots services; instance name empty; scheduler on SQLite) and N
# workers. The workers are the test fixture tests/remote/worker.py -- for
# production use buildbox-worker or a hosted REAPI service
# (docs/remote-execution.md). Config, pid files, logs and storage all live under STATE_DIR.
#
#   tools/buildgrid.sh start STATE_DIR PORT [WORKERS]   # WORKERS defaults to 2
#   bazel build --config=remote ...          # .bazelrc: port 50051, at most 100 calls
#   bazel build --config=remote --remote_executor=grpc://127.0.0.1:PORT ...
#   tools/buildgrid.sh stop STATE_DIR
#
# Exit status 3: PORT is in use.
#
# The workers share a content cache, STATE_DIR/work/cache (docs/remote-execution.md).
#
# Needs the BuildGrid venv ./setup.sh makes in .local/buildgrid-venv.
#
# On a machine with other users (tools/state_dir.py): STATE_DIR must be yours
# (made, mode 0700, if missing), and nothing in or above it may be another
# user's to change; `stop` stops only the server and workers this STATE_DIR
# started, whatever its pid files say.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DATABAZEL_BUILDGRID_VENV:-$ROOT/.local/buildgrid-venv}

usage() { echo "usage: $0 start STATE_DIR PORT [WORKERS] | stop STATE_DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
state=$(realpath -m "$2")

# The pid in PIDFILE if it is this STATE_DIR's server or worker (by its command line).
ours() {
    local pattern="server start $state/bgd.yml "
    case "$1" in */worker-*.pid) pattern="--work-dir $state/work/$(basename "$1" .pid | cut -d- -f2) " ;; esac
    python3 "$ROOT/tools/state_dir.py" pid buildgrid.sh "$1" "$pattern"
}

stop_pids() { # PIDFILE...: TERM to all, then KILL what is left after 5 s
    local pidfile pid pids=()
    for pidfile in "$@"; do
        if [ -f "$pidfile" ] && pid=$(ours "$pidfile"); then pids+=("$pid"); fi
    done
    [ ${#pids[@]} = 0 ] && return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local pid alive
    for _ in $(seq 50); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    [ "$alive" = 1 ] && kill -KILL "${pids[@]}" 2>/dev/null || true
    rm -f "$@"
}

case "$action" in
start)
    [ $# -ge 3 ] && [ $# -le 4 ] || usage
    port=$3
    workers=${4:-2}
    if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65535 ]; then
        echo "$0: PORT must be a number from 1024 to 65535, not '$port'" >&2
        exit 2
    fi
    if ! [[ "$workers" =~ ^[0-9]+$ ]] || [ "$workers" -lt 1 ]; then
        echo "$0: WORKERS must be a positive number, not '$workers'" >&2
        exit 2
    fi
    if [ ! -x "$VENV/bin/bgd" ]; then
        echo "$0: no BuildGrid in $VENV; run ./setup.sh" >&2
        exit 1
    fi
    # Workers link their actions' inputs (symbolic links among them) under work/.
    python3 "$ROOT/tools/state_dir.py" check --mode 0700 --links-under work buildgrid.sh "$state"
    if ours "$state/bgd.pid" >/dev/null 2>&1; then
        echo "$0: already running in $state" >&2
        exit 1
    fi
    mkdir -p "$state/cas" "$state/logs" "$state/work"
    # An empty connection string makes BuildGrid 0.2 create its SQLite
    # database (with its tables) in a temporary file for the server's lifetime.
    conf=$(mktemp "$state/.bgd.yml.XXXXXX")
    cat >"$conf" <<CONF
server:
  - !channel
    address: "127.0.0.1:$port"
    insecure-mode: true
authorization:
  method: none
# One gRPC thread per concurrent call; Bazel keeps one Execute stream open per
# running action and uploads in parallel, and each idle worker holds a long
# poll. BuildGrid's default (5 per CPU) turns those away (RESOURCE_EXHAUSTED).
# It is also the most calls served at once: the rest are refused, and Bazel
# gives up on an upload after 5 retries ("N errors during bulk transfer").
# Bazel 4.2 makes up to 100 calls per connection and opens 100 connections, so
# --config=remote (.bazelrc) keeps it to one (docs/remote-execution.md).
thread-pool-size: 128
connections:
  - !sql-connection &sql
    connection-string: ""
storages:
  - !disk-storage &cas
    path: $state/cas
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    property-set: !dynamic-property-set
      # Accepted from exec_properties, not used to choose a worker.
      wildcard-property-keys: [container-image, OSFamily, dockerNetwork]
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
CONF
    mv -f "$conf" "$state/bgd.yml"
    setsid "$VENV/bin/bgd" server start "$state/bgd.yml" >"$state/logs/bgd.log" 2>&1 </dev/null &
    echo $! >"$state/bgd.pid"
    if ! "$VENV/bin/python" -c "import grpc, sys
try:
    grpc.channel_ready_future(grpc.insecure_channel('127.0.0.1:$port')).result(timeout=120)
except grpc.FutureTimeoutError:
    sys.exit(1)"; then
        stop_pids "$state/bgd.pid"
        if grep -q "Failed to bind to address 127.0.0.1:$port" "$state/logs/bgd.log"; then
            echo "$0: port $port of 127.0.0.1 is in use" >&2
            exit 3
        fi
        echo "$0: BuildGrid did not start on 127.0.0.1:$port; $state/logs/bgd.log says:" >&2
        tail -n 30 "$state/logs/bgd.log" >&2
        exit 1
    fi
    for i in $(seq "$workers"); do
        setsid "$VENV/bin/python" "$ROOT/tests/remote/worker.py" --server "127.0.0.1:$port" \
            --name "worker-$i" --work-dir "$state/work/$i" --cache-dir "$state/work/cache" >"$state/logs/worker-$i.log" 2>&1 </dev/null &
        echo $! >"$state/worker-$i.pid"
    done
    # Ready when every worker has its bot session. (Both waits are long: on a
    # loaded machine BuildGrid took over 30 s to start.)
    for _ in $(seq 600); do
        ready=$(cat "$state"/logs/worker-*.log | grep -c ": connected to " || true)
        [ "$ready" = "$workers" ] && break
        sleep 0.1
    done
    if [ "$ready" != "$workers" ]; then
        echo "$0: only $ready of $workers workers connected; stopping. See $state/logs" >&2
        stop_pids "$state"/worker-*.pid "$state/bgd.pid"
        exit 1
    fi
    echo "buildgrid.sh: BuildGrid on grpc://127.0.0.1:$port with $workers workers (state in $state)"
    ;;
stop)
    [ $# = 2 ] || usage
    stop_pids "$state"/worker-*.pid "$state/bgd.pid"
    echo "buildgrid.sh: stopped ($state)"
    ;;
*) usage ;;
esac
