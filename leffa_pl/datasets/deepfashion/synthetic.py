"""Generate a small synthetic DeepFashion In-shop dataset in the exact layout, with DensePose IUV maps.

Writes ``{out}/deepfashion/``: ``train.lst``, ``test.lst``, ``fasion-resize-pairs-{train,test}.csv``,
``fasion-resize-annotation-{train,test}.csv`` (``:``-separated, COCO-18 in the 256x176 frame, -1 = missing),
``{train,test}_highres/`` with flattened-name JPEGs, and ``densepose/{stem}.png`` (U*255, V*255, I), as
``deepfashion.py`` reads them. Train and test people are disjoint, as in the real split.

Each person id is one procedurally drawn person (``synthetic_people.draw_person``: skin, hair, a textured garment)
photographed in ``views`` random poses: the appearance comes from a generator seeded by the id alone, so
the clothes are identical across the poses of one id, and each pose from a generator seeded by (id, view).
All drawn people face the camera; the view names (front, side, back, full) are only file-name labels.
Pairs are all ordered (from, to) pairs of different views of one id, as in the real pair files.

Images are 220x150 (H x W) by default: the 1101x750 of ``img_highres`` divided by 5, same aspect.
DensePose: I is the drawn body part; U runs along each part's axis (e.g. shoulder -> elbow) and V across it,
both in [0, 1], so a body point keeps roughly the same (I, U, V) from pose to pose.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from leffa_pl.datasets.deepfashion import reader as deepfashion
from leffa_pl.datasets.synthetic_people import (
    COCO_18,
    DENSEPOSE_ORDER,
    DRESS,
    PANTS,
    SKIRT,
    UPPER,
    Pose,
    body_parts,
    draw_person,
    random_pose,
)

DEFAULT_SIZE = (220, 150)
VIEWS = ("front", "side", "back", "full")
# (gender, category, outfit {garment kind: textured?}); categories keep their real spelling.
PEOPLE = [("WOMEN", "Blouses_Shirts", {UPPER: True, SKIRT: False}), ("MEN", "Denim", {UPPER: False, PANTS: True}),
          ("WOMEN", "Dresses", {DRESS: True}), ("MEN", "Tees_Tanks", {UPPER: True, PANTS: False}),
          ("WOMEN", "Skirts", {UPPER: False, SKIRT: True}), ("MEN", "Jackets_Vests", {UPPER: True, PANTS: False})]


def _part_axes(pose: Pose, height: int, width: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(start, end) of the axis along which U runs, per drawn body part."""
    axes = {"torso": (pose["neck"], pose["mid_hip"]), "neck": (pose["neck"], pose["mid_hip"])}
    half_head = np.array([0.0, 0.075 * height])
    axes["r_head"] = axes["l_head"] = (pose["head"] - half_head, pose["head"] + half_head)
    for side, outward in (("r", -1.0), ("l", 1.0)):
        shoulder, elbow, wrist = pose[f"{side}_shoulder"], pose[f"{side}_elbow"], pose[f"{side}_wrist"]
        axes[f"{side}_upper_arm"], axes[f"{side}_lower_arm"] = (shoulder, elbow), (elbow, wrist)
        axes[f"{side}_hand"] = (wrist, wrist + (wrist - elbow) * 0.36)
        hip, knee, ankle = pose[f"{side}_hip"], pose[f"{side}_knee"], pose[f"{side}_ankle"]
        axes[f"{side}_upper_leg"], axes[f"{side}_lower_leg"] = (hip, knee), (knee, ankle)
        axes[f"{side}_foot"] = (ankle - [outward * 0.03 * width, 0],
                                ankle + [outward * 0.07 * width, 0.02 * height])
    return axes


