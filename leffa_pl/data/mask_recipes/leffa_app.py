"""``leffa-hd`` and ``leffa-dc``: the Leffa app's inpaint masks (franciszzj/Leffa, commit 7848bedf,
``leffa_utils/utils.py`` ``get_agnostic_mask_hd`` / ``get_agnostic_mask_dc``, as ``app.py`` runs them).

The app parses the photo at 384x512 with SCHP ATR plus the neck label 18, detects COCO-18 keypoints at 384x512
(a missing point is written as 0, 0 and read as missing when x <= 1 and y <= 1), computes the mask there, resizes
it to the photo (bicubic) and binarises it at 0.5; the model sees ``person * (mask < 0.5)``. Both recipes:
``inpaint = fill_holes(~((changeable & ~dilated_garment) | fixed))``, where ``fixed`` are parts never repainted
and ``changeable`` everything else; they differ in what is fixed, the arm lines and the neck:

- ``hd`` (VITON-HD model): the garment labels dilated by a 10x10 square 5 times; each arm a 60 px line shoulder
  -> elbow -> wrist extended 1.2x past the elbow-wrist segment (the whole arm label when the wrist is missing), a
  ring at the shoulder, dilated 5x5 4 times; the hand is the rest of the arm label. The fixed parts are eroded
  5x5 before the head (hat, sunglasses, face) is added, so a 2 px rim of shoes and bags is repainted; hair and
  scarf are not fixed (repainted where the dilated garment reaches them), the neck label is dilated 5x5 into the
  mask. Last, only the largest outer contour is kept, filled as OpenCV traces it (TC89-L1 approximation).
- ``dc`` (DressCode model): one 30 px line wrist -> elbow -> shoulder -> shoulder -> elbow -> wrist dilated 5x5
  5 times (a side without its wrist ends at the elbow, or at the shoulder without it); the head (with hair and
  neck) is repainted below the shoulder line raised 20 px; lower body masks pants and legs, so shoes between the
  legs end up enclosed and filled.

The drawing uses PIL with the app's coordinates, types included: ``hd`` casts its line points to uint16, so a
point left of or above the image wraps around to ~65535 (an extended wrist above a raised arm draws a line down
to the bottom edge), which this keeps as the released model's masks had it.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from leffa_pl.data.mask_recipes.recipe import CATEGORIES, MaskRecipe

SOURCE = "franciszzj/Leffa@7848bedf leffa_utils/utils.py"
FRAME = (512, 384)  # (H, W) the app parses, detects keypoints and computes masks at
# ATR labels plus the Leffa parser's neck (formats.py).
HAT, HAIR, SUNGLASSES, UPPER, SKIRT, PANTS, DRESS, BELT, LEFT_SHOE, RIGHT_SHOE, HEAD = range(1, 12)
LEFT_LEG, RIGHT_LEG, LEFT_ARM, RIGHT_ARM, BAG, SCARF, NECK = range(12, 19)
# COCO-18 (shoulder, elbow, wrist) of the person's right and left arm, with the arm's label.
RIGHT_ARM_POINTS, LEFT_ARM_POINTS = (2, 3, 4), (5, 6, 7)
ARMS = ((RIGHT_ARM_POINTS, RIGHT_ARM), (LEFT_ARM_POINTS, LEFT_ARM))
WITH_ARMS = ("upper_body", "dresses")

HD_GARMENT = {"upper_body": (UPPER, DRESS), "lower_body": (PANTS, LEFT_LEG, RIGHT_LEG, SKIRT),
              "dresses": (DRESS, UPPER, SKIRT, PANTS)}
HD_FIXED = (LEFT_SHOE, RIGHT_SHOE, HAT, SUNGLASSES, BAG)
HD_HEAD = (HAT, SUNGLASSES, HEAD)
DC_GARMENT = {"upper_body": (UPPER,), "lower_body": (PANTS, LEFT_LEG, RIGHT_LEG),
              "dresses": (DRESS, LEFT_LEG, RIGHT_LEG)}
DC_FIXED = (HAIR, LEFT_SHOE, RIGHT_SHOE, HAT, SUNGLASSES, SCARF, BAG)
DC_HEAD = (HAT, HAIR, SUNGLASSES, HEAD, NECK)
# Parts of the other garment kept by both recipes.
KEPT = {"upper_body": (SKIRT, PANTS), "lower_body": (UPPER, LEFT_ARM, RIGHT_ARM), "dresses": ()}

# Sizes in px of FRAME; the app's dilations are squares: 10x10 5 times for the garment, 5x5 for the rest.
HD_ARM_WIDTH, DC_ARM_WIDTH = 60, 30
ARM_EXTENSION = 1.2
NECK_RAISE = 20  # the dc neck cut lies this far above the shoulder line


def _square(size: int) -> np.ndarray:
    return np.ones((size, size), np.uint8)


def _grow(mask: np.ndarray, size: int, iterations: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), _square(size), iterations=iterations).astype(bool)


def _app_points(keypoints: np.ndarray) -> np.ndarray:
    """Missing points as the app's detector writes them (0, 0)."""
    return np.nan_to_num(np.asarray(keypoints, np.float64)[:18], nan=0.0)


