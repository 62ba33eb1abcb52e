"""Facts of the dataset layouts shared by more than one dataset (each written once here)."""

from __future__ import annotations

import argparse

# Extra folder of the synthetic datasets: exact person -> garment flow per person image ({id}.npz, key "flow").
FLOW_FOLDER = "ground-truth-flow"
FLOW_KEY = "flow"
# DensePose part indices I: 0 = background, 1..24 body parts (every dataset's DensePose encoding).
DENSEPOSE_PARTS = 24


class SizeFormatError(ValueError, argparse.ArgumentTypeError):
    """Text that is not ``HxW``; argparse shows its message as the option's error."""


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (e.g. ``512x384``) -> ``(H, W)``, both positive."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SizeFormatError(f"expected HxW (e.g. 512x384), got {text!r}") from None
    if height <= 0 or width <= 0:
        raise SizeFormatError(f"expected a positive HxW, got {text!r}")
    return height, width
