#!/usr/bin/env bash
# One-command set-up of a databazel checkout on a Debian machine. Idempotent: a
# second run checks everything, changes nothing and takes seconds.
#
#   1. installs Bazel when none is on PATH (Debian's bazel-bootstrap);
#   2. when Bazel cannot download its own dependencies (no network), writes
#      repository overrides to .bazelrc.local (git-ignored) -- and only then;
#   3. prepares the Python environment of the build (@databazel_python, from
#      requirements_lock.txt), the developer environment .venv (tests, ruff),
#      buildifier (npm, into .local/buildifier) and, for the browser test of
#      the HTML reports, Debian's chromium and chromium-driver;
#   4. the servers the tests start (--no-remote skips this): for the remote
#      cache and remote execution tests nginx with WebDAV (Debian's
#      nginx-extras; no service is started) and BuildGrid, pinned in
#      tools/buildgrid-requirements.txt, in .local/buildgrid-venv; for the
#      MLflow export tests an MLflow tracking server, pinned in
#      tools/mlflow-server-requirements.txt, in .local/mlflow-venv;
#   5. writes the MNIST example's data, mnist/data/mnist.npz (real MNIST when it
#      can be downloaded, otherwise scikit-learn's bundled handwritten digits).
#
# Options: --no-data (skip step 5), --no-dev (skip .venv and buildifier),
# --no-remote (skip step 4).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD

want_data=1
want_dev=1
want_remote=1
for arg in "$@"; do
    case "$arg" in
    --no-data) want_data=0 ;;
    --no-dev) want_dev=0 ;;
    --no-remote) want_remote=0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

say() { echo "setup.sh: $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# --- 1. Bazel -----------------------------------------------------------------
MOCK_REPOS=/usr/src/bazel-bootstrap/mock_repos
SKYLIB=/usr/share/bazel/tools/skylib
if ! command -v bazel >/dev/null 2>&1; then
    say "no bazel on PATH; installing Debian's bazel-bootstrap"
    apt_install bazel-bootstrap bazel-bootstrap-source bazel-skylib
elif [ -x /usr/bin/bazel ] && dpkg -s bazel-bootstrap >/dev/null 2>&1 &&
    { [ ! -d "$MOCK_REPOS" ] || [ ! -d "$SKYLIB" ]; }; then
    apt_install bazel-bootstrap-source bazel-skylib
fi
say "bazel: $(command -v bazel)"

# --- Python 3 with venv -------------------------------------------------------
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv
fi

# --- 2. Offline repository overrides -----------------------------------------
# Bazel 4.2's build and test commands download rules_cc, rules_java, ... on
# first use. Without network, Debian's bazel-bootstrap-source ships stand-ins.
LOCAL=$ROOT/.local
mkdir -p "$LOCAL"
if python3 - <<'EOF'; then online=1; else online=0; fi
import socket, sys
try:
    socket.create_connection(("mirror.bazel.build", 443), timeout=5).close()
except OSError:
    sys.exit(1)
EOF
rc_local=$ROOT/.bazelrc.local
begin="# >>> databazel offline overrides (written by setup.sh) >>>"
end="# <<< databazel offline overrides <<<"
existing=""
[ -f "$rc_local" ] && existing=$(sed "/^$begin\$/,/^$end\$/d" "$rc_local")
block=""
if [ "$online" = 0 ]; then
    if [ ! -d "$MOCK_REPOS" ]; then
        say "WARNING: no network and no $MOCK_REPOS; Bazel cannot fetch its own dependencies" >&2
    else
        coverage=$LOCAL/offline_repos/remote_coverage_tools
        if [ ! -f "$coverage/BUILD" ]; then
            mkdir -p "$coverage"
            echo 'workspace(name = "remote_coverage_tools")' >"$coverage/WORKSPACE"
            printf '#!/bin/sh\n# Offline stand-in: coverage reports are not generated.\nexit 0\n' >"$coverage/coverage_report_generator.sh"
            chmod +x "$coverage/coverage_report_generator.sh"
            printf 'sh_binary(\n    name = "coverage_report_generator",\n    srcs = ["coverage_report_generator.sh"],\n    visibility = ["//visibility:public"],\n)\n' >"$coverage/BUILD"
        fi
        flags=""
        for repo in rules_cc rules_java rules_proto rules_pkg platforms remote_java_tools_linux; do
            flags="$flags --override_repository=$repo=$MOCK_REPOS/$repo"
        done
        flags="$flags --override_repository=bazel_skylib=$SKYLIB"
        flags="$flags --override_repository=remote_coverage_tools=$coverage"
        block="$begin
# No network: Bazel's own dependencies come from local copies.
build$flags
query$flags
fetch$flags
sync$flags
$end"
    fi
fi
desired=$(printf '%s\n%s\n' "$existing" "$block" | sed '/./,$!d')
if [ -z "$desired" ]; then
    [ -f "$rc_local" ] && rm -f "$rc_local" && say "removed .bazelrc.local (network available)"
elif [ ! -f "$rc_local" ] || [ "$(cat "$rc_local")" != "$desired" ]; then
    printf '%s\n' "$desired" >"$rc_local"
    say "wrote .bazelrc.local (offline repository overrides)"
fi
[ "$online" = 1 ] && say "network: Bazel downloads its own dependencies" || say "network: offline; using local repository overrides"

# --- 3. Python environments ---------------------------------------------------
say "preparing @databazel_python (the build's interpreter and packages)"
bazel fetch @databazel_python//:toolchain >/dev/null 2>"$LOCAL/fetch.log" || {
    cat "$LOCAL/fetch.log" >&2
    exit 1
}

