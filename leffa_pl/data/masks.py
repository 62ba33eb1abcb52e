"""Garment regions (where the loss looks) from human parsing, and the DensePose region of pose transfer.

The inpaint masks are made by the named recipes of ``leffa_pl.data.mask_recipes``. Pixel sizes here are given
at 512 px image height and scaled with the height of the map they are applied to.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

DressCodeCategory = Literal["upper_body", "lower_body", "dresses"]

REFERENCE_HEIGHT = 512

# CIHP labels (VITON-HD image-parse-v3).
CIHP_UPPER_GARMENT = (5, 6, 7)
CIHP_NECK = 10

# ATR labels (DressCode label_maps).
ATR_REGION = {"upper_body": (4,), "lower_body": (5, 6), "dresses": (7,)}


def scaled(pixels_at_512: float, height: int) -> int:
    """A length given at 512 px image height, scaled to ``height`` (at least 1 px)."""
    return max(1, int(round(pixels_at_512 * height / REFERENCE_HEIGHT)))


def vitonhd_garment_region(parse: np.ndarray) -> np.ndarray:
    """The upper garment as worn (bool): the region the garment image should explain."""
    return np.isin(parse, CIHP_UPPER_GARMENT)


def dresscode_garment_region(labels: np.ndarray, category: DressCodeCategory) -> np.ndarray:
    """The garment of ``category`` as worn (bool)."""
    return np.isin(labels, ATR_REGION[category])


# Pose transfer: DensePose covers the body surface only (not hair, loose clothes, skirts), so its
# foreground is grown by a disc of this diameter (at 512 px height) to cover what the reference explains.
DENSEPOSE_REGION_DILATION = 21


def densepose_foreground_region(parts: np.ndarray) -> np.ndarray:
    """Dilated DensePose foreground (bool): part index != 0, grown by ``DENSEPOSE_REGION_DILATION`` scaled
    to the map's height, so the region covers the same part of the person at every resolution."""
    size = scaled(DENSEPOSE_REGION_DILATION, parts.shape[0])
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate((parts != 0).astype(np.uint8), kernel).astype(bool)
