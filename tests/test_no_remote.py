"""`./setup.sh --no-remote`: without nginx's WebDAV and BuildGrid, the tests of the
cache and remote servers are skipped, saying why, instead of failing."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bazel_harness import REPO

# Every test that starts tools/cache_server.sh or tools/buildgrid.sh.
SERVER_TESTS = [
    "tests/e2e/test_remote.py::test_a_warm_http_cache_serves_a_search_to_an_empty_output_base",
    "tests/e2e/test_remote.py::test_stopping_the_cache_server_mid_build_still_ends_in_a_correct_local_build",
    "tests/e2e/test_remote.py::test_remote_execution_on_two_workers_matches_a_local_build_byte_for_byte",
    "tests/e2e/test_remote.py::test_a_trial_failing_remotely_reports_its_stderr_as_locally",
    "tests/e2e/test_remote.py::test_exec_properties_of_a_search_reach_each_of_its_remote_actions",
    "tests/e2e/test_remote.py::test_a_search_importing_scikit_learn_runs_remotely_from_an_empty_grid_first_try",
    "tests/e2e/test_hostile.py::test_a_cache_requiring_credentials_refuses_anonymous_writes",
    "tests/e2e/test_hostile.py::test_a_cache_state_another_user_prepared_is_refused_and_stop_kills_only_ours",
]


def test_without_the_servers_their_tests_are_skipped_with_a_reason(tmp_path) -> None:
    # No nginx on PATH (it is in /usr/sbin), no BuildGrid venv.
    path = [d for d in os.environ["PATH"].split(os.pathsep) if "sbin" not in d]
    env = {
        **os.environ,
        "PATH": os.pathsep.join(path),
        "DATABAZEL_BUILDGRID_VENV": str(tmp_path / "no-buildgrid"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-rs",
            "-p",
            "no:cacheprovider",
            *SERVER_TESTS,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(rf"\b{len(SERVER_TESTS)} skipped in ", proc.stdout), proc.stdout[
        -3000:
    ]
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    nginx = (
        "needs nginx with WebDAV (tools/cache_server.sh), which `./setup.sh "
        "--no-remote` does not install; run ./setup.sh"
    )
    buildgrid = (
        f"needs BuildGrid in {tmp_path / 'no-buildgrid'} (tools/buildgrid.sh), which "
        "`./setup.sh --no-remote` does not install; run ./setup.sh"
    )
    # (Without root, one of the nginx tests skips for want of a second user.)
    assert sum(line.endswith(nginx) for line in skips) == (
        4 if os.geteuid() == 0 else 3
    ), skips
    assert sum(line.endswith(buildgrid) for line in skips) == 4, skips
