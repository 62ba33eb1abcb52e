"""The device an annotator network runs on."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> str:
    """``auto``: CUDA when present, else CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