def _missing(point: np.ndarray) -> bool:
    return bool(point[0] <= 1 and point[1] <= 1)


def _drawn(shape: tuple[int, int], draw) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]))
    draw(ImageDraw.Draw(canvas))
    return np.asarray(canvas) > 0


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes filled after clearing the 1 px image border (so a region touching the border is no hole)."""
    cleared = np.zeros_like(mask)
    cleared[1:-1, 1:-1] = mask[1:-1, 1:-1]
    return ndimage.binary_fill_holes(cleared)


def _largest_contour(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_TC89_L1)
    kept = np.zeros(mask.shape, np.uint8)
    if contours:
        largest = int(np.argmax([cv2.contourArea(contour) for contour in contours]))
        cv2.drawContours(kept, contours, largest, color=1, thickness=-1)
    return kept.astype(bool)


def _hd_arm(labels: np.ndarray, points: np.ndarray, joints: tuple[int, int, int], label: int,
            width: int) -> np.ndarray:
    shoulder, elbow, wrist = points[list(joints)]
    if _missing(wrist):
        return labels == label
    wrist = elbow + ARM_EXTENSION * (wrist - elbow)
    ordered = (shoulder, elbow, wrist) if label == RIGHT_ARM else (wrist, elbow, shoulder)
    line = np.concatenate(ordered).astype(np.uint16).tolist()  # the app's cast (wraps negative values)
    ring = [shoulder[0] - width // 2, shoulder[1] - width // 2, shoulder[0] + width // 2, shoulder[1] + width // 2]

    def draw(canvas: ImageDraw.ImageDraw) -> None:
        canvas.line(line, "white", width, "curve")
        canvas.arc(ring, 0, 360, "white", width // 2)

    return _drawn(labels.shape, draw)


def hd_mask(labels: np.ndarray, keypoints: np.ndarray, category: str) -> np.ndarray:
    """``leffa-hd`` at ``FRAME``: ATR + neck labels, COCO-18 keypoints (NaN = missing)."""
    fixed = np.isin(labels, HD_FIXED + KEPT[category])
    changeable = ~fixed
    garment = _grow(np.isin(labels, HD_GARMENT[category]), 10, 5)
    if category in WITH_ARMS:
        points = _app_points(keypoints)
        lines = [_hd_arm(labels, points, joints, label, HD_ARM_WIDTH) for joints, label in ARMS]
        for line, (_, label) in zip(lines, ARMS):
            fixed |= (labels == label) & ~line  # the hand
    fixed = cv2.erode(fixed.astype(np.uint8), _square(5)).astype(bool)
    head = np.isin(labels, HD_HEAD)
    fixed |= head
    if category in WITH_ARMS:
        garment |= _grow(labels == NECK, 5, 1) & ~head
        garment |= _grow(lines[0] | lines[1], 5, 4)
    keep = (changeable & ~garment) | fixed
    return _largest_contour(_fill_holes(~keep))


def _dc_arm_line(points: np.ndarray) -> list[tuple[float, float]]:
    """wrist -> elbow -> shoulder across to the other shoulder -> elbow -> wrist, cut where a wrist is missing."""
    (r_shoulder, r_elbow, r_wrist), (l_shoulder, l_elbow, l_wrist) = (
        [tuple(points[j]) for j in joints] for joints in (RIGHT_ARM_POINTS, LEFT_ARM_POINTS))
    if _missing(points[RIGHT_ARM_POINTS[2]]):
        right = [] if _missing(points[RIGHT_ARM_POINTS[1]]) else [r_elbow]
        return [l_wrist, l_elbow, l_shoulder, r_shoulder] + right
    if _missing(points[LEFT_ARM_POINTS[2]]):
        left = [] if _missing(points[LEFT_ARM_POINTS[1]]) else [l_elbow]
        return left + [l_shoulder, r_shoulder, r_elbow, r_wrist]
    return [l_wrist, l_elbow, l_shoulder, r_shoulder, r_elbow, r_wrist]


def _below_shoulder_line(head: np.ndarray, points: np.ndarray, raise_by: float) -> np.ndarray:
    """Pixels of each column from the least-squares line through both shoulders, raised by ``raise_by``, down.
    The row is truncated to an int and a negative one counts from the bottom, as the app's slicing does."""
    shoulders = points[[RIGHT_ARM_POINTS[0], LEFT_ARM_POINTS[0]]]
    design = np.stack([shoulders[:, 0], np.ones(2)], 1)
    slope, intercept = np.linalg.lstsq(design, shoulders[:, 1], rcond=None)[0]
    height, width = head.shape
    starts = np.array([int(column * slope + intercept - raise_by) for column in range(width)])
    starts = np.where(starts < 0, np.maximum(starts + height, 0), starts)
    return np.arange(height)[:, None] >= starts[None, :]


