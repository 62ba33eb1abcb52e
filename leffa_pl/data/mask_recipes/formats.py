"""Conversions between the label sets and keypoint formats recipes read, and the resizing around a recipe's frame.

Label sets (``recipe.LabelSet``):
- ``atr``: SCHP ATR, 18 labels, as DressCode's ``label_maps``: 0 background, 1 hat, 2 hair, 3 sunglasses,
  4 upper clothes, 5 skirt, 6 pants, 7 dress, 8 belt, 9/10 left/right shoe, 11 head, 12/13 left/right leg,
  14/15 left/right arm, 16 bag, 17 scarf.
- ``atr-neck``: ``atr`` plus 18 neck, the part of ATR's head that the LIP network does not call face (the Leffa
  app's parser, ``preprocess/humanparsing/parsing_api.py``).
- ``cihp``: VITON-HD's ``image-parse-v3`` (CIHP_PGN): 0 background, 1 hat, 2 hair, 3 glove, 4 sunglasses,
  5 upper clothes, 6 dress, 7 coat, 8 socks, 9 pants, 10 neck (torso skin), 11 scarf, 12 skirt, 13 face,
  14/15 left/right arm, 16/17 left/right leg, 18/19 left/right shoe.

``cihp`` -> ``atr``/``atr-neck``: the same parts renamed; a coat is upper clothes (ATR has no coat), the face is
ATR's head, the neck is 18 (``atr-neck``) or head (``atr``); gloves and socks (no ATR label) take the arm or leg
label nearest to them, as ATR labels hands and socked legs. ``atr-neck`` -> ``atr``: the neck goes back into the
head. ``atr`` has no neck and no CIHP face/neck split, so nothing converts from it but itself.

Keypoints: ``body25`` (OpenPose BODY_25, VITON-HD) and ``coco18`` (OpenPose COCO-18, DressCode and the Leffa
app's detector) share the first eight points (nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist);
BODY_25 inserts the mid-hip at 8 and adds feet at 19..24.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

ATR_HEAD, ATR_NECK = 11, 18
ATR_ARMS, ATR_LEGS = (14, 15), (12, 13)
CIHP_GLOVE, CIHP_SOCKS = 3, 8
# CIHP label -> ATR label (gloves and socks are sided separately; the neck depends on the target set).
CIHP_TO_ATR = np.array([0, 1, 2, 0, 3, 4, 7, 4, 0, 6, ATR_NECK, 17, 5, ATR_HEAD, 14, 15, 12, 13, 9, 10], np.uint8)

COCO18_FROM_BODY25 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
BODY25_MID_HIP, COCO18_HIPS = 8, (8, 11)


def _nearest_side(converted: np.ndarray, where: np.ndarray, sides: tuple[int, int]) -> None:
    """Give the pixels ``where`` the label of the nearest pixel labelled one of ``sides`` (the first if none)."""
    if not where.any():
        return
    sided = np.isin(converted, sides)
    if not sided.any():
        converted[where] = sides[0]
        return
    _, (rows, cols) = ndimage.distance_transform_edt(~sided, return_indices=True)
    converted[where] = converted[rows[where], cols[where]]


def convert_labels(labels: np.ndarray, source: str, target: str) -> np.ndarray:
    """``labels`` [H, W] uint8 from label set ``source`` to ``target`` (module docstring); raises ValueError when
    ``source`` lacks what ``target`` tells apart."""
    if source == target:
        return labels
    if source == "cihp" and target in ("atr", "atr-neck"):
        if labels.max(initial=0) >= len(CIHP_TO_ATR):
            raise ValueError(f"CIHP labels are 0..{len(CIHP_TO_ATR) - 1}, got {labels.max()}")
        converted = CIHP_TO_ATR[labels]
        _nearest_side(converted, labels == CIHP_GLOVE, ATR_ARMS)
        _nearest_side(converted, labels == CIHP_SOCKS, ATR_LEGS)
        return converted if target == "atr-neck" else np.where(converted == ATR_NECK, ATR_HEAD, converted)
    if source == "atr-neck" and target == "atr":
        return np.where(labels == ATR_NECK, ATR_HEAD, labels).astype(np.uint8)
    raise ValueError(f"{source} labels cannot be converted to {target}: a recipe reading {target} needs parts "
                     f"that {source} does not tell apart")


def convert_keypoints(keypoints: np.ndarray, source: str, target: str) -> np.ndarray:
    """[K, 2] (x, y) from keypoint format ``source`` to ``target``; points the target has and the source has not
    are NaN (the BODY_25 mid-hip is the hips' midpoint)."""
    if source == target:
        return keypoints
    if source == "body25" and target == "coco18":
        return keypoints[COCO18_FROM_BODY25]
    if source == "coco18" and target == "body25":
        body = np.full((25, 2), np.nan, np.float32)
        body[COCO18_FROM_BODY25] = keypoints
        body[BODY25_MID_HIP] = keypoints[list(COCO18_HIPS)].mean(0)
        return body
    raise ValueError(f"no keypoint conversion from {source} to {target}")


def scale_keypoints(keypoints: np.ndarray, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates in a ``source`` (H, W) frame -> a ``target`` frame."""
    if tuple(source) == tuple(target):
        return keypoints
    return keypoints * np.array([target[1] / source[1], target[0] / source[0]])


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with PIL's pixel-centre rule (the official recipes resize with PIL)."""
    if labels.shape[:2] == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask to ``size``: PIL's bicubic resize of 0/255, then >= 0.5 (the Leffa app's ``mask.resize`` and
    the binarisation of its transform)."""
    if mask.shape == tuple(size):
        return mask.astype(bool)
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.BICUBIC)
    return np.asarray(image) >= 128
