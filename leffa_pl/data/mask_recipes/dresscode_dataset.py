"""``dresscode``: the DressCode dataset's own inpaint mask, what DressCode papers train and score with.

Source: aimagelab/dress-code@2e9e7ed5, ``data/dataset.py``, ``Dataset.__getitem__`` from the label map to
``im_mask`` (re-implemented here; the golden tests run the official code's outputs). At the size it is computed at
(H, W), with ATR labels and COCO-18 keypoints scaled by H / 512 from DressCode's 384x512 keypoint frame:

- core: the garment labels of the category (upper clothes; pants + legs; dress + legs: no skirt, no belt);
- upper body and dresses add one 30 px polyline wrist - elbow - shoulder - shoulder - elbow - wrist (round joints;
  a wrist counts as missing when x <= 1 AND y <= 1, then that arm's wrist, or wrist and elbow, are left out, the
  right arm looked at first), grown by 10x10 x5 above 512 px height, and the neck: the head labels (hat, hair,
  sunglasses, head) below the shoulder line raised by 20 px at 512;
- the core is dilated (5x5 x5; 20x20 x5 above 512 px height) and never covers the fixed parts: hair, hat,
  sunglasses, scarf, bag, shoes, the head above the neck, the arms outside the polyline (hands), and per category
  skirt and pants (upper body) or upper clothes and arms (lower body, which also keeps the whole head).

Kept as the official code has it: the line width and the 20 px neck offset do not scale below 1024 px, missing
points other than the checked wrists and elbows are drawn where the file puts them (DressCode writes (-1, -1):
a line to the far corner once cast to uint16), and the shoulder line comes from a least-squares fit.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from leffa_pl.data.mask_recipes.recipe import MaskRecipe

HAT, HAIR, SUNGLASSES, UPPER, SKIRT, PANTS, DRESS = 1, 2, 3, 4, 5, 6, 7
LEFT_SHOE, RIGHT_SHOE, HEAD, LEFT_LEG, RIGHT_LEG, LEFT_ARM, RIGHT_ARM, BAG, SCARF = 9, 10, 11, 12, 13, 14, 15, 16, 17
HEAD_LABELS = (HAT, HAIR, SUNGLASSES, HEAD)
FIXED = (HAIR, LEFT_SHOE, RIGHT_SHOE, HAT, SUNGLASSES, SCARF, BAG)
GARMENT = {"upper_body": (UPPER,), "lower_body": (PANTS, LEFT_LEG, RIGHT_LEG), "dresses": (DRESS, LEFT_LEG, RIGHT_LEG)}
FIXED_BY_CATEGORY = {"upper_body": (SKIRT, PANTS), "lower_body": (UPPER, LEFT_ARM, RIGHT_ARM), "dresses": ()}

KEYPOINT_FRAME_HEIGHT = 512
MISSING = -1.0  # DressCode's keypoint files write a missing point as (-1, -1) with score 0
# COCO-18 arm points.
R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 2, 3, 4, 5, 6, 7
ARM_LINE_WIDTH = 30
NECK_RAISE = 20  # px at 512 px height
LARGE = 512  # above this height the arm lines are dilated and the final dilation kernel is larger
ARM_DILATION = (10, 5)  # (kernel side, iterations)
DILATION = {False: (5, 5), True: (20, 5)}


def _missing(point: np.ndarray) -> bool:
    return bool(point[0] <= 1.0 and point[1] <= 1.0)


def _arm_chain(points: np.ndarray) -> list[int]:
    """The keypoints the arm polyline joins, in order."""
    if _missing(points[R_WRIST]):
        tail = [] if _missing(points[R_ELBOW]) else [R_ELBOW]
        return [L_WRIST, L_ELBOW, L_SHOULDER, R_SHOULDER] + tail
    if _missing(points[L_WRIST]):
        head = [] if _missing(points[L_ELBOW]) else [L_ELBOW]
        return head + [L_SHOULDER, R_SHOULDER, R_ELBOW, R_WRIST]
    return [L_WRIST, L_ELBOW, L_SHOULDER, R_SHOULDER, R_ELBOW, R_WRIST]


def _arm_lines(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]))
    # Coordinates go through uint16 as in the official code (a negative one wraps to the far side).
    coordinates = points[_arm_chain(points)].reshape(-1).astype(np.uint16).tolist()
    ImageDraw.Draw(canvas).line(coordinates, fill=255, width=ARM_LINE_WIDTH, joint="curve")
    lines = np.asarray(canvas)
    if shape[0] > LARGE:
        side, iterations = ARM_DILATION
        lines = cv2.dilate(lines, np.ones((side, side), np.uint8), iterations=iterations)
    return lines > 0


def _neck(head: np.ndarray, points: np.ndarray, scale: float) -> np.ndarray:
    """The head pixels below the least-squares line through the shoulders, raised by ``NECK_RAISE``."""
    shoulders = points[[R_SHOULDER, L_SHOULDER]]
    design = np.vstack([shoulders[:, 0], np.ones(2)]).T
    slope, intercept = np.linalg.lstsq(design, shoulders[:, 1], rcond=None)[0]
    height, width = head.shape
    line = np.arange(width) * slope + intercept - NECK_RAISE * scale
    start = line.astype(np.int64)  # truncated toward zero, then used as a Python slice start per column
    start = np.where(start >= 0, start, np.maximum(height + start, 0))
    return head & (np.arange(height)[:, None] >= start[None, :])


def inpaint_mask(labels: np.ndarray, keypoints: np.ndarray, category: str) -> np.ndarray:
    """Bool [H, W], True = repaint, from ATR ``labels`` [H, W] and COCO-18 ``keypoints`` [18, 2] (x, y) in pixels
    of the labels' frame (384x512 file coordinates times H / 512), NaN where missing."""
    height, width = labels.shape
    scale = height / KEYPOINT_FRAME_HEIGHT
    core = np.isin(labels, GARMENT[category])
    fixed = np.isin(labels, FIXED + FIXED_BY_CATEGORY[category])
    head = np.isin(labels, HEAD_LABELS)
    if category != "lower_body":
        points = np.where(np.isnan(keypoints), MISSING * scale, keypoints).astype(np.float64)
        lines = _arm_lines(points, (height, width))
        neck = _neck(head, points, scale)
        core |= lines | neck
        fixed |= np.isin(labels, (LEFT_ARM, RIGHT_ARM)) & ~lines
        head &= ~neck
    fixed |= head
    side, iterations = DILATION[height > LARGE]
    dilated = cv2.dilate(core.astype(np.uint8), np.ones((side, side), np.uint8), iterations=iterations)
    return dilated.astype(bool) & ~fixed


DRESSCODE = MaskRecipe(
    name="dresscode", source="aimagelab/dress-code@2e9e7ed5 data/dataset.py Dataset.__getitem__",
    label_set="atr", keypoint_format="coco18", frame=None,
    categories=("upper_body", "lower_body", "dresses"), compute=inpaint_mask)
