"""The shared contract checker (run directories, benchmark results), when present.

``../shared/tools/check_contracts.py`` lives next to the repository in the
project's workspace, not inside it; a clone elsewhere lacks it, and the tests
then rely on their own assertions about the files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO.parent / "shared" / "tools" / "check_contracts.py"


def check_contract(kind: str, path: Path) -> None:
    """Run the checker on a run directory (``run``) or results folder (``results``)."""
    if CHECKER.is_file():
        subprocess.run([sys.executable, str(CHECKER), kind, str(path)], check=True)
