"""DressCode: pair lists per category or mixed at the root, keypoints, and the Dataset.

Layout (datasets.md): ``{upper_body,lower_body,dresses}/{images,keypoints,label_maps,dense,...}``
with ``{id}_0.jpg`` person, ``{id}_1.jpg`` garment, ``{id}_2.json`` keypoints, ``{id}_4.png`` ATR
labels, ``{id}_5.png`` DensePose part index (every name written once, here: ``FILES``, ``DressCodePaths``,
used by the reader, the synthetic generator and ``leffa-pl-prepare``). Pair files ``train_pairs.txt``,
``test_pairs_paired.txt`` and ``test_pairs_unpaired.txt`` exist per category and at the root (mixed
categories; an id's category is the folder that holds its image). Training uses the person's own
garment, and so does paired testing. Masks are always computed (DressCode ships none), for the
garment's category.

The DensePose input of Leffa's DressCode model is the part index I as pixel values, repeated on three
channels, then scaled like any image to [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from leffa_pl.data import mask_recipes, masks
from leffa_pl.data.files import DataFileError, FileProblem, RequiredFile
from leffa_pl.data.io import read_flow, read_json, read_label, read_pair_list
from leffa_pl.data.layout import DENSEPOSE_PARTS, FLOW_FOLDER
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.transforms import (
    DENSEPOSE_FLIP_LUT,
    AugmentConfig,
    JointAugment,
    Views,
    contract_sample,
    resize_views,
    sample_rng,
)

CATEGORIES = ("upper_body", "lower_body", "dresses")
Category = Literal["upper_body", "lower_body", "dresses", "all"]
Split = Literal["train", "test_paired", "test_unpaired"]
PAIR_FILES = {"train": "train_pairs.txt", "test_paired": "test_pairs_paired.txt",
              "test_unpaired": "test_pairs_unpaired.txt"}
KEYPOINT_FRAME = (512, 384)  # (H, W) of the keypoint coordinates
# What ``label_maps`` and ``keypoints`` hold (mask_recipes converts them to what a recipe reads), and the recipe
# of the masks by default.
LABEL_SET, KEYPOINT_FORMAT = "atr", "coco18"
DEFAULT_MASK_RECIPE = "dresscode"
# What a category folder holds, written only here (datasets.md): kind -> (folder, file name after the id).
# The reader needs the first five (and flow); the generator and leffa-pl-prepare write more.
FILES = {
    "person": ("images", "_0.jpg"),
    "garment": ("images", "_1.jpg"),
    "keypoints": ("keypoints", "_2.json"),  # COCO-18 in the KEYPOINT_FRAME
    "labels": ("label_maps", "_4.png"),  # ATR parsing, palette PNG
    "densepose": ("dense", "_5.png"),  # part index I
    "densepose_uv": ("dense", "_5_uv.npz"),
    "skeleton": ("skeletons", "_5.jpg"),
    "flow": (FLOW_FOLDER, ".npz"),  # synthetic copies only
}


def file_name(kind: str, identifier: str) -> str:
    """``file_name("person", "048462")`` -> ``048462_0.jpg`` (pair files list the person and garment names)."""
    return f"{identifier}{FILES[kind][1]}"


def pair_line(person: str, garment: str) -> str:
    """One line of a pair file (ids), without the newline."""
    return f"{file_name('person', person)}    {file_name('garment', garment)}"


@dataclass(frozen=True)
class DressCodePaths:
    """Where each file of a DressCode copy at ``root`` lives."""

    root: Path

    def pair_file(self, split: Split, category: Category) -> Path:
        """A split's pair file of one category, or at the root for ``all`` (mixed categories)."""
        return (self.root if category == "all" else self.root / category) / PAIR_FILES[split]

    def folder(self, category: str, kind: str) -> Path:
        return self.root / category / FILES[kind][0]

    def file(self, category: str, kind: str, identifier: str) -> Path:
        return self.folder(category, kind) / file_name(kind, identifier)


@dataclass(frozen=True)
class DressCodePair:
    """Ids (``048462``) with the category folder that holds each."""

    person: str
    person_category: str
    garment: str
    garment_category: str


def _image_id(name: str, path: Path, line_hint: str) -> str:
    image_stems = [Path(FILES[kind][1]).stem for kind in ("person", "garment")]  # "_0", "_1"
    stem = Path(name).stem
    identifier, separator, suffix = stem.rpartition("_")
    if not identifier or f"{separator}{suffix}" not in image_stems:
        expected = " / ".join(file_name(kind, "ID") for kind in ("person", "garment"))
        raise DataFileError(path, f"unexpected image name {name!r} in {line_hint} (expected {expected})")
    return identifier


def read_pairs(root: str | Path, split: Split,
               category: Category) -> tuple[list[DressCodePair], list[FileProblem]]:
    """Pairs of a split for one category or all; ids found in no category folder are returned as problems.

    Raises ``DataFileError`` for a missing or malformed pair file.
    """
    paths = DressCodePaths(Path(root))
    pair_file = paths.pair_file(split, category)
    listed = read_pair_list(pair_file)
    candidates = CATEGORIES if category == "all" else (category,)
    holders = {c: _listing(paths.folder(c, "person")) for c in candidates}  # person and garment images
    pairs, problems = [], []
    for person_name, garment_name in listed:
        person = _image_id(person_name, pair_file, "the person column")
        paired = split != "test_unpaired"  # own garment, whatever the second column says
        garment = person if paired else _image_id(garment_name, pair_file, "the garment column")
        located = []
        for identifier, kind in ((person, "person"), (garment, "garment")):
            found = [c for c in candidates if file_name(kind, identifier) in holders[c]]
            if len(found) != 1:
                folder = candidates[0] if len(candidates) == 1 else "{" + ",".join(candidates) + "}"
                problems.append(FileProblem(paths.file(folder, kind, identifier),
                                            "missing" if not found else f"ambiguous: in {found}"))
                break
            located.append(found[0])
        else:
            pairs.append(DressCodePair(person, located[0], garment, located[1]))
    return pairs, problems


