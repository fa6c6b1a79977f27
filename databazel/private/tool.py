"""The one entry point of databazel's tools: ``python3 -S tool.py NAME ARGS...``.

Every action and every ``bazel run``/``bazel test`` launcher of databazel
starts this file with the name of a tool (one of TOOLS, a module beside it)
and that tool's arguments. It does the two things each tool would otherwise
repeat:

* it puts the directory the action sees first on ``sys.path`` and drops the
  directory a symbolic link resolves to, so that the tools import their
  sibling modules from the action's inputs, never from the source tree
  (a module missing from a tool's ``<tool>_modules`` filegroup fails to
  import instead of being found there);
* whatever escapes the tool's ``main(argv)`` becomes one line,
  ``databazel: error: TARGET: ...`` (TARGET from ``--target``): the message of
  a RunnerError or OSError, ``internal error in the databazel NAME: ...`` for
  anything else, never a traceback.

A tool that must remove half-written outputs on failure does it itself
(outputs.run_tool).
"""

from __future__ import annotations

import importlib
import os
import sys

TOOLS = (
    "card",
    "gate",
    "html_report",
    "leaderboard",
    "mlflow_export",
    "plot",
    "report",
    "rung",
    "runner",
    "suggest",
)

_HERE = os.path.dirname(os.path.abspath(__file__))
_RESOLVED = os.path.dirname(os.path.realpath(__file__))


def _target(argv: list[str]) -> str:
    """The label after ``--target`` in `argv`, for the error line."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "--target":
            return value
    for arg in argv:
        if arg.startswith("--target="):
            return arg.split("=", 1)[1]
    return "databazel"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TOOLS:
        print(
            f"usage: tool.py NAME ARGS..., NAME one of {', '.join(TOOLS)}",
            file=sys.stderr,
        )
        return 2
    name, args = argv[0], argv[1:]
    sys.path[:] = [_HERE, *(p for p in sys.path if p not in (_HERE, _RESOLVED))]
    try:
        return importlib.import_module(name).main(args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - any failure is one error, never a traceback
        from contract import RunnerError, error_line

        if isinstance(e, (RunnerError, OSError)):
            message = str(e)
        else:
            message = f"internal error in the databazel {name}: {type(e).__name__}: {e}"
        print(error_line(_target(args), message), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
