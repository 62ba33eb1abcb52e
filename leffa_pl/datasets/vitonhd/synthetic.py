"""The synthetic VITON-HD copy (``make_vitonhd``): people of ``synthetic_people`` in the real layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from leffa_pl.data import mask_recipes, masks
from leffa_pl.datasets.synthetic_people import (
    BODY_25,
    CIHP,
    DEFAULT_SIZE,
    PANTS,
    SKELETON,
    SKIRT,
    UPPER,
    _pair_seed,
    _save_flow,
    _save_jpeg,
    _save_palette_png,
    draw_person,
    openpose_json,
    render_skeleton,
)
from leffa_pl.datasets.vitonhd import reader as vitonhd


def make_vitonhd(root: str | Path, n_train: int = 24, n_test: int = 8, size: tuple[int, int] = DEFAULT_SIZE,
                 seed: int = 0, agnostic_mask: bool = True) -> Path:
    """Write a VITON-HD copy (``train/``, ``test/``, ``{train,test}_pairs.txt``) of ``size`` (H, W) to ``root``.

    ``agnostic_mask`` writes the precomputed masks (``agnostic-mask/``: newer archives have it; older ones do not).
    """
    root, (height, width) = Path(root), size
    paths = vitonhd.VitonHDPaths(root)
    kinds = [kind for kind in vitonhd.FILES if agnostic_mask or kind != "mask"]
    for split, count, first in (("train", n_train, 0), ("test", n_test, n_train)):
        for kind in kinds:
            paths.folder(split, kind).mkdir(parents=True, exist_ok=True)
        names = [f"{first + i:05d}_00" for i in range(count)]
        for index, stem in enumerate(names):
            rng = _pair_seed(seed, 0, 0, first + index)
            person = draw_person(rng, height, width, {UPPER: True, PANTS if rng.random() < 0.7 else SKIRT: False})
            parse = np.vectorize(CIHP.get, otypes=[np.uint8])(person.semantic)
            keypoints = np.array([person.pose[BODY_25[i]] if i in BODY_25 else (np.nan, np.nan)
                                  for i in range(25)])
            inpaint = mask_recipes.inpaint_mask(
                vitonhd.DEFAULT_MASK_RECIPE,
                mask_recipes.ParsedPerson(parse, vitonhd.LABEL_SET, keypoints, vitonhd.KEYPOINT_FORMAT, size),
                "upper_body", size)
            garment_only = np.isin(parse, masks.CIHP_UPPER_GARMENT + (masks.CIHP_NECK, 14, 15))
            file = {kind: paths.file(split, kind, vitonhd.image_name(stem)) for kind in kinds}
            _save_jpeg(file["person"], person.image)
            _save_jpeg(file["garment"], person.garment.flat)
            _save_jpeg(file["garment_mask"], person.garment.silhouette.astype(np.uint8) * 255)
            _save_palette_png(file["labels"], parse)
            _save_palette_png(file["labels_agnostic"], np.where(garment_only, 0, parse))
            _save_jpeg(file["agnostic"], np.where(inpaint[..., None], np.uint8(128), person.image))
            if agnostic_mask:
                Image.fromarray(inpaint.astype(np.uint8) * 255, mode="L").save(file["mask"])
            file["keypoints"].write_text(json.dumps(openpose_json(person.pose, rng)))
            Image.fromarray(render_skeleton(person.pose, height, width, BODY_25, SKELETON)).save(
                file["keypoints_rendering"])
            _save_jpeg(file["densepose"], vitonhd.encode_densepose(person.densepose))
            _save_flow(file["flow"], person.flow)
        if split == "train":  # like the real file, some second columns name another garment
            lines = [vitonhd.pair_line(s, names[(i + 1) % count] if i % 4 == 3 else s) for i, s in enumerate(names)]
        else:  # the test pair file holds the unpaired pairs
            lines = [vitonhd.pair_line(s, names[(i + 1) % count]) for i, s in enumerate(names)]
        paths.pair_file(split).write_text("\n".join(lines) + "\n")
    return root