def densepose_iuv(pose: Pose, parts_index: np.ndarray) -> np.ndarray:
    """The stored IUV map (U*255, V*255, I) of a drawn person whose part index map is ``parts_index``."""
    height, width = parts_index.shape
    parts = body_parts(pose, height, width)
    axes = _part_axes(pose, height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
    for name in DENSEPOSE_ORDER:  # the drawing order of densepose_parts: later parts cover earlier ones
        region = parts[name]
        if not region.any():
            continue
        start, end = (np.asarray(p, np.float32) for p in axes[name])
        direction = end - start
        length = max(float(np.hypot(*direction)), 1e-3)
        along = ((x - start[0]) * direction[0] + (y - start[1]) * direction[1]) / length**2
        across = ((x - start[0]) * direction[1] - (y - start[1]) * direction[0]) / length
        half_width = max(float(np.abs(across[region]).max()), 1e-3)
        u[region] = np.clip(along[region], 0, 1)
        v[region] = np.clip(0.5 + across[region] / (2 * half_width), 0, 1)
    return deepfashion.encode_iuv(parts_index, u, v)


def _annotation_row(name: str, pose: Pose, size: tuple[int, int], rng: np.random.Generator) -> str:
    """``name: [y...]: [x...]`` in the 256x176 frame; points outside it, and some ears, are -1."""
    frame_h, frame_w = deepfashion.KEYPOINT_FRAME
    ys, xs = [], []
    for index in range(deepfashion.KEYPOINTS):
        x, y = pose[COCO_18[index]] * [frame_w / size[1], frame_h / size[0]]
        hidden = index >= 16 and rng.random() < 0.3  # an ear turned away
        inside = 0 <= x < frame_w and 0 <= y < frame_h
        ys.append(int(round(y)) if inside and not hidden else -1)
        xs.append(int(round(x)) if inside and not hidden else -1)
    return f"{name}: [{', '.join(map(str, ys))}]: [{', '.join(map(str, xs))}]"


def make_deepfashion(root: str | Path, train_people: int = 6, test_people: int = 3, views: int = 3,
                     size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0) -> Path:
    """Write a DeepFashion copy with ``train_people`` + ``test_people`` ids, ``views`` poses each, to ``root``."""
    if not 2 <= views <= len(VIEWS):
        raise ValueError(f"views must be in 2..{len(VIEWS)}, got {views}")
    root, (height, width) = Path(root), size
    (root / deepfashion.DENSEPOSE_FOLDER).mkdir(parents=True, exist_ok=True)
    people = {"train": range(train_people), "test": range(train_people, train_people + test_people)}
    for split, indices in people.items():
        (root / deepfashion.split_folder(split)).mkdir(parents=True, exist_ok=True)
        names, pairs, annotations = [], [], []
        for person_index in indices:
            gender, category, outfit = PEOPLE[person_index % len(PEOPLE)]
            own = []
            for view in range(views):
                original = (f"{gender}/{category}/id_{person_index + 1:08d}/"
                            f"01_{view + 1}_{VIEWS[view]}.jpg")
                name = deepfashion.flatten_name(original)
                pose = random_pose(np.random.default_rng([seed, 2, person_index, view + 1]), height, width)
                person = draw_person(np.random.default_rng([seed, 2, person_index]), height, width, outfit, pose)
                Image.fromarray(person.image).save(deepfashion.image_path(root, split, name, "flat"), quality=95)
                Image.fromarray(densepose_iuv(pose, person.densepose), mode="RGB").save(
                    deepfashion.densepose_path(root, name))
                annotations.append(_annotation_row(name, pose, size, np.random.default_rng([seed, 3, person_index,
                                                                                            view])))
                own.append(name)
            names += own
            pairs += [(a, b) for a in own for b in own if a != b]
        (root / deepfashion.SPLIT_LISTS[split]).write_text("\n".join(names) + "\n")
        with open(root / deepfashion.PAIR_FILES[split], "w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows([("from", "to"), *pairs])
        (root / deepfashion.ANNOTATION_FILES[split]).write_text(
            "\n".join([deepfashion.ANNOTATION_HEADER, *annotations]) + "\n")
    return root
