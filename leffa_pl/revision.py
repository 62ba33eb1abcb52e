"""The commit the code runs from, for the headers of generated results (docs/fits.md, benchmarks/results/)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def commit() -> str:
    """``git describe --always --dirty`` of the repository (``unknown`` outside a git checkout)."""
    result = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False,
                            cwd=REPOSITORY)
    return result.stdout.strip() or "unknown"
