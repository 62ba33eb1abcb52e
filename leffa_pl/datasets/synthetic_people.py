"""Synthetic people for the synthetic VITON-HD, DressCode and DeepFashion copies (each dataset's ``synthetic``).

Each pair is a procedurally drawn, front-facing person (random pose, skin, hair, clothes) wearing a
textured garment (stripes, text-like marks, a logo). The garment on the person is the flat garment
image warped by a known smooth deformation (an affine fit to the body plus a sinusoidal ripple), so the
ground-truth flow person -> garment is exact. Alongside the real files (palette parsing PNGs, OpenPose /
DressCode keypoint JSON, DensePose renderings, pair files) the generator writes that flow to
``ground-truth-flow/{id}.npz`` (key ``flow``, float32 [2, H, W], grid_sample coordinates with
align_corners=False, NaN where the garment is not visible): an extra folder no real copy has.

Output is deterministic for a seed: each pair draws from its own generator seeded by (seed, dataset,
category, index). ``leffa_pl.data.make_synthetic`` is the command that writes them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from leffa_pl.data.io import label_image
from leffa_pl.data.layout import FLOW_KEY

DEFAULT_SIZE = (256, 192)

# Internal semantic classes, mapped to CIHP (VITON-HD) and ATR (DressCode) labels below.
BG, LEG_R, LEG_L, SHOE_R, SHOE_L, PANTS, SKIRT, ARM_R, ARM_L, UPPER, DRESS, NECK, HAIR, FACE = range(14)
CIHP = {BG: 0, LEG_R: 17, LEG_L: 16, SHOE_R: 19, SHOE_L: 18, PANTS: 9, SKIRT: 12, ARM_R: 15, ARM_L: 14,
        UPPER: 5, DRESS: 6, NECK: 10, HAIR: 2, FACE: 13}
ATR = {BG: 0, LEG_R: 13, LEG_L: 12, SHOE_R: 10, SHOE_L: 9, PANTS: 6, SKIRT: 5, ARM_R: 15, ARM_L: 14,
       UPPER: 4, DRESS: 7, NECK: 11, HAIR: 2, FACE: 11}
SKIN = [(241, 194, 167), (224, 172, 138), (198, 134, 99), (141, 85, 54), (255, 219, 190)]
HAIR_COLORS = [(30, 22, 18), (80, 50, 30), (150, 110, 60), (200, 170, 110), (60, 60, 60)]

# Garment silhouettes and their three anchor points in the flat garment image, as fractions (x of W, y of H).
SILHOUETTES = {
    UPPER: [(0.40, 0.20), (0.50, 0.26), (0.60, 0.20), (0.74, 0.24), (0.86, 0.36), (0.79, 0.42), (0.71, 0.35),
            (0.70, 0.80), (0.30, 0.80), (0.29, 0.35), (0.21, 0.42), (0.14, 0.36), (0.26, 0.24)],
    PANTS: [(0.31, 0.10), (0.69, 0.10), (0.73, 0.90), (0.54, 0.90), (0.50, 0.36), (0.46, 0.90), (0.27, 0.90)],
    SKIRT: [(0.33, 0.12), (0.67, 0.12), (0.80, 0.62), (0.20, 0.62)],
    DRESS: [(0.40, 0.10), (0.50, 0.17), (0.60, 0.10), (0.69, 0.12), (0.68, 0.40), (0.83, 0.92), (0.17, 0.92),
            (0.32, 0.40), (0.31, 0.12)],
}
ANCHORS = {UPPER: [(0.26, 0.24), (0.74, 0.24), (0.50, 0.80)], PANTS: [(0.31, 0.10), (0.69, 0.10), (0.50, 0.90)],
           SKIRT: [(0.33, 0.12), (0.67, 0.12), (0.50, 0.62)], DRESS: [(0.31, 0.12), (0.69, 0.12), (0.50, 0.92)]}


# -- the person -------------------------------------------------------------------------------------

@dataclass
class Pose:
    """Joint positions in pixels (x, y) of a front-facing person; ``r_*`` is the person's right (image left)."""

    joints: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.joints[name]