def dc_mask(labels: np.ndarray, keypoints: np.ndarray, category: str) -> np.ndarray:
    """``leffa-dc`` at ``FRAME``: ATR labels (a neck 18 counts as head), COCO-18 keypoints (NaN = missing)."""
    fixed = np.isin(labels, DC_FIXED + KEPT[category])
    changeable = ~fixed
    garment = np.isin(labels, DC_GARMENT[category])
    head = np.isin(labels, DC_HEAD)
    if category in WITH_ARMS:
        points = _app_points(keypoints)
        line = _dc_arm_line(points)
        lines = _grow(_drawn(labels.shape, lambda canvas: canvas.line(line, "white", DC_ARM_WIDTH, "curve")), 5, 5)
        garment |= lines
        fixed |= np.isin(labels, (LEFT_ARM, RIGHT_ARM)) & ~lines  # the hands
        neck = head & _below_shoulder_line(head, points, NECK_RAISE)
        garment |= neck
        head &= ~neck
    fixed |= head
    garment = _grow(garment, 10, 5)
    keep = (changeable & ~garment) | fixed
    return _fill_holes(~keep)


LEFFA_HD = MaskRecipe("leffa-hd", f"{SOURCE} get_agnostic_mask_hd", "atr-neck", "coco18", FRAME, CATEGORIES,
                      hd_mask)
LEFFA_DC = MaskRecipe("leffa-dc", f"{SOURCE} get_agnostic_mask_dc", "atr", "coco18", FRAME, CATEGORIES, dc_mask)
# The recipes of the try-on models the app runs (its ``vt_model_type``; each dataset's spec names its own).
APP_RECIPE_NAMES = (LEFFA_HD.name, LEFFA_DC.name)
