"""Tests for databazel/private/env_layout.py: one py_library's files per distribution."""

from __future__ import annotations

from pathlib import Path

import env_layout


def _install(site: Path, name: str, files: dict[str, str], requires: str = "") -> None:
    dist_info = site / f"{name}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{requires}"
    )
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    # As pip writes it: the console script's hash depends on the venv's path.
    record = [f"{rel},sha256=x,1" for rel in files]
    record += [f"{name}-1.0.dist-info/METADATA,,", f"{name}-1.0.dist-info/RECORD,,"]
    record += [f"../../../bin/{name}-cli,sha256=depends-on-the-venv-path,99"]
    (dist_info / "RECORD").write_text("\n".join(record) + "\n")


def test_each_distribution_gets_its_files_but_no_record(tmp_path: Path) -> None:
    site = tmp_path / "venv/lib/python3.11/site-packages"
    _install(site, "alpha", {"alpha/__init__.py": "", "alpha/core.so": ""})
    _install(site, "beta", {"beta.py": ""}, "Requires-Dist: alpha\n")
    result = env_layout.layout(str(tmp_path / "venv"), set())
    prefix = result["site_packages"]
    alpha = result["distributions"]["alpha"]
    assert alpha["srcs"] == [f"{prefix}/alpha/__init__.py"]
    assert sorted(alpha["data"]) == [
        f"{prefix}/alpha-1.0.dist-info/METADATA",
        f"{prefix}/alpha/core.so",
    ]
    assert alpha["modules"] == ["alpha"]
    beta = result["distributions"]["beta"]
    assert beta["deps"] == ["alpha"] and beta["modules"] == ["beta"]
    everything = [f for d in result["distributions"].values() for f in d["data"]]
    assert not [f for f in everything if f.endswith("/RECORD")]
