"""``hrviton``: the region HR-VITON paints gray, i.e. what VITON-HD's distributed ``agnostic-v3.2/`` images are.

Source: sangyun884/HR-VITON@2715bdd6, ``cp_dataset.py``, ``CPDataset.get_agnostic`` (re-implemented here; the
golden tests hold the official code's outputs). It reads CIHP labels and BODY_25 keypoints at VITON-HD's
1024x768 and draws, with r = int(|left - right shoulder| / 16) + 1 and the hips moved apart (about their
midpoint) to the shoulders' distance:

- torso: ellipses 3r x 6r at the hips, 6r lines shoulder - hip, a 12r line hip - hip, the shoulder-hip polygon;
- neck: a 10r x 9r rectangle above the neck point;
- arms: a 12r line shoulder - shoulder, 5r x 6r ellipses at the shoulders, 10r lines and 5r discs along each
  arm (a segment with an end at exactly (0, 0), OpenPose's missing point, is skipped);

then gives back the arm labels outside a per-arm stencil (shoulder ellipse, 10r segments, 5r discs at the elbow
and 4r at the last point drawn: the hands stay), the face and sunglasses, and the lower body (pants, skirt, legs,
shoes). Hair, neck skin, hat, scarf and socks are painted where the shapes reach them. Missing shoulders or hips
are drawn at (0, 0) as the official code draws them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from leffa_pl.data.mask_recipes.recipe import MaskRecipe

FRAME = (1024, 768)  # VITON-HD's size; the official code draws its arm stencils on a canvas of this size
FACE = (4, 13)  # sunglasses, face
LOWER_BODY = (9, 12, 16, 17, 18, 19)  # pants, skirt, legs, shoes
ARMS = ((14, (5, 6, 7)), (15, (2, 3, 4)))  # (CIHP arm label, its BODY_25 shoulder, elbow, wrist)
NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP = 1, 2, 5, 9, 12
GRAY = 128  # PIL's "gray", the fill of agnostic-v3.2


def _ellipse(draw: ImageDraw.ImageDraw, point: np.ndarray, rx: int, ry: int, value: int) -> None:
    x, y = point
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), value, value)


def _segment(draw: ImageDraw.ImageDraw, pose: np.ndarray, ends: tuple[int, int], width: int, value: int) -> None:
    draw.line([tuple(pose[i]) for i in ends], value, width=width)


def _is_origin(point: np.ndarray) -> bool:
    return bool(point[0] == 0.0 and point[1] == 0.0)


def _spread_hips(pose: np.ndarray) -> int:
    """Move the hips apart to the shoulders' distance (in place); returns r."""
    shoulders = np.linalg.norm(pose[L_SHOULDER] - pose[R_SHOULDER])
    hips = np.linalg.norm(pose[L_HIP] - pose[R_HIP])
    middle = (pose[R_HIP] + pose[L_HIP]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):  # no hips: NaN points, drawn as PIL draws them
        for hip in (R_HIP, L_HIP):
            pose[hip] = middle + (pose[hip] - middle) / hips * shoulders
    return int(shoulders / 16) + 1


def _painted(pose: np.ndarray, size: tuple[int, int], r: int) -> np.ndarray:
    canvas = Image.new("L", size)
    draw = ImageDraw.Draw(canvas)
    for hip in (R_HIP, L_HIP):
        _ellipse(draw, pose[hip], r * 3, r * 6, 255)
    _segment(draw, pose, (R_SHOULDER, R_HIP), r * 6, 255)
    _segment(draw, pose, (L_SHOULDER, L_HIP), r * 6, 255)
    _segment(draw, pose, (R_HIP, L_HIP), r * 12, 255)
    draw.polygon([tuple(pose[i]) for i in (R_SHOULDER, L_SHOULDER, L_HIP, R_HIP)], 255, 255)
    x, y = pose[NECK]
    draw.rectangle((x - r * 5, y - r * 9, x + r * 5, y), 255, 255)
    _segment(draw, pose, (R_SHOULDER, L_SHOULDER), r * 12, 255)
    for shoulder in (R_SHOULDER, L_SHOULDER):
        _ellipse(draw, pose[shoulder], r * 5, r * 6, 255)
    for joint in (3, 4, 6, 7):
        if _is_origin(pose[joint - 1]) or _is_origin(pose[joint]):
            continue
        _segment(draw, pose, (joint - 1, joint), r * 10, 255)
        _ellipse(draw, pose[joint], r * 5, r * 5, 255)
    return np.asarray(canvas) > 0


def _arm_stencil(pose: np.ndarray, joints: tuple[int, int, int], size: tuple[int, int], r: int) -> np.ndarray:
    """The part of an arm label that stays painted (True)."""
    canvas = Image.new("L", size)
    draw = ImageDraw.Draw(canvas)
    _ellipse(draw, pose[joints[0]], r * 5, r * 6, 255)
    last = pose[joints[0]]
    for joint in joints[1:]:
        if _is_origin(pose[joint - 1]) or _is_origin(pose[joint]):
            continue
        _segment(draw, pose, (joint - 1, joint), r * 10, 255)
        last = pose[joint]
        if joint != joints[-1]:
            _ellipse(draw, last, r * 5, r * 5, 255)
    _ellipse(draw, last, r * 4, r * 4, 255)
    return np.asarray(canvas) > 0


def inpaint_mask(labels: np.ndarray, keypoints: np.ndarray, category: str = "upper_body") -> np.ndarray:
    """Bool [H, W], True = painted gray, from CIHP ``labels`` [H, W] and BODY_25 ``keypoints`` [25, 2] (x, y) in
    pixels of the labels' frame, NaN where missing (OpenPose writes (0, 0))."""
    pose = np.where(np.isnan(keypoints), 0.0, keypoints).astype(np.float64)
    size = (labels.shape[1], labels.shape[0])
    r = _spread_hips(pose)
    mask = _painted(pose, size, r)
    for label, joints in ARMS:
        mask &= (labels != label) | _arm_stencil(pose, joints, size, r)
    return mask & ~np.isin(labels, FACE + LOWER_BODY)


def agnostic_image(person: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``agnostic-v3.2``: the person (uint8 [H, W, 3]) with the mask painted gray."""
    return np.where(mask[..., None], np.uint8(GRAY), person)


HRVITON = MaskRecipe(
    name="hrviton", source="sangyun884/HR-VITON@2715bdd6 cp_dataset.py CPDataset.get_agnostic",
    label_set="cihp", keypoint_format="body25", frame=FRAME, categories=("upper_body",), compute=inpaint_mask)
