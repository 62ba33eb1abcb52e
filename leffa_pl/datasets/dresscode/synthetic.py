"""The synthetic DressCode copy (``make_dresscode``): people of ``synthetic_people`` in the real layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.synthetic_people import (
    ATR,
    COCO_18,
    DEFAULT_SIZE,
    DRESS,
    PANTS,
    SKIRT,
    UPPER,
    _pair_seed,
    _save_flow,
    _save_jpeg,
    _save_palette_png,
    draw_person,
    render_skeleton,
)

DRESSCODE_OFFSETS = {"upper_body": 0, "lower_body": 13000, "dresses": 20000}


def make_dresscode(root: str | Path, n_train: int = 8, n_test: int = 4, size: tuple[int, int] = DEFAULT_SIZE,
                   seed: int = 0, categories: Sequence[str] = dresscode.CATEGORIES) -> Path:
    """Write a DressCode copy (per-category folders, per-category and root pair files) of ``size`` (H, W)."""
    root, (height, width) = Path(root), size
    paths = dresscode.DressCodePaths(root)
    root_lines: dict[str, list[str]] = {split: [] for split in dresscode.PAIR_FILES}
    for category_index, category in enumerate(dresscode.CATEGORIES):
        if category not in categories:
            continue
        for kind in dresscode.FILES:
            paths.folder(category, kind).mkdir(parents=True, exist_ok=True)
        ids = [f"{DRESSCODE_OFFSETS[category] + i:06d}" for i in range(n_train + n_test)]
        for index, identifier in enumerate(ids):
            rng = _pair_seed(seed, 1, category_index, index)
            if category == "upper_body":
                outfit = {UPPER: True, PANTS: False}
            elif category == "lower_body":
                outfit = {UPPER: False, PANTS if rng.random() < 0.6 else SKIRT: True}
            else:
                outfit = {DRESS: True}
            person = draw_person(rng, height, width, outfit)
            labels = np.vectorize(ATR.get, otypes=[np.uint8])(person.semantic)
            frame = np.array([dresscode.KEYPOINT_FRAME[1] / width, dresscode.KEYPOINT_FRAME[0] / height])
            keypoints = [[*(np.round(person.pose[COCO_18[i]] * frame, 3).tolist()),
                          round(float(rng.uniform(0.6, 0.95)), 6), i] for i in range(18)]
            file = {kind: paths.file(category, kind, identifier) for kind in dresscode.FILES}
            _save_jpeg(file["person"], person.image)
            _save_jpeg(file["garment"], person.garment.flat)
            file["keypoints"].write_text(json.dumps({"keypoints": keypoints}))
            _save_palette_png(file["labels"], labels)
            coco_edges = [(1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
                          (11, 12), (12, 13), (0, 1)]
            _save_jpeg(file["skeleton"], render_skeleton(person.pose, height, width, COCO_18, coco_edges))
            Image.fromarray(person.densepose, mode="L").save(file["densepose"])
            uv = np.where(person.densepose > 0, rng.uniform(0, 1, (2, height, width)), 0)[:, ::2, ::2]
            np.savez_compressed(file["densepose_uv"], uv=uv.astype(np.float32))
            _save_flow(file["flow"], person.flow)
        train, test = ids[:n_train], ids[n_train:]
        per_split = {
            "train": [dresscode.pair_line(i, i) for i in train],
            "test_paired": [dresscode.pair_line(i, i) for i in test],
            "test_unpaired": [dresscode.pair_line(i, test[(k + 1) % len(test)]) for k, i in enumerate(test)],
        }
        for split, lines in per_split.items():
            paths.pair_file(split, category).write_text("\n".join(lines) + "\n")
            root_lines[split] += lines
    for split, lines in root_lines.items():
        paths.pair_file(split, "all").write_text("\n".join(lines) + "\n")
    return root
