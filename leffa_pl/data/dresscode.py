"""DressCode: pair lists per category or mixed at the root, keypoints, and the Dataset.

Layout (datasets.md): ``{upper_body,lower_body,dresses}/{images,keypoints,label_maps,dense,...}``
with ``{id}_0.jpg`` person, ``{id}_1.jpg`` garment, ``{id}_2.json`` keypoints, ``{id}_4.png`` ATR
labels, ``{id}_5.png`` DensePose part index. Pair files ``train_pairs.txt``,
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

from leffa_pl.data import masks
from leffa_pl.data.files import DataFileError, FileProblem, RequiredFile
from leffa_pl.data.io import read_flow, read_json, read_label, read_pair_list
from leffa_pl.data.layout import DENSEPOSE_PARTS, FLOW_FOLDER
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.transforms import (
    DENSEPOSE_FLIP_LUT,
    AugmentConfig,
    JointAugment,
    SampleRandomness,
    Views,
    contract_sample,
    resize_views,
)

CATEGORIES = ("upper_body", "lower_body", "dresses")
Category = Literal["upper_body", "lower_body", "dresses", "all"]
Split = Literal["train", "test_paired", "test_unpaired"]
PAIR_FILES = {"train": "train_pairs.txt", "test_paired": "test_pairs_paired.txt",
              "test_unpaired": "test_pairs_unpaired.txt"}
KEYPOINT_FRAME = (512, 384)  # (H, W) of the keypoint coordinates


@dataclass(frozen=True)
class DressCodePair:
    """Ids (``048462``) with the category folder that holds each."""

    person: str
    person_category: str
    garment: str
    garment_category: str


def _image_id(name: str, path: Path, line_hint: str) -> str:
    stem = Path(name).stem
    identifier, _, suffix = stem.rpartition("_")
    if not identifier or suffix not in ("0", "1"):
        raise DataFileError(path, f"unexpected image name {name!r} in {line_hint} (expected ID_0.jpg / ID_1.jpg)")
    return identifier


def read_pairs(root: str | Path, split: Split,
               category: Category) -> tuple[list[DressCodePair], list[FileProblem]]:
    """Pairs of a split for one category or all; ids found in no category folder are returned as problems.

    Raises ``DataFileError`` for a missing or malformed pair file.
    """
    root = Path(root)
    pair_file = root / PAIR_FILES[split] if category == "all" else root / category / PAIR_FILES[split]
    listed = read_pair_list(pair_file)
    candidates = CATEGORIES if category == "all" else (category,)
    holders = {c: _listing(root / c / "images") for c in candidates}
    pairs, problems = [], []
    for person_name, garment_name in listed:
        person = _image_id(person_name, pair_file, "the person column")
        paired = split != "test_unpaired"  # own garment, whatever the second column says
        garment = person if paired else _image_id(garment_name, pair_file, "the garment column")
        located = []
        for identifier, suffix in ((person, "0"), (garment, "1")):
            found = [c for c in candidates if f"{identifier}_{suffix}.jpg" in holders[c]]
            if len(found) != 1:
                folder = candidates[0] if len(candidates) == 1 else "{" + ",".join(candidates) + "}"
                problems.append(FileProblem(root / folder / "images" / f"{identifier}_{suffix}.jpg",
                                            "missing" if not found else f"ambiguous: in {found}"))
                break
            located.append(found[0])
        else:
            pairs.append(DressCodePair(person, located[0], garment, located[1]))
    return pairs, problems


def has_flow(root: str | Path, split: Split, category: Category) -> bool:
    """Whether ground-truth flow exists (synthetic data; unpaired pairs have none)."""
    categories = CATEGORIES if category == "all" else (category,)
    return split != "test_unpaired" and all((Path(root) / c / FLOW_FOLDER).is_dir() for c in categories)


def _listing(folder: Path) -> frozenset[str]:
    return frozenset(p.name for p in folder.iterdir()) if folder.is_dir() else frozenset()


def read_keypoint_file(path: Path) -> np.ndarray:
    """COCO-18 keypoints as [18, 2] (x, y) in the 384x512 keypoint frame; NaN where invalid."""
    data = read_json(path)
    try:
        points = np.asarray(data["keypoints"], dtype=np.float32)[:, :2].copy()
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise DataFileError(path, f"not a DressCode keypoint file ({error!r})") from None
    points[(points[:, 0] <= 1) | (points[:, 1] <= 1)] = np.nan  # cut off or not detected
    return points


def scale_keypoints(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Keypoints from the 384x512 keypoint frame to pixels of an image of ``size`` (H, W)."""
    return points * np.array([size[1] / KEYPOINT_FRAME[1], size[0] / KEYPOINT_FRAME[0]], np.float32)


