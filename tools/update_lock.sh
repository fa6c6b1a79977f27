#!/usr/bin/env bash
# Re-resolves requirements.in into the hash-pinned requirements_lock.txt that
# @databazel_python installs. Run after editing requirements.in; commit both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q pip-tools
"$venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links \
    --output-file requirements_lock.txt requirements.in
