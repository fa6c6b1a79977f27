#!/usr/bin/env bash
# The test command: every test of databazel, from a checkout prepared by ./setup.sh.
#
#   tools/test.sh                          # everything
#   tools/test.sh -k report                # extra arguments go to pytest
#   tools/test.sh tests/e2e/test_core.py   # only these (pytest.ini's testpaths otherwise)
#
# pytest runs the unit tests of the runner, the report and the MNIST data code
# (tests/unit), the Starlark unit tests through `bazel test` (tests/starlark),
# and the end-to-end tests that drive real Bazel builds (tests/e2e).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    echo "tools/test.sh: no .venv; run ./setup.sh first" >&2
    exit 1
fi
exec .venv/bin/python -m pytest "$@"