def read_keypoints(path: Path, size: tuple[int, int]) -> np.ndarray:
    """COCO-18 keypoints as [18, 2] (x, y) pixels of an image of ``size`` (H, W); NaN where invalid."""
    return scale_keypoints(read_keypoint_file(path), size)


def read_part_index(path: Path) -> np.ndarray:
    """``dense/{id}_5.png``: the DensePose part index map (0..24) as uint8 [H, W]."""
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
                 with_flow: bool = False, augment: JointAugment | None = None):
        self.root = Path(root)
        self.pairs = pairs
        self.resolution = tuple(resolution)
        self.with_flow = with_flow
        self.augment = augment
        self._randomness = SampleRandomness()

    def files(self, pair: DressCodePair) -> dict[str, RequiredFile]:
        person, garment = self.root / pair.person_category, self.root / pair.garment_category
        files = {
            "person": RequiredFile(person / "images" / f"{pair.person}_0.jpg", "rgb"),
            "garment": RequiredFile(garment / "images" / f"{pair.garment}_1.jpg", "rgb"),
            "keypoints": RequiredFile(person / "keypoints" / f"{pair.person}_2.json", "json", read_keypoint_file),
            "labels": RequiredFile(person / "label_maps" / f"{pair.person}_4.png", "label", aligned=True),
            "densepose": RequiredFile(person / "dense" / f"{pair.person}_5.png", "label", read_part_index,
                                      aligned=True),
        }
        if self.with_flow:
            files["flow"] = RequiredFile(person / FLOW_FOLDER / f"{pair.person}.npz", "npz", read_flow, aligned=True)
        return files

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        data = self.read(index)
        views = Views(person=data["person"], reference=data["garment"],
                      labels={"labels": data["labels"], "densepose": data["densepose"]}, flow=data.get("flow"))
        views = resize_views(views, self.resolution)
        labels = views.labels.pop("labels")
        keypoints = scale_keypoints(data["keypoints"], self.resolution)
        category = pair.garment_category
        views.labels["inpaint_mask"] = masks.dresscode_inpaint_mask(labels, keypoints, category).astype(np.uint8)
        views.labels["loss_region"] = masks.dresscode_garment_region(labels, category).astype(np.uint8)
        if self.augment is not None:
            views = self.augment(views, self._randomness(index))
        person_id, reference_id = self.sample_ids(index)
        return contract_sample(person=views.person, reference=views.reference,
                               inpaint_mask=views.labels["inpaint_mask"],
                               densepose=encode_densepose(views.labels["densepose"]),
                               loss_region=views.labels["loss_region"], person_id=person_id,
                               reference_id=reference_id, flow=views.flow)

    def sample_ids(self, index: int) -> tuple[str, str]:
        return f"{self.pairs[index].person}_0.jpg", f"{self.pairs[index].garment}_1.jpg"


def dresscode_augment(config: AugmentConfig) -> JointAugment:
    """Joint augmentation with the DensePose left/right parts swapped under flips."""
    return JointAugment(config, flip_luts={"densepose": DENSEPOSE_FLIP_LUT})
