"""Garment-agnostic inpaint masks and garment regions from human parsing + keypoints.

The recipes follow the reference description (datasets.md, "Garment-agnostic masks"): mask the
garment labels of the category, add thick arm lines shoulder -> elbow -> wrist, repaint the neck,
dilate and fill holes, and never repaint the fixed parts (head, hair, shoes, hands, the other body
half, ...): ``inpaint = fill_holes(dilate(core)) & ~fixed``. Pixel sizes are given at 512 px image
height and scaled with the height of the label map they are applied to, so a mask computed at
512x384 and one computed at 1024x768 cover the same part of the body.

Keypoints are [K, 2] float arrays (x, y) in the label map's pixel frame, NaN where missing. BODY_25
(VITON-HD) and COCO-18 (DressCode) agree on the arm indices used here.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy import ndimage

DressCodeCategory = Literal["upper_body", "lower_body", "dresses"]

# Arm indices shared by BODY_25 and COCO-18: (shoulder, elbow, wrist) for the right and left arm.
RIGHT_ARM = (2, 3, 4)
LEFT_ARM = (5, 6, 7)

REFERENCE_HEIGHT = 512
# The reference dilates 5 times with a 10x10 kernel at 512 px height: one square of 5 * 9 + 1 px, which
# scales smoothly with the height (iterating a rounded small kernel would not).
DILATION_SIZE = 46
NECK_OFFSET = 20

# CIHP labels (VITON-HD image-parse-v3).
CIHP_UPPER_GARMENT = (5, 6, 7)
CIHP_NECK = 10
CIHP_ARMS = {RIGHT_ARM: 15, LEFT_ARM: 14}
CIHP_FIXED = (1, 2, 3, 4, 8, 9, 11, 12, 13, 16, 17, 18, 19)  # head, gloves, scarf, lower body, shoes
CIHP_ARM_WIDTH = 45

# ATR labels (DressCode label_maps).
ATR_HEAD = 11
ATR_ARMS = {RIGHT_ARM: 15, LEFT_ARM: 14}
ATR_GARMENT = {"upper_body": (4,), "lower_body": (5, 6, 12, 13), "dresses": (4, 5, 6, 7, 12, 13)}
ATR_CORE_EXTRA = {"upper_body": (), "lower_body": (8,), "dresses": (8,)}  # the belt goes with the garment
ATR_FIXED = {
    "upper_body": (1, 2, 3, 5, 6, 8, 9, 10, 12, 13, 16, 17),
    "lower_body": (1, 2, 3, 4, 7, 9, 10, 11, 14, 15, 16, 17),
    "dresses": (1, 2, 3, 9, 10, 16, 17),
}
ATR_ARM_WIDTH = {"upper_body": 45, "dresses": 60}
ATR_REGION = {"upper_body": (4,), "lower_body": (5, 6), "dresses": (7,)}


def scaled(pixels_at_512: float, height: int) -> int:
    """A length given at 512 px image height, scaled to ``height`` (at least 1 px)."""
    return max(1, int(round(pixels_at_512 * height / REFERENCE_HEIGHT)))


def _valid(point: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(point)))


def _arm_lines(labels: np.ndarray, keypoints: np.ndarray, arm_labels: dict[tuple[int, int, int], int],
               width: int) -> np.ndarray:
    """Thick polylines along each arm; an arm without its three keypoints is taken whole from the labels."""
    lines = np.zeros(labels.shape, np.uint8)
    for joints, label in arm_labels.items():
        points = keypoints[list(joints)] if len(keypoints) > max(joints) else np.full((3, 2), np.nan)
        if not all(_valid(p) for p in points):
            lines[labels == label] = 1
            continue
        pts = np.round(points).astype(np.int32)
        for start, end in zip(pts[:-1], pts[1:]):
            cv2.line(lines, tuple(int(v) for v in start), tuple(int(v) for v in end), 1, width)
        for point in pts:
            cv2.circle(lines, tuple(int(v) for v in point), width // 2, 1, -1)
    return lines.astype(bool)


def _below_shoulder_line(shape: tuple[int, int], keypoints: np.ndarray, offset: int) -> np.ndarray:
    """Pixels below the line through both shoulders, raised by ``offset`` (the neck), or none."""
    if len(keypoints) <= LEFT_ARM[0]:
        return np.zeros(shape, bool)
    right, left = keypoints[RIGHT_ARM[0]], keypoints[LEFT_ARM[0]]
    if not (_valid(right) and _valid(left)) or abs(left[0] - right[0]) < 1:
        return np.zeros(shape, bool)
    slope = (left[1] - right[1]) / (left[0] - right[0])
    xs = np.arange(shape[1], dtype=np.float32)
    line_y = right[1] + slope * (xs - right[0]) - offset
    return np.arange(shape[0], dtype=np.float32)[:, None] > line_y[None, :]


def _finish(core: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    height = core.shape[0]
    kernel = np.ones((scaled(DILATION_SIZE, height),) * 2, np.uint8)
    dilated = cv2.dilate(core.astype(np.uint8), kernel).astype(bool)
    return ndimage.binary_fill_holes(dilated) & ~fixed


def vitonhd_inpaint_mask(parse: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Upper-garment inpaint mask (bool, True = repaint) from a CIHP parsing and BODY_25 keypoints."""
    height = parse.shape[0]
    lines = _arm_lines(parse, keypoints, CIHP_ARMS, scaled(CIHP_ARM_WIDTH, height))
    arms = np.isin(parse, tuple(CIHP_ARMS.values()))
    core = np.isin(parse, CIHP_UPPER_GARMENT) | (parse == CIHP_NECK) | lines
    fixed = np.isin(parse, CIHP_FIXED) | (arms & ~lines)  # hands stay
    return _finish(core, fixed)


def vitonhd_garment_region(parse: np.ndarray) -> np.ndarray:
    """The upper garment as worn (bool): the region the garment image should explain."""
    return np.isin(parse, CIHP_UPPER_GARMENT)


def dresscode_inpaint_mask(labels: np.ndarray, keypoints: np.ndarray, category: DressCodeCategory) -> np.ndarray:
    """Inpaint mask (bool, True = repaint) for a DressCode category from ATR labels and COCO-18 keypoints."""
    height = labels.shape[0]
    core = np.isin(labels, ATR_GARMENT[category] + ATR_CORE_EXTRA[category])
    fixed = np.isin(labels, ATR_FIXED[category])
    if category in ATR_ARM_WIDTH:
        lines = _arm_lines(labels, keypoints, ATR_ARMS, scaled(ATR_ARM_WIDTH[category], height))
        arms = np.isin(labels, tuple(ATR_ARMS.values()))
        neck = (labels == ATR_HEAD) & _below_shoulder_line(labels.shape, keypoints, scaled(NECK_OFFSET, height))
        core |= lines | neck
        fixed |= (arms & ~lines) | ((labels == ATR_HEAD) & ~neck)
    return _finish(core, fixed)


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
