#!/usr/bin/env bash
# An HTTP remote cache for Bazel on 127.0.0.1: nginx serving a WebDAV store
# (GET/PUT of /ac/<sha256> and /cas/<sha256>). No system service is involved:
# the configuration, pid file, logs and store all live under STATE_DIR.
#
#   tools/cache_server.sh start STATE_DIR PORT   # then: bazel build --remote_cache=http://127.0.0.1:PORT ...
#   tools/cache_server.sh stop STATE_DIR
#
# Needs nginx with the dav module (Debian: nginx-extras; ./setup.sh installs it).
# Run as root, nginx's workers run as www-data, which gets the store; STATE_DIR
# must then be traversable by www-data (for example a directory made directly
# under /tmp). PORT must be unprivileged (1024-65535).
set -euo pipefail

usage() { echo "usage: $0 start STATE_DIR PORT | stop STATE_DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
state=$(realpath -m "$2")
pidfile=$state/nginx.pid

case "$action" in
start)
    [ $# = 3 ] || usage
    port=$3
    if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65535 ]; then
        echo "$0: PORT must be a number from 1024 to 65535, not '$port'" >&2
        exit 2
    fi
    command -v nginx >/dev/null || { echo "$0: no nginx on PATH; run ./setup.sh" >&2; exit 1; }
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "$0: already running in $state (pid $(cat "$pidfile"))" >&2
        exit 1
    fi
    mkdir -p "$state/store" "$state/tmp" "$state/logs"
    user_line=""
    if [ "$(id -u)" = 0 ]; then
        user_line="user www-data;"
        chmod 755 "$state"
        chown www-data: "$state/store" "$state/tmp"
        if ! runuser -u www-data -- test -w "$state/store"; then
            echo "$0: nginx's worker user www-data cannot write $state/store; choose a STATE_DIR whose parents it can traverse (for example under /tmp)" >&2
            exit 1
        fi
    fi
    cat >"$state/nginx.conf" <<CONF
$user_line
worker_processes 1;
pid $pidfile;
error_log $state/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log $state/logs/access.log;
    client_body_temp_path $state/tmp;
    proxy_temp_path $state/tmp;
    fastcgi_temp_path $state/tmp;
    uwsgi_temp_path $state/tmp;
    scgi_temp_path $state/tmp;
    server {
        listen 127.0.0.1:$port;
        root $state/store;
        client_max_body_size 0;
        dav_methods PUT;
        create_full_put_path on;
        dav_access user:rw group:r all:r;
    }
}
CONF
    nginx -q -p "$state" -e "$state/logs/error.log" -c "$state/nginx.conf"
    # Ready when the port answers (a miss is a 404).
    for _ in $(seq 50); do
        if python3 -c "import urllib.request, sys
try:
    urllib.request.urlopen('http://127.0.0.1:$port/ac/ready', timeout=1)
except urllib.error.HTTPError:
    sys.exit(0)
except OSError:
    sys.exit(1)" 2>/dev/null; then
            echo "cache_server.sh: serving $state/store on http://127.0.0.1:$port (pid $(cat "$pidfile"))"
            exit 0
        fi
        sleep 0.1
    done
    echo "$0: nginx did not answer on 127.0.0.1:$port; see $state/logs/error.log:" >&2
    tail -n 20 "$state/logs/error.log" >&2 || true
    exit 1
    ;;
stop)
    [ $# = 2 ] || usage
    if [ ! -f "$pidfile" ]; then
        echo "cache_server.sh: not running in $state"
        exit 0
    fi
    pid=$(cat "$pidfile")
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "cache_server.sh: stopped (pid $pid)"
    ;;
*) usage ;;
esac
