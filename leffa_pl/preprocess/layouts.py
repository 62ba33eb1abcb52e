"""Writers of the try-on dataset layouts (datasets.md) for prepared photos: which files an item gets, writing
them (each atomically), and the pair files.

An ``Item`` is one prepared pair: a person photo and the garment they wear, with its dataset id, split
(``train`` or ``test``), DressCode category and the mask recipe of its stored inpaint mask (VITON-HD; empty for
DressCode, which stores no masks). Pair files list the items whose files are all present:
training and paired testing use each person's own garment; the unpaired test file pairs each test person
with the next test item's garment (of the same category), as the datasets' unpaired files do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from leffa_pl.data import dresscode, vitonhd
from leffa_pl.preprocess.annotate import PersonAnnotation, inpaint_mask
from leffa_pl.preprocess.files import write_jpeg, write_json, write_npz, write_palette_png, write_png, write_text
from leffa_pl.preprocess.keypoints import dresscode_json, openpose_json

SPLITS = ("train", "test")
GARMENT_BACKGROUND = 250  # garment photos are on white: darker pixels are the garment (cloth-mask)
AGNOSTIC_GRAY = 128


@dataclass(frozen=True)
class Item:
    id: str
    split: str
    category: str
    person: str  # source photo paths
    garment: str
    mask_recipe: str = ""


def _unpaired(ids: list[str]) -> list[tuple[str, str]]:
    return [(identifier, ids[(k + 1) % len(ids)]) for k, identifier in enumerate(ids)]


class VitonHDLayout:
    """The reader's layout (``vitonhd.FILES``, e.g. ``{train,test}/image-parse-v3``) and pair files; ids
    ``NNNNN_00``."""

    written = ("person", "garment", "garment_mask", "labels", "keypoints", "densepose", "mask", "agnostic")
    stores_masks = True

    name = "vitonhd"
    title = "VITON-HD"

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
        mask = inpaint_mask(item.mask_recipe, "vitonhd", labels, annotation.keypoints, label_set=label_set)
        write_palette_png(files["labels"], annotation.labels)
        write_json(files["keypoints"], openpose_json(annotation.keypoints))
        # No chroma subsampling: the PARULA colours decode back to the same part indices.
        write_jpeg(files["densepose"], annotation.densepose.vitonhd_rendering(), quality=100, subsampling=0)
        write_png(files["mask"], mask.astype(np.uint8) * 255)
        write_jpeg(files["agnostic"], np.where(mask[..., None], np.uint8(AGNOSTIC_GRAY), person))
        write_jpeg(files["garment_mask"], ((garment < GARMENT_BACKGROUND).any(-1) * 255).astype(np.uint8))
        write_jpeg(files["garment"], garment)
        write_jpeg(files["person"], person)  # last: a present person image means a finished item

    def write_pair_files(self, items: Sequence[Item]) -> list[Path]:
        by_split = {split: [item.id for item in items if item.split == split] for split in SPLITS}
        lines = {"train": [vitonhd.pair_line(i, i) for i in by_split["train"]],
                 "test": [vitonhd.pair_line(a, b) for a, b in _unpaired(by_split["test"])]}
        paths = vitonhd.VitonHDPaths(self.root)
        return [write_text(paths.pair_file(split), "".join(f"{line}\n" for line in lines[split])) for split in SPLITS]


class DressCodeLayout:
    """The reader's layout (``dresscode.FILES``, e.g. ``{category}/label_maps``) and the pair files per category
    and at the root; ids of 6 digits. DressCode ships no masks: the data module computes them for the category."""

    written = ("person", "garment", "keypoints", "labels", "densepose", "densepose_uv")
    stores_masks = False

    name = "dresscode"
    title = "DressCode"

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
                     "test_unpaired": _unpaired(ids["test"])}
            for split, pairs in lines.items():
                text = [f"{dresscode.pair_line(a, b)}\n" for a, b in pairs]
                root_lines[split] += text
                if (self.root / category).is_dir():
                    written.append(write_text(paths.pair_file(split, category), "".join(text)))
        return written + [write_text(paths.pair_file(split, "all"), "".join(text))
                          for split, text in root_lines.items()]


LAYOUTS = {"vitonhd": VitonHDLayout, "dresscode": DressCodeLayout}
