"""`deps` with a py_library laid out the way rules_python's pip repositories are.

A repository with a `py_library` whose `imports` name a directory of it, built
by hand with the native py_library of Bazel 4.2.3: the layout of older pip
rules (`srcs` under `site-packages/`, `imports = ["site-packages"]`).
rules_python 0.9.0's own `pip_parse` repositories are tested in
test_rules_python.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from bazel_harness import Workspace


def test_py_library_imports_from_another_repository(
    ws: Workspace, tmp_path: Path
) -> None:
    pypi = tmp_path / "pypi_fakepkg"
    (pypi / "site-packages" / "fakepkg").mkdir(parents=True)
    (pypi / "WORKSPACE").write_text('workspace(name = "pypi_fakepkg")\n')
    (pypi / "BUILD").write_text(
        "py_library(\n"
        '    name = "pkg",\n'
        '    srcs = glob(["site-packages/**/*.py"]),\n'
        '    imports = ["site-packages"],\n'
        '    visibility = ["//visibility:public"],\n'
        ")\n"
    )
    (pypi / "site-packages" / "fakepkg" / "__init__.py").write_text(
        'VALUE = "from a pip-style package"\n'
    )
    ws.write(
        "pipdeps/train.py",
        """
        import argparse
        import json
        import os

        import fakepkg

        parser = argparse.ArgumentParser()
        for flag in ("--data", "--model-output-path", "--hyperparams"):
            parser.add_argument(flag, required=True)
        args = parser.parse_args()
        with open(args.model_output_path, "w") as f:
            # Where the module really is (a warm worker imports it through links).
            json.dump({"value": fakepkg.VALUE, "file": os.path.realpath(fakepkg.__file__)}, f)
        """,
    )
    ws.write("pipdeps/data.txt", "x\n")
    ws.write(
        "pipdeps/BUILD",
        """
        load("@databazel//databazel:defs.bzl", "model")

        model(
            name = "m",
            train_executable = "train.py",
            training_data = "data.txt",
            deps = ["@pypi_fakepkg//:pkg"],
        )
        """,
    )
    with ws.workspace_addition(
        f"""
        local_repository(
            name = "pypi_fakepkg",
            path = "{pypi}",
        )
        """
    ):
        ws.build("//pipdeps:m")
    model = json.loads(ws.bin("pipdeps/m.model").read_text())
    assert model["value"] == "from a pip-style package"
    assert model["file"].endswith("pypi_fakepkg/site-packages/fakepkg/__init__.py")