if [ "$want_dev" = 1 ]; then
    stamp=$(cat requirements_lock.txt requirements-dev.txt | sha256sum | cut -c1-16)
    if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.databazel-stamp 2>/dev/null)" != "$stamp" ]; then
        say "preparing .venv (tests and lint)"
        rm -rf .venv
        python3 -m venv .venv
        .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --only-binary=:all: -r requirements_lock.txt
        .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
        echo "$stamp" >.venv/.databazel-stamp
    fi

    # buildifier (Starlark format and lint) from npm, pinned with its integrity
    # hash in tools/buildifier/package-lock.json, into .local/buildifier.
    bfy=$LOCAL/buildifier
    bfy_stamp=$(cat tools/buildifier/package.json tools/buildifier/package-lock.json | sha256sum | cut -c1-16)
    if [ ! -x "$bfy/node_modules/.bin/buildifier" ] || [ "$(cat "$bfy/.databazel-stamp" 2>/dev/null)" != "$bfy_stamp" ]; then
        command -v npm >/dev/null 2>&1 || apt_install nodejs npm
        say "installing buildifier into .local/buildifier (npm ci)"
        rm -rf "$bfy"
        mkdir -p "$bfy"
        cp tools/buildifier/package.json tools/buildifier/package-lock.json "$bfy/"
        (cd "$bfy" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        echo "$bfy_stamp" >"$bfy/.databazel-stamp"
    fi

    # The browser test of the HTML reports (tests/e2e/test_mnist.py) drives
    # headless Chromium through chromedriver.
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        say "installing Debian's chromium and chromium-driver (the HTML reports' browser test)"
        apt_install chromium chromium-driver
    fi
fi

# --- 4. The servers the tests start ------------------------------------------
if [ "$want_remote" = 1 ]; then
    if ! nginx -V 2>&1 | grep -q -- --with-http_dav_module; then
        say "installing nginx-extras (nginx with WebDAV, for tools/cache_server.sh)"
        # Debian starts services on install unless policy-rc.d says no.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
            as_root chmod 755 "$policy"
            trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
        fi
        apt_install nginx-extras
    fi
    bg=$LOCAL/buildgrid-venv
    bg_stamp=$(sha256sum tools/buildgrid-requirements.txt | cut -c1-16)
    if [ ! -x "$bg/bin/bgd" ] || [ "$(cat "$bg/.databazel-stamp" 2>/dev/null)" != "$bg_stamp" ]; then
        say "installing BuildGrid into .local/buildgrid-venv (tools/buildgrid-requirements.txt)"
        rm -rf "$bg"
        python3 -m venv "$bg"
        "$bg/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: -r tools/buildgrid-requirements.txt
        echo "$bg_stamp" >"$bg/.databazel-stamp"
    fi
    ml=$LOCAL/mlflow-venv
    ml_stamp=$(sha256sum tools/mlflow-server-requirements.txt | cut -c1-16)
    if [ ! -x "$ml/bin/python" ] || [ "$(cat "$ml/.databazel-stamp" 2>/dev/null)" != "$ml_stamp" ]; then
        say "installing an MLflow tracking server into .local/mlflow-venv (tools/mlflow-server-requirements.txt)"
        rm -rf "$ml"
        python3 -m venv "$ml"
        "$ml/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: --no-deps -r tools/mlflow-server-requirements.txt
        echo "$ml_stamp" >"$ml/.databazel-stamp"
    fi
fi

# --- 5. MNIST data ------------------------------------------------------------
if [ "$want_data" = 1 ]; then
    bazel run --ui_event_filters=-info,-stdout,-stderr --noshow_progress //mnist:prepare_data -- --output "$ROOT/mnist/data/mnist.npz"
fi
say "done"
