#!/usr/bin/env bash
# Lint and format: buildifier for Starlark, ruff for Python. Both tools are
# pinned and installed by ./setup.sh (buildifier from npm into .local/buildifier,
# ruff into .venv from requirements-dev.txt).
#
#   tools/lint.sh              # check the whole checkout (tests/test_lint.py runs this)
#   tools/lint.sh --fix        # reformat and apply the automatic lint fixes
#   tools/lint.sh [--fix] PATH...   # only these files or directories
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILDIFIER=${BUILDIFIER:-.local/buildifier/node_modules/.bin/buildifier}
RUFF=${RUFF:-.venv/bin/ruff}
for tool in "$BUILDIFIER" "$RUFF"; do
    if [ ! -x "$tool" ]; then
        echo "tools/lint.sh: $tool is missing; run ./setup.sh first" >&2
        exit 1
    fi
done

fix=0
if [ "${1:-}" = --fix ]; then
    fix=1
    shift
fi
[ $# -gt 0 ] || set -- .

# Starlark files, leaving out what is not ours: generated or installed trees and
# Bazel's convenience symlinks.
starlark=()
while IFS= read -r -d '' f; do
    starlark+=("$f")
done < <(find "$@" \( -name .git -o -name .local -o -name .venv -o -name node_modules -o -name 'bazel-*' \) -prune \
    -o -type f \( -name BUILD -o -name BUILD.bazel -o -name WORKSPACE -o -name MODULE.bazel -o -name '*.bzl' \) -print0 | sort -z)

status=0
if [ "$fix" = 1 ]; then
    [ ${#starlark[@]} = 0 ] || "$BUILDIFIER" -lint=fix "${starlark[@]}" || status=1
    "$RUFF" check --fix "$@" || status=1
    "$RUFF" format "$@" || status=1
else
    [ ${#starlark[@]} = 0 ] || "$BUILDIFIER" -mode=check -lint=warn "${starlark[@]}" || status=1
    "$RUFF" check "$@" || status=1
    "$RUFF" format --check "$@" || status=1
fi
if [ "$status" != 0 ]; then
    echo "tools/lint.sh: problems found; \`tools/lint.sh --fix\` fixes formatting and most lint" >&2
fi
exit $status