def has_flow(root: str | Path, split: Split, category: Category) -> bool:
    """Whether ground-truth flow exists (synthetic data; unpaired pairs have none)."""
    categories = CATEGORIES if category == "all" else (category,)
    paths = DressCodePaths(Path(root))
    return split != "test_unpaired" and all(paths.folder(c, "flow").is_dir() for c in categories)


def _listing(folder: Path) -> frozenset[str]:
    return frozenset(p.name for p in folder.iterdir()) if folder.is_dir() else frozenset()


def read_keypoint_file(path: Path) -> np.ndarray:
    """COCO-18 keypoints as [18, 2] (x, y) in the 384x512 keypoint frame; NaN where missing (x <= 1 and y <= 1,
    as the official code tests it: a point on the left or top edge is kept)."""
    data = read_json(path)
    try:
        points = np.asarray(data["keypoints"], dtype=np.float32)[:, :2].copy()
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise DataFileError(path, f"not a DressCode keypoint file ({error!r})") from None
    points[(points[:, 0] <= 1) & (points[:, 1] <= 1)] = np.nan
    return points


def scale_keypoints(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Keypoints from the 384x512 keypoint frame to pixels of an image of ``size`` (H, W)."""
    return points * np.array([size[1] / KEYPOINT_FRAME[1], size[0] / KEYPOINT_FRAME[0]], np.float32)


def read_keypoints(path: Path, size: tuple[int, int]) -> np.ndarray:
    """COCO-18 keypoints as [18, 2] (x, y) pixels of an image of ``size`` (H, W); NaN where missing."""
    return scale_keypoints(read_keypoint_file(path), size)


def read_part_index(path: Path) -> np.ndarray:
    """The ``densepose`` file (``dense/{id}_5.png``): the DensePose part index map (0..24) as uint8 [H, W]."""
    parts = read_label(path)
    if parts.max() > DENSEPOSE_PARTS:
        raise DataFileError(path, f"part index {parts.max()} > {DENSEPOSE_PARTS}")
    return parts


def encode_densepose(parts: np.ndarray) -> torch.Tensor:
    """Part index map [H, W] -> float32 [3, H, W]: I as pixel values on three channels, in [-1, 1]."""
    return torch.from_numpy(parts.astype(np.float32) / 127.5 - 1.0)[None].repeat(3, 1, 1)


class DressCodeDataset(PairDataset[DressCodePair]):
    """Contract samples (see ``contract.py``) for DressCode pairs at ``resolution`` (H, W)."""

    def __init__(self, root: str | Path, pairs: list[DressCodePair], resolution: tuple[int, int],
                 with_flow: bool = False, augment: JointAugment | None = None,
                 mask_recipe: str = DEFAULT_MASK_RECIPE):
        self.root = Path(root)
        self.pairs = pairs
        self.resolution = tuple(resolution)
        self.mask_recipe = mask_recipes.get(mask_recipe).name
        self.with_flow = with_flow
        self.augment = augment

    def files(self, pair: DressCodePair) -> dict[str, RequiredFile]:
        paths = DressCodePaths(self.root)

        def person_file(kind: str) -> Path:
            return paths.file(pair.person_category, kind, pair.person)

        files = {
            "person": RequiredFile(person_file("person"), "rgb"),
            "garment": RequiredFile(paths.file(pair.garment_category, "garment", pair.garment), "rgb"),
            "keypoints": RequiredFile(person_file("keypoints"), "json", read_keypoint_file),
            "labels": RequiredFile(person_file("labels"), "label", aligned=True),
            "densepose": RequiredFile(person_file("densepose"), "label", read_part_index, aligned=True),
        }
        if self.with_flow:
            files["flow"] = RequiredFile(person_file("flow"), "npz", read_flow, aligned=True)
        return files

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        data = self.read(index)
        views = Views(person=data["person"], reference=data["garment"],
                      labels={"labels": data["labels"], "densepose": data["densepose"]}, flow=data.get("flow"))
        views = resize_views(views, self.resolution)
        labels = views.labels.pop("labels")
        category = pair.garment_category
        native = mask_recipes.ParsedPerson(data["labels"], LABEL_SET, data["keypoints"], KEYPOINT_FORMAT,
                                           KEYPOINT_FRAME)
        views.labels["inpaint_mask"] = mask_recipes.inpaint_mask(self.mask_recipe, native, category,
                                                                 self.resolution).astype(np.uint8)
        views.labels["loss_region"] = masks.dresscode_garment_region(labels, category).astype(np.uint8)
        if self.augment is not None:
            views = self.augment(views, sample_rng(index))
        person_id, reference_id = self.sample_ids(index)
        return contract_sample(person=views.person, reference=views.reference,
                               inpaint_mask=views.labels["inpaint_mask"],
                               densepose=encode_densepose(views.labels["densepose"]),
                               loss_region=views.labels["loss_region"], person_id=person_id,
                               reference_id=reference_id, flow=views.flow)

    def sample_ids(self, index: int) -> tuple[str, str]:
        return file_name("person", self.pairs[index].person), file_name("garment", self.pairs[index].garment)


def dresscode_augment(config: AugmentConfig) -> JointAugment:
    """Joint augmentation with the DensePose left/right parts swapped under flips."""
    return JointAugment(config, flip_luts={"densepose": DENSEPOSE_FLIP_LUT})
