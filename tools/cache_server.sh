#!/usr/bin/env bash
# An HTTP remote cache for Bazel on 127.0.0.1: nginx serving a WebDAV store
# (GET/PUT of /ac/<sha256> and /cas/<sha256>). No system service is involved:
# the configuration, pid file, logs and store all live under STATE_DIR.
#
#   tools/cache_server.sh start [--writers FILE] [--readers FILE] STATE_DIR PORT
#   tools/cache_server.sh stop STATE_DIR
#
# then: bazel build --remote_cache=http://[USER:PASSWORD@]127.0.0.1:PORT ...
#
# Credentials (docs/reliability.md, "Who may write to a cache"): FILE holds one
# `user:password` per line. --writers FILE: every request but GET and HEAD
# (that is, every upload) needs the credentials of a writer; without it anyone
# who reaches the port can overwrite any entry. --readers FILE: GET and HEAD
# need those of a reader or a writer too. Passwords are stored salted and
# hashed ({SSHA}) in STATE_DIR.
#
# Needs nginx with the dav module (Debian: nginx-extras; ./setup.sh installs it).
# Run as root, nginx's workers run as www-data, which gets the store; STATE_DIR
# must then be traversable by www-data (for example a directory made directly
# under /tmp). PORT must be unprivileged (1024-65535); exit status 3: it is in use.
#
# On a machine with other users (tools/state_dir.py): STATE_DIR must be yours
# (made, mode 0700, or 0711 for root, if missing), and nothing in or above it
# may be another user's to change; the store is readable only by the server
# (files 0600), it serves no symbolic link, and `stop` stops only the nginx
# this STATE_DIR started, whatever a pid file says.
set -euo pipefail
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { echo "usage: $0 start [--writers FILE] [--readers FILE] STATE_DIR PORT | stop STATE_DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
shift
writers=""
readers=""
while [ "$action" = start ] && [ $# -gt 0 ]; do
    case "$1" in
    --writers) [ $# -ge 2 ] || usage; writers=$(realpath "$2"); shift 2 ;;
    --readers) [ $# -ge 2 ] || usage; readers=$(realpath "$2"); shift 2 ;;
    --*) usage ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || usage
state=$(realpath -m "$1")
pidfile=$state/nginx.pid
# The nginx of this STATE_DIR: its master's command line names its configuration.
ours() { python3 "$TOOLS/state_dir.py" pid cache_server.sh "$pidfile" " -c $state/nginx.conf "; }

# Writes an nginx user file ({SSHA}: salted SHA-1) from `user:password` lines.
htpasswd() {
    python3 - "$@" <<'PY'
import base64, hashlib, os, sys
out, sources = sys.argv[1], sys.argv[2:]
lines = []
for source in sources:
    with open(source, encoding="utf-8") as f:
        for number, line in enumerate(f.read().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            user, colon, password = line.partition(":")
            if not colon or not user or not password or user != user.strip():
                sys.exit(f"cache_server.sh: {source}:{number}: expected user:password")
            salt = os.urandom(8)
            digest = hashlib.sha1(password.encode() + salt).digest()
            lines.append(f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n")
if not lines:
    sys.exit(f"cache_server.sh: no user:password line in {' '.join(sources)}")
tmp = f"{out}.{os.getpid()}"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.writelines(lines)
os.replace(tmp, out)
PY
}

case "$action" in
start)
    [ $# = 2 ] || usage
    port=$2
    if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65535 ]; then
        echo "$0: PORT must be a number from 1024 to 65535, not '$port'" >&2
        exit 2
    fi
    command -v nginx >/dev/null || { echo "$0: no nginx on PATH; run ./setup.sh" >&2; exit 1; }
    if [ "$(id -u)" = 0 ]; then
        python3 "$TOOLS/state_dir.py" check --mode 0711 --owner www-data cache_server.sh "$state"
    else
        python3 "$TOOLS/state_dir.py" check --mode 0700 cache_server.sh "$state"
    fi
    if pid=$(ours 2>/dev/null); then
        echo "$0: already running in $state (pid $pid)" >&2
        exit 1
    fi
    mkdir -p "$state/store" "$state/tmp" "$state/logs"
    chmod 700 "$state/store" "$state/tmp" "$state/logs"
    chmod -R go= "$state/store"  # blobs of an older start were world-readable
    user_line=""
    if [ "$(id -u)" = 0 ]; then
        user_line="user www-data;"
        chmod 711 "$state"
        chown -h www-data: "$state/store" "$state/tmp"
        if ! runuser -u www-data -- test -w "$state/store"; then
            echo "$0: nginx's worker user www-data cannot write $state/store; choose a STATE_DIR whose parents it can traverse (for example under /tmp)" >&2
            exit 1
        fi
    fi
    # Who may read and write (see the header).
    access=""
    rm -f "$state/writers.htpasswd" "$state/readers.htpasswd"
    if [ -n "$readers" ]; then
        htpasswd "$state/readers.htpasswd" "$readers" ${writers:+"$writers"}
        access+="auth_basic \"databazel cache\"; auth_basic_user_file $state/readers.htpasswd;"
    fi
    if [ -n "$writers" ]; then
        htpasswd "$state/writers.htpasswd" "$writers"
        access+=" limit_except GET { auth_basic \"databazel cache (writes)\"; auth_basic_user_file $state/writers.htpasswd; }"
    fi
    for f in "$state"/*.htpasswd; do
        [ -e "$f" ] || continue
        chmod 640 "$f"
        [ "$(id -u)" != 0 ] || chgrp www-data "$f"
    done
    conf=$(mktemp "$state/.nginx.conf.XXXXXX")
    cat >"$conf" <<CONF
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
        dav_access user:rw;
        disable_symlinks on;
        location / { $access }
    }
}
CONF
    mv -f "$conf" "$state/nginx.conf"
    if ! out=$(nginx -q -p "$state" -e "$state/logs/error.log" -c "$state/nginx.conf" 2>&1); then
        if grep -q "Address already in use" <<<"$out"; then
            echo "$0: port $port of 127.0.0.1 is in use" >&2
            exit 3
        fi
        echo "$out" >&2
        exit 1
    fi
    # Ready when the port answers (a miss is a 404).
    for _ in $(seq 50); do
        if python3 -c "import urllib.request, sys
try:
    urllib.request.urlopen('http://127.0.0.1:$port/ac/ready', timeout=1)
except urllib.error.HTTPError:
    sys.exit(0)
except OSError:
    sys.exit(1)" 2>/dev/null; then
            echo "cache_server.sh: serving $state/store on http://127.0.0.1:$port (pid $(cat "$pidfile"))${writers:+; writes need credentials}${readers:+; reads need credentials}"
            exit 0
        fi
        sleep 0.1
    done
    echo "$0: nginx did not answer on 127.0.0.1:$port; see $state/logs/error.log:" >&2
    tail -n 20 "$state/logs/error.log" >&2 || true
    exit 1
    ;;
stop)
    [ $# = 1 ] || usage
    if ! pid=$(ours); then
        echo "cache_server.sh: not running in $state"
        exit 0
    fi
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
