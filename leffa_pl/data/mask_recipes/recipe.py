"""What a mask recipe declares (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

LabelSet = Literal["atr", "atr-neck", "cihp"]
KeypointFormat = Literal["coco18", "body25"]
CATEGORIES = ("upper_body", "lower_body", "dresses")


@dataclass(frozen=True)
class MaskRecipe:
    name: str
    source: str  # repository@commit, file, function
    label_set: LabelSet
    keypoint_format: KeypointFormat
    frame: tuple[int, int] | None  # (H, W) the recipe computes at; None: the output size
    categories: tuple[str, ...]
    compute: Callable[[np.ndarray, np.ndarray, str], np.ndarray]  # (labels, keypoints, category) -> bool [H, W]

    def describe(self) -> str:
        """E.g. ``leffa-hd (franciszzj/Leffa@7848bedf leffa_utils/utils.py get_agnostic_mask_hd)``."""
        return f"{self.name} ({self.source})"
