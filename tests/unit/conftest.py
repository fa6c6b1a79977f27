"""Make databazel/private (runner.py, report.py) importable by the unit tests."""

import sys
from pathlib import Path

PRIVATE = Path(__file__).resolve().parents[2] / "databazel" / "private"
if str(PRIVATE) not in sys.path:
    sys.path.insert(0, str(PRIVATE))
