import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LEFFA_SHARED", REPO_ROOT.parent / "shared"))
OFFICIAL_TINY = SHARED / "fixtures" / "official-tiny"

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one thread per xdist worker: no oversubscription on small machines


@pytest.fixture(scope="session")
def official_tiny() -> Path:
    if not (OFFICIAL_TINY / "leffa_tiny.pth").is_file():
        pytest.fail(f"missing fixture {OFFICIAL_TINY}: the repository expects ../shared beside it "
                    "(or LEFFA_SHARED pointing at it)")
    return OFFICIAL_TINY
