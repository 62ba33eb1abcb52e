"""Writes prepared photos in the VITON-HD layout (``leffa-pl-prepare --layout vitonhd``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from leffa_pl.annotators.annotation import PersonAnnotation, inpaint_mask
from leffa_pl.annotators.keypoints import BODY25_FROM_COCO17, MIN_SCORE, OPENPOSE_VERSION, BodyKeypoints, stored_points
from leffa_pl.data.file_writers import write_jpeg, write_json, write_palette_png, write_png, write_text
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.datasets.writing import AGNOSTIC_GRAY, GARMENT_BACKGROUND, SPLITS, Item, unpaired


def openpose_json(keypoints: BodyKeypoints, min_score: float = MIN_SCORE) -> dict:
    """VITON-HD ``openpose_json`` content: one person, BODY_25 (x, y, confidence) in pixels, missing = 0, 0, 0."""
    flat = [round(value, 3) for point in stored_points(keypoints, BODY25_FROM_COCO17, min_score) for value in point]
    return {"version": OPENPOSE_VERSION, "people": [{"person_id": [-1], "pose_keypoints_2d": flat}]}


class VitonHDLayout:
    """The reader's layout (``vitonhd.FILES``, e.g. ``{train,test}/image-parse-v3``) and pair files; ids
    ``NNNNN_00``."""

    written = ("person", "garment", "garment_mask", "labels", "keypoints", "densepose", "mask", "agnostic")
    stores_masks = True

    name = "vitonhd"
    title = "VITON-HD"
    label_set, keypoint_format = vitonhd.LABEL_SET, vitonhd.KEYPOINT_FORMAT

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def make_id(number: int) -> str:
        return f"{number:05d}_00"

    @staticmethod
    def id_number(identifier: str) -> int:
        return int(identifier.split("_")[0])

    def outputs(self, item: Item) -> dict[str, Path]:
        paths = vitonhd.VitonHDPaths(self.root)
        return {kind: paths.file(item.split, kind, vitonhd.image_name(item.id)) for kind in self.written}

    def write(self, item: Item, person: np.ndarray, garment: np.ndarray, annotation: PersonAnnotation) -> None:
        files = self.outputs(item)
        labels, label_set = annotation.mask_labels or (annotation.labels, None)
        mask = inpaint_mask(item.mask_recipe, self, labels, annotation.keypoints, label_set=label_set)
        write_palette_png(files["labels"], annotation.labels)
        write_json(files["keypoints"], openpose_json(annotation.keypoints))
        # No chroma subsampling: the PARULA colours decode back to the same part indices.
        write_jpeg(files["densepose"], vitonhd.encode_densepose(annotation.densepose.shown_parts), quality=100,
                   subsampling=0)
        write_png(files["mask"], mask.astype(np.uint8) * 255)
        write_jpeg(files["agnostic"], np.where(mask[..., None], np.uint8(AGNOSTIC_GRAY), person))
        write_jpeg(files["garment_mask"], ((garment < GARMENT_BACKGROUND).any(-1) * 255).astype(np.uint8))
        write_jpeg(files["garment"], garment)
        write_jpeg(files["person"], person)  # last: a present person image means a finished item

    def write_pair_files(self, items: Sequence[Item]) -> list[Path]:
        by_split = {split: [item.id for item in items if item.split == split] for split in SPLITS}
        lines = {"train": [vitonhd.pair_line(i, i) for i in by_split["train"]],
                 "test": [vitonhd.pair_line(a, b) for a, b in unpaired(by_split["test"])]}
        paths = vitonhd.VitonHDPaths(self.root)
        return [write_text(paths.pair_file(split), "".join(f"{line}\n" for line in lines[split])) for split in SPLITS]
