"""Training data from a URL: an `http_file` with a pinned sha256, served over loopback."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bazel_harness import Workspace


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requests.append(self.path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving a directory: (directory, base URL, paths requested)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = functools.partial(
        type("Handler", (_Handler,), {"requests": requests}), directory=str(served)
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_http_file_training_data_is_pinned_by_sha256(
    ws: Workspace, server: tuple[Path, str, list[str]], tmp_path: Path
) -> None:
    served, url, requests = server
    # Unique bytes, so no repository cache already holds them.
    original = f"x,y\n1,2\n3,4\n# {uuid.uuid4()}\n".encode()
    changed = original.replace(b"3,4", b"3,5")
    pinned = hashlib.sha256(original).hexdigest()
    (served / "rows.csv").write_bytes(original)
    ws.write(
        "http/BUILD",
        """
        load("@databazel//databazel:defs.bzl", "model")

        model(
            name = "m",
            train_executable = "//scripts:train.py",
            training_data = "@served_rows//file",
            deps = ["//lib:fixturelib"],
        )
        """,
    )
    cache = f"--repository_cache={tmp_path / 'repository_cache'}"
    with ws.workspace_addition(
        f"""
        load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_file")

        http_file(
            name = "served_rows",
            downloaded_file_path = "rows.csv",
            sha256 = "{pinned}",
            urls = ["{url}/rows.csv"],
        )
        """
    ):
        ws.build("//http:m", flags=(cache,))
        assert requests == ["/rows.csv"]
        model = json.loads(ws.bin("http/m.model").read_text())
        assert model["data"] == pinned  # the script read the served bytes
        data_arg = model["argv"][model["argv"].index("--data") + 1]
        assert data_arg.endswith("served_rows/file/rows.csv")

        # The file changes on the server. Fetching it again (here: with an
        # empty repository cache, as on a new machine) fails with Bazel's
        # checksum error instead of training on other data.
        (served / "rows.csv").write_bytes(changed)
        cold = f"--repository_cache={tmp_path / 'cold_repository_cache'}"
        expected = (
            f"Checksum was {hashlib.sha256(changed).hexdigest()} but wanted {pinned}"
        )
        sync = ws.bazel("sync", "--only=served_rows", cold)
        assert sync.returncode != 0
        assert expected in sync.stderr, sync.stderr[-3000:]
        build = ws.build("//http:m", check=False, flags=(cold,))
        assert build.returncode != 0
        assert expected in build.stderr, build.stderr[-3000:]
        assert requests == ["/rows.csv"] * 3
