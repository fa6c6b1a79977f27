"""tools/newer_bazel.bazelrc: the --incompatible_* flags later Bazel releases flipped.

Every workspace of this repository imports the file (this checkout's
.bazelrc, examples/.bazelrc, the fixture workspaces of tests/bazel_harness.py),
so every Bazel test runs with them; tests/e2e/test_flipped_flags.py checks that
Bazel applies them. This file checks the list itself, without Bazel.
"""

from __future__ import annotations

import re

from bazel_harness import NEWER_BAZEL_RC, REPO

# The flags, each with the release that flipped it ("?" where not known),
# and what they concern. A change to the rc file must change this too.
FLIPPED = {
    "incompatible_disable_depset_items": "5.0",
    "incompatible_override_toolchain_transition": "5.0",
    "incompatible_enforce_config_setting_visibility": "6.0",
    "incompatible_use_platforms_repo_for_constraints": "6.0",
    "incompatible_visibility_private_attributes_at_definition": "7.0",
    "noincompatible_legacy_local_fallback": "7.0",
    "incompatible_exclusive_test_sandboxed": "7.0",
    "incompatible_disallow_empty_glob": "8.0",
    "incompatible_struct_has_no_methods": "8.0",
    "incompatible_top_level_aspects_require_providers": "8.0",
    "incompatible_disallow_struct_provider_syntax": "?",
    "incompatible_disable_target_provider_fields": "?",
}

# Flags of Bazel 4.2.3 that change the Starlark semantics (BuildLanguageOptions):
# they must reach every command (`common`), or Bazel fetches the repositories
# again each time a command without them runs.
STARLARK = {
    "incompatible_disable_depset_items",
    "incompatible_visibility_private_attributes_at_definition",
    "incompatible_disallow_empty_glob",
    "incompatible_struct_has_no_methods",
    "incompatible_top_level_aspects_require_providers",
    "incompatible_disallow_struct_provider_syntax",
    "incompatible_disable_target_provider_fields",
}


def rc_flags() -> dict[str, tuple[str, str]]:
    """{flag: (command, the comment above it)} of tools/newer_bazel.bazelrc."""
    flags, comment = {}, ""
    for line in NEWER_BAZEL_RC.read_text().splitlines():
        if line.startswith("#"):
            comment = line
        elif line.strip():
            command, flag = line.split()
            assert flag.startswith("--") and flag[2:] not in flags, line
            flags[flag[2:]] = (command, comment)
            comment = ""
    return flags


def test_the_rc_file_lists_each_flag_with_its_release() -> None:
    flags = rc_flags()
    assert set(flags) == set(FLIPPED)
    for flag, (command, comment) in flags.items():
        release = FLIPPED[flag]
        if release == "?":
            assert "release not known" in comment, (flag, comment)
        else:
            assert comment.startswith(f"# {release} "), (flag, comment)
        assert command == ("common" if flag in STARLARK else "build"), flag


def test_every_workspace_of_the_repository_imports_it() -> None:
    assert (
        "import %workspace%/tools/newer_bazel.bazelrc"
        in (REPO / ".bazelrc").read_text()
    )
    assert (
        "import %workspace%/../tools/newer_bazel.bazelrc"
        in (REPO / "examples/.bazelrc").read_text()
    )
    harness = (REPO / "tests/bazel_harness.py").read_text()
    assert re.search(r'f"import \{NEWER_BAZEL_RC\}"', harness)
