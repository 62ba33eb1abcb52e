"""Writes prepared photos in the DressCode layout (``leffa-pl-prepare --layout dresscode``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from leffa_pl.annotators.annotation import PersonAnnotation
from leffa_pl.annotators.keypoints import COCO18_FROM_COCO17, MIN_SCORE, BodyKeypoints, stored_points
from leffa_pl.data.file_writers import write_jpeg, write_json, write_npz, write_palette_png, write_png, write_text
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.writing import SPLITS, Item, unpaired


def dresscode_json(keypoints: BodyKeypoints, size: tuple[int, int], min_score: float = MIN_SCORE) -> dict:
    """DressCode ``keypoints/{id}_2.json`` content: COCO-18 [x, y, score, index] in the 384x512 frame, for a
    photo of ``size`` (H, W); missing points are [0, 0, 0, index]."""
    frame_h, frame_w = dresscode.KEYPOINT_FRAME
    sx, sy = frame_w / size[1], frame_h / size[0]
    rows = [[round(x * sx, 3), round(y * sy, 3), round(score, 4), index]
            for index, (x, y, score) in enumerate(stored_points(keypoints, COCO18_FROM_COCO17, min_score))]
    return {"keypoints": rows}


class DressCodeLayout:
    """The reader's layout (``dresscode.FILES``, e.g. ``{category}/label_maps``) and the pair files per category
    and at the root; ids of 6 digits. DressCode ships no masks: the data module computes them for the category."""

    written = ("person", "garment", "keypoints", "labels", "densepose", "densepose_uv")
    stores_masks = False

    name = "dresscode"
    title = "DressCode"
    label_set, keypoint_format = dresscode.LABEL_SET, dresscode.KEYPOINT_FORMAT

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def make_id(number: int) -> str:
        return f"{number:06d}"

    @staticmethod
    def id_number(identifier: str) -> int:
        return int(identifier)

    def outputs(self, item: Item) -> dict[str, Path]:
        paths = dresscode.DressCodePaths(self.root)
        return {kind: paths.file(item.category, kind, item.id) for kind in self.written}

    def write(self, item: Item, person: np.ndarray, garment: np.ndarray, annotation: PersonAnnotation) -> None:
        files = self.outputs(item)
        write_palette_png(files["labels"], annotation.labels)
        write_json(files["keypoints"], dresscode_json(annotation.keypoints, person.shape[:2]))
        write_png(files["densepose"], annotation.densepose.parts)
        write_npz(files["densepose_uv"], uv=annotation.densepose.dresscode_uv())
        write_jpeg(files["garment"], garment)
        write_jpeg(files["person"], person)  # last: a present person image means a finished item

    def write_pair_files(self, items: Sequence[Item]) -> list[Path]:
        paths = dresscode.DressCodePaths(self.root)
        written, root_lines = [], {split: [] for split in dresscode.PAIR_FILES}
        for category in dresscode.CATEGORIES:
            ids = {split: [i.id for i in items if i.category == category and i.split == split] for split in SPLITS}
            lines = {"train": [(i, i) for i in ids["train"]], "test_paired": [(i, i) for i in ids["test"]],
                     "test_unpaired": unpaired(ids["test"])}
            for split, pairs in lines.items():
                text = [f"{dresscode.pair_line(a, b)}\n" for a, b in pairs]
                root_lines[split] += text
                if (self.root / category).is_dir():
                    written.append(write_text(paths.pair_file(split, category), "".join(text)))
        return written + [write_text(paths.pair_file(split, "all"), "".join(text))
                          for split, text in root_lines.items()]