def random_pose(rng: np.random.Generator, height: int, width: int) -> Pose:
    cx = width * (0.5 + rng.uniform(-0.04, 0.04))
    j: dict[str, np.ndarray] = {}
    j["head"] = np.array([cx + rng.uniform(-0.01, 0.01) * width, 0.13 * height])
    j["nose"] = j["head"] + [0, 0.015 * height]
    j["neck"] = np.array([cx, 0.235 * height])
    half_shoulder, tilt = rng.uniform(0.16, 0.19) * width, rng.uniform(-0.01, 0.01) * height
    j["r_shoulder"] = np.array([cx - half_shoulder, 0.27 * height - tilt])
    j["l_shoulder"] = np.array([cx + half_shoulder, 0.27 * height + tilt])
    half_hip = rng.uniform(0.10, 0.12) * width
    j["r_hip"], j["l_hip"] = np.array([cx - half_hip, 0.58 * height]), np.array([cx + half_hip, 0.58 * height])
    j["mid_hip"] = (j["r_hip"] + j["l_hip"]) / 2
    for side, outward in (("r", -1.0), ("l", 1.0)):
        upper = np.deg2rad(rng.uniform(8, 35))
        lower = upper + np.deg2rad(rng.uniform(-25, 15))
        j[f"{side}_elbow"] = j[f"{side}_shoulder"] + 0.17 * height * np.array([outward * np.sin(upper),
                                                                                np.cos(upper)])
        j[f"{side}_wrist"] = j[f"{side}_elbow"] + 0.15 * height * np.array([outward * np.sin(lower),
                                                                             np.cos(lower)])
        spread = rng.uniform(0.0, 0.025) * width
        j[f"{side}_knee"] = j[f"{side}_hip"] + [outward * spread, 0.19 * height]
        j[f"{side}_ankle"] = j[f"{side}_knee"] + [outward * spread * 0.5, 0.17 * height]
        j[f"{side}_eye"] = j["head"] + [outward * 0.03 * width, -0.005 * height]
        j[f"{side}_ear"] = j["head"] + [outward * 0.075 * width, 0.0]
    return Pose(j)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _limb(shape: tuple[int, int], points: list[np.ndarray], width: int) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    for a, b in zip(points[:-1], points[1:]):
        cv2.line(canvas, _pt(a), _pt(b), 1, width)
    for p in points:
        cv2.circle(canvas, _pt(p), width // 2, 1, -1)
    return canvas.astype(bool)


def _ellipse(shape: tuple[int, int], centre: np.ndarray, axes: tuple[float, float]) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    cv2.ellipse(canvas, _pt(centre), (max(1, int(axes[0])), max(1, int(axes[1]))), 0, 0, 360, 1, -1)
    return canvas.astype(bool)


def body_parts(pose: Pose, height: int, width: int) -> dict[str, np.ndarray]:
    """Boolean masks of the body surface parts (used for DensePose and skin)."""
    shape = (height, width)
    arm, leg = max(2, int(0.055 * width)), max(3, int(0.08 * width))
    parts = {}
    torso = np.zeros(shape, np.uint8)
    corners = [pose["r_shoulder"] + [-0.01 * width, 0], pose["l_shoulder"] + [0.01 * width, 0],
               pose["l_hip"] + [0.02 * width, 0.03 * height], pose["r_hip"] + [-0.02 * width, 0.03 * height]]
    cv2.fillPoly(torso, [np.round(np.array(corners)).astype(np.int32)], 1)
    parts["torso"] = torso.astype(bool)
    for side in ("r", "l"):
        parts[f"{side}_upper_arm"] = _limb(shape, [pose[f"{side}_shoulder"], pose[f"{side}_elbow"]], arm)
        parts[f"{side}_lower_arm"] = _limb(shape, [pose[f"{side}_elbow"], pose[f"{side}_wrist"]], int(arm * 0.85))
        hand_centre = pose[f"{side}_wrist"] + (pose[f"{side}_wrist"] - pose[f"{side}_elbow"]) * 0.18
        parts[f"{side}_hand"] = _ellipse(shape, hand_centre, (arm * 0.6, arm * 0.7))
        parts[f"{side}_upper_leg"] = _limb(shape, [pose[f"{side}_hip"], pose[f"{side}_knee"]], leg)
        parts[f"{side}_lower_leg"] = _limb(shape, [pose[f"{side}_knee"], pose[f"{side}_ankle"]], int(leg * 0.8))
        outward = -1 if side == "r" else 1
        parts[f"{side}_foot"] = _ellipse(shape, pose[f"{side}_ankle"] + [outward * 0.02 * width, 0.02 * height],
                                         (0.05 * width, 0.022 * height))
    head = _ellipse(shape, pose["head"], (0.085 * width, 0.075 * height))
    left_half = np.arange(width)[None, :] >= pose["head"][0]
    parts["r_head"], parts["l_head"] = head & ~left_half, head & left_half
    neck = np.zeros(shape, np.uint8)
    cv2.rectangle(neck, _pt(pose["head"] + [-0.04 * width, 0.03 * height]),
                  _pt(pose["neck"] + [0.04 * width, 0.04 * height]), 1, -1)
    parts["neck"] = neck.astype(bool)
    return parts


# DensePose part index of each body part (front view; 23/24 = right/left head side).
DENSEPOSE_PARTS = {"torso": 2, "r_hand": 3, "l_hand": 4, "l_foot": 5, "r_foot": 6, "r_upper_leg": 9,
                   "l_upper_leg": 10, "r_lower_leg": 13, "l_lower_leg": 14, "l_upper_arm": 15, "r_upper_arm": 16,
                   "l_lower_arm": 19, "r_lower_arm": 20, "r_head": 23, "l_head": 24, "neck": 2}
DENSEPOSE_ORDER = ["r_upper_leg", "l_upper_leg", "r_lower_leg", "l_lower_leg", "r_foot", "l_foot", "torso",
                   "neck", "r_upper_arm", "l_upper_arm", "r_lower_arm", "l_lower_arm", "r_hand", "l_hand",
                   "r_head", "l_head"]


def densepose_parts(parts: dict[str, np.ndarray]) -> np.ndarray:
    index = np.zeros(parts["torso"].shape, np.uint8)
    for name in DENSEPOSE_ORDER:
        index[parts[name]] = DENSEPOSE_PARTS[name]
    return index


# -- garments ---------------------------------------------------------------------------------------

def _scaled_points(points: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    return np.array([(x * width, y * height) for x, y in points], np.float32)


def garment_texture(rng: np.random.Generator, height: int, width: int, plain: bool) -> np.ndarray:
    """A garment-sized texture: stripes, text-like marks and a logo (or one colour when ``plain``)."""
    base = rng.integers(30, 226, 3)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = base
    if plain:
        return image
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(0.05, 0.12) * height
    stripes = ((x * np.cos(angle) + y * np.sin(angle)) / period) % 1.0 < rng.uniform(0.2, 0.5)
    image[stripes] = rng.integers(0, 256, 3)
    scale = height / 512
    for row in range(int(rng.integers(2, 4))):
        text = "".join(rng.choice(list(string.ascii_uppercase + string.digits), int(rng.integers(3, 6))))
        origin = (int(width * rng.uniform(0.33, 0.45)), int(height * (0.45 + 0.07 * row)))
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.9 * scale,
                    tuple(int(v) for v in rng.integers(0, 256, 3)), max(1, int(round(2 * scale))), cv2.LINE_AA)
    logo_centre = (int(width * rng.uniform(0.42, 0.58)), int(height * rng.uniform(0.30, 0.36)))
    radius = max(2, int(0.045 * height))
    cv2.circle(image, logo_centre, radius, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    triangle = np.array([[0, -1], [0.87, 0.5], [-0.87, 0.5]]) * radius * 0.8 + logo_centre
    cv2.fillPoly(image, [np.round(triangle).astype(np.int32)], tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


@dataclass
class WornGarment:
    """A flat garment (on white) and where its pixels land on the person."""

    kind: int
    flat: np.ndarray  # [H, W, 3] garment image on white
    silhouette: np.ndarray  # [H, W] bool, in the flat image
    map_x: np.ndarray  # person pixel -> garment x (pixels), float32 [H, W]
    map_y: np.ndarray
    on_person: np.ndarray  # [H, W] bool: the garment covers this person pixel (before occlusion)


def person_anchors(kind: int, pose: Pose, height: int, width: int) -> np.ndarray:
    if kind == UPPER:
        return np.array([pose["r_shoulder"], pose["l_shoulder"], pose["mid_hip"] + [0, 0.05 * height]], np.float32)
    if kind == DRESS:
        knees = (pose["r_knee"] + pose["l_knee"]) / 2
        return np.array([pose["r_shoulder"] + [0.05 * width, 0], pose["l_shoulder"] - [0.05 * width, 0],
                         knees + [0, 0.05 * height]], np.float32)
    waist_r = pose["r_hip"] + [-0.03 * width, -0.03 * height]
    waist_l = pose["l_hip"] + [0.03 * width, -0.03 * height]
    if kind == SKIRT:
        return np.array([waist_r, waist_l, (pose["r_knee"] + pose["l_knee"]) / 2 - [0, 0.02 * height]], np.float32)
    ankles = (pose["r_ankle"] + pose["l_ankle"]) / 2
    return np.array([waist_r, waist_l, ankles - [0, 0.03 * height]], np.float32)


def wear(rng: np.random.Generator, kind: int, pose: Pose, height: int, width: int, plain: bool) -> WornGarment:
    """Draw a flat garment and the smooth person -> garment mapping that puts it on the person."""
    silhouette = np.zeros((height, width), np.uint8)
    cv2.fillPoly(silhouette, [np.round(_scaled_points(SILHOUETTES[kind], height, width)).astype(np.int32)], 1)
    silhouette = silhouette.astype(bool)
    flat = np.full((height, width, 3), 255, np.uint8)
    flat[silhouette] = garment_texture(rng, height, width, plain)[silhouette]
    to_person = cv2.getAffineTransform(_scaled_points(ANCHORS[kind], height, width),
                                       person_anchors(kind, pose, height, width))
    to_garment = cv2.invertAffineTransform(to_person)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    amplitude = rng.uniform(0.005, 0.015, 2) * width
    frequency, phase = rng.uniform(1.0, 2.0, 2) * 2 * np.pi, rng.uniform(0, 2 * np.pi, 2)
    map_x = (to_garment[0, 0] * x + to_garment[0, 1] * y + to_garment[0, 2]
             + amplitude[0] * np.sin(frequency[0] * y / height + phase[0])).astype(np.float32)
    map_y = (to_garment[1, 0] * x + to_garment[1, 1] * y + to_garment[1, 2]
             + amplitude[1] * np.sin(frequency[1] * x / width + phase[1])).astype(np.float32)
    on_person = cv2.remap(silhouette.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return WornGarment(kind, flat, silhouette, map_x, map_y, on_person)


@dataclass
class Person:
    image: np.ndarray  # [H, W, 3] uint8
    semantic: np.ndarray  # [H, W] internal classes
    densepose: np.ndarray  # [H, W] part index 0..24
    pose: Pose
    garment: WornGarment  # the textured garment the pair is about
    flow: np.ndarray  # [2, H, W] float32, NaN outside the visible garment


def draw_person(rng: np.random.Generator, height: int, width: int, outfit: dict[int, bool],
                pose: Pose | None = None) -> Person:
    """A person wearing ``outfit`` ({garment kind: textured?}, exactly one textured) in ``pose`` (default: a
    random pose drawn from ``rng``). With a given pose, equally seeded ``rng`` give the same appearance."""
    pose = pose if pose is not None else random_pose(rng, height, width)
    parts = body_parts(pose, height, width)
    worn = {kind: wear(rng, kind, pose, height, width, plain=not textured) for kind, textured in outfit.items()}
    semantic = np.full((height, width), BG, np.uint8)
    # Back to front: legs, bare torso (torso skin), lower garments, arms, tops and dresses (sleeves over arms).
    layers: list[tuple[np.ndarray, int]] = [
        (parts["r_upper_leg"] | parts["r_lower_leg"], LEG_R), (parts["l_upper_leg"] | parts["l_lower_leg"], LEG_L),
        (parts["r_foot"], SHOE_R), (parts["l_foot"], SHOE_L), (parts["torso"] | parts["neck"], NECK)]
    layers += [(worn[kind].on_person, kind) for kind in (PANTS, SKIRT) if kind in worn]
    layers += [(parts["r_upper_arm"] | parts["r_lower_arm"] | parts["r_hand"], ARM_R),
               (parts["l_upper_arm"] | parts["l_lower_arm"] | parts["l_hand"], ARM_L)]
    layers += [(worn[kind].on_person, kind) for kind in (DRESS, UPPER) if kind in worn]
    for region, cls in layers:
        semantic[region] = cls
    hair_centre = pose["head"] + [0, -0.02 * height]
    semantic[_ellipse((height, width), hair_centre, (0.095 * width, 0.075 * height))] = HAIR
    face = parts["r_head"] | parts["l_head"]
    face &= np.arange(height)[:, None] > pose["head"][1] - 0.04 * height
    semantic[face] = FACE

    skin, hair = np.array(SKIN[rng.integers(len(SKIN))]), np.array(HAIR_COLORS[rng.integers(len(HAIR_COLORS))])
    shoes = rng.integers(0, 120, 3)
    image = np.empty((height, width, 3), np.float32)
    gradient = np.linspace(0, 15, height, dtype=np.float32)[:, None, None]
    image[:] = rng.uniform(215, 240, 3).astype(np.float32) + gradient
    for cls, color in ((LEG_R, skin), (LEG_L, skin), (ARM_R, skin), (ARM_L, skin), (NECK, skin), (FACE, skin),
                       (SHOE_R, shoes), (SHOE_L, shoes), (HAIR, hair)):
        image[semantic == cls] = color
    for kind, garment in worn.items():
        rendered = cv2.remap(garment.flat, garment.map_x, garment.map_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
        image[semantic == kind] = rendered[semantic == kind]
    shading = 0.92 + 0.08 * np.cos(np.linspace(-1.2, 1.2, width, dtype=np.float32))[None, :, None]
    image = np.clip(image * shading, 0, 255).astype(np.uint8)
    image[semantic == BG] = np.clip(image[semantic == BG] / shading[0, 0, 0], 0, 255).astype(np.uint8)

    textured = next(kind for kind, is_textured in outfit.items() if is_textured)
    garment = worn[textured]
    visible = semantic == textured
    flow = np.stack([(2 * garment.map_x + 1) / width - 1, (2 * garment.map_y + 1) / height - 1]).astype(np.float32)
    flow[:, ~visible] = np.nan
    body = semantic != BG
    densepose = np.where(body, densepose_parts(parts), 0).astype(np.uint8)
    return Person(image=image, semantic=semantic, densepose=densepose, pose=pose, garment=garment, flow=flow)


# -- writers ----------------------------------------------------------------------------------------

def _save_jpeg(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, quality=95)


def _save_palette_png(path: Path, labels: np.ndarray) -> None:
    label_image(labels).save(path)


def _save_flow(path: Path, flow: np.ndarray) -> None:
    np.savez_compressed(path, **{FLOW_KEY: flow})


BODY_25 = {0: "nose", 1: "neck", 2: "r_shoulder", 3: "r_elbow", 4: "r_wrist", 5: "l_shoulder", 6: "l_elbow",
           7: "l_wrist", 8: "mid_hip", 9: "r_hip", 10: "r_knee", 11: "r_ankle", 12: "l_hip", 13: "l_knee",
           14: "l_ankle", 15: "r_eye", 16: "l_eye", 17: "r_ear", 18: "l_ear"}
COCO_18 = {0: "nose", 1: "neck", 2: "r_shoulder", 3: "r_elbow", 4: "r_wrist", 5: "l_shoulder", 6: "l_elbow",
           7: "l_wrist", 8: "r_hip", 9: "r_knee", 10: "r_ankle", 11: "l_hip", 12: "l_knee", 13: "l_ankle",
           14: "r_eye", 15: "l_eye", 16: "r_ear", 17: "l_ear"}
SKELETON = [(1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (10, 11), (8, 12), (12, 13),
            (13, 14), (0, 1)]


def openpose_json(pose: Pose, rng: np.random.Generator) -> dict:
    """OpenPose 1.3 output with one person, BODY_25 in image pixels (feet keypoints missing)."""
    flat = []
    for index in range(25):
        if index in BODY_25:
            x, y = pose[BODY_25[index]]
            flat += [round(float(x), 3), round(float(y), 3), round(float(rng.uniform(0.6, 0.95)), 6)]
        else:
            flat += [0, 0, 0]
    person = {"person_id": [-1], "pose_keypoints_2d": flat, "face_keypoints_2d": [], "hand_left_keypoints_2d": [],
              "hand_right_keypoints_2d": [], "pose_keypoints_3d": [], "face_keypoints_3d": [],
              "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}
    return {"version": 1.3, "people": [person]}


def render_skeleton(pose: Pose, height: int, width: int, names: dict[int, str], edges: list[tuple[int, int]]
                    ) -> np.ndarray:
    canvas = np.zeros((height, width, 3), np.uint8)
    thickness = max(1, height // 128)
    for number, (a, b) in enumerate(edges):
        color = cv2.applyColorMap(np.uint8([[number * 255 // len(edges)]]), cv2.COLORMAP_HSV)[0, 0].tolist()
        cv2.line(canvas, _pt(pose[names[a]]), _pt(pose[names[b]]), color, thickness * 2)
    for name in names.values():
        cv2.circle(canvas, _pt(pose[name]), thickness * 2, (255, 255, 255), -1)
    return canvas


def _pair_seed(seed: int, dataset: int, category: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, dataset, category, index])
