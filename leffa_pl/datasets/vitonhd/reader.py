"""VITON-HD (``zalando-hd-resized``): pair lists, DensePose rendering codec, and the Dataset.

Layout (datasets.md): ``{train,test}_pairs.txt`` and ``{train,test}/{image, cloth, image-parse-v3,
openpose_json, image-densepose, agnostic-mask, ...}``, every name written once, here (``FILES``,
``VitonHDPaths``: the reader, the synthetic generator and ``leffa-pl-prepare`` use them). Training and
paired testing use the person's own garment (same file name); unpaired testing uses ``test_pairs.txt`` as
written.

``image-densepose`` holds the part index I rendered with OpenCV's PARULA colormap on black. It is
decoded back to I (nearest colour) so that it can be resized with nearest neighbour and flipped with
its left/right parts swapped, then rendered again in the same encoding for the model.

The synthetic datasets add ``{split}/ground-truth-flow/{id}.npz`` (key ``flow``); when that folder
exists the paired samples carry the contract's ``flow``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from leffa_pl.data import mask_recipes, masks
from leffa_pl.data.files import DataFileError, RequiredFile
from leffa_pl.data.io import read_binary_mask, read_flow, read_json, read_label, read_pair_list
from leffa_pl.data.layout import DENSEPOSE_PARTS, FLOW_FOLDER
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.transforms import (
    DENSEPOSE_FLIP_LUT,
    AugmentConfig,
    JointAugment,
    Views,
    contract_sample,
    image_to_tensor,
    resize_views,
    sample_rng,
)

Split = Literal["train", "test_paired", "test_unpaired"]
MaskSource = Literal["precomputed", "computed"]
# What ``labels`` and ``keypoints`` hold (mask_recipes converts them to what a recipe reads), and the recipe of
# computed masks by default (the Leffa app's VITON-HD recipe).
LABEL_SET, KEYPOINT_FORMAT = "cihp", "body25"
CIHP_LABELS = 20
DEFAULT_MASK_RECIPE = "leffa-hd"


@dataclass(frozen=True)
class VitonHDPair:
    """``folder`` is ``train`` or ``test``; ``person``/``garment`` are file names like ``00006_00.jpg``."""

    folder: str
    person: str
    garment: str

    @property
    def stem(self) -> str:
        return Path(self.person).stem


# -- the layout: every folder and file name of a copy, written only here (datasets.md) ----------------------

IMAGE_SUFFIX = ".jpg"  # of the person and garment images the pair files list
# What a split folder holds: kind -> (folder, file name after the id; None: the image's name as listed). The
# reader needs person, garment, labels, densepose and keypoints or mask (and flow); writers write all.
FILES: dict[str, tuple[str, str | None]] = {
    "person": ("image", None),
    "garment": ("cloth", None),
    "garment_mask": ("cloth-mask", ".jpg"),
    "labels": ("image-parse-v3", ".png"),  # CIHP parsing, palette PNG
    "labels_agnostic": ("image-parse-agnostic-v3.2", ".png"),
    "agnostic": ("agnostic-v3.2", ".jpg"),
    "mask": ("agnostic-mask", "_mask.png"),
    "keypoints": ("openpose_json", "_keypoints.json"),  # OpenPose BODY_25
    "keypoints_rendering": ("openpose_img", "_rendered.png"),
    "densepose": ("image-densepose", None),
    "flow": (FLOW_FOLDER, ".npz"),  # synthetic copies only
}


def image_name(identifier: str) -> str:
    """The name a pair file lists for an id: ``00006_00`` -> ``00006_00.jpg``."""
    return f"{identifier}{IMAGE_SUFFIX}"


def pair_line(person: str, garment: str) -> str:
    """One line of a pair file (ids), without the newline."""
    return f"{image_name(person)} {image_name(garment)}"


@dataclass(frozen=True)
class VitonHDPaths:
    """Where each file of a VITON-HD copy at ``root`` lives; ``folder`` is a split folder (``train``/``test``)."""

    root: Path

    def pair_file(self, folder: str) -> Path:
        return self.root / f"{folder}_pairs.txt"

    def folder(self, folder: str, kind: str) -> Path:
        return self.root / folder / FILES[kind][0]

    def file(self, folder: str, kind: str, image: str) -> Path:
        """The ``kind`` file of ``image``, an image name as the pair files list it (``00006_00.jpg``)."""
        subfolder, suffix = FILES[kind]
        name = image if suffix is None else f"{Path(image).stem}{suffix}"
        return self.root / folder / subfolder / name


def split_folder(split: Split) -> str:
    """The folder (and pair-file prefix) of a split: ``train`` or ``test`` (both test pairings)."""
    return "train" if split == "train" else "test"


def read_pairs(root: str | Path, split: Split) -> list[VitonHDPair]:
    """The pairs of a split (raises ``DataFileError`` for a missing or malformed pair file)."""
    folder = split_folder(split)
    listed = read_pair_list(VitonHDPaths(Path(root)).pair_file(folder))
    if split == "test_unpaired":
        return [VitonHDPair(folder, person, garment) for person, garment in listed]
    return [VitonHDPair(folder, person, person) for person, _ in listed]  # own garment


def resolve_mask_source(root: str | Path, split: Split, requested: str) -> MaskSource:
    """``auto`` means precomputed when the split ships its mask folder (``agnostic-mask/``), else computed."""
    if requested != "auto":
        return requested  # type: ignore[return-value]
    has_masks = VitonHDPaths(Path(root)).folder(split_folder(split), "mask").is_dir()
    return "precomputed" if has_masks else "computed"


def has_flow(root: str | Path, split: Split) -> bool:
    """Whether ground-truth flow exists for the split (synthetic data; unpaired pairs have none)."""
    return split != "test_unpaired" and VitonHDPaths(Path(root)).folder(split_folder(split), "flow").is_dir()


@lru_cache(maxsize=1)
def parula_colors() -> np.ndarray:
    """RGB colour of each part index 0..24 in ``image-densepose`` (0 = background, black)."""
    levels = (np.arange(DENSEPOSE_PARTS + 1) * (255.0 / DENSEPOSE_PARTS)).astype(np.uint8)
    colors = cv2.applyColorMap(levels.reshape(-1, 1), cv2.COLORMAP_PARULA)[:, 0, ::-1].copy()
    colors[0] = 0
    return colors


@lru_cache(maxsize=1)
def _parula_lookup() -> np.ndarray:
    """Part index for every RGB colour quantised to 6 bits per channel (nearest palette colour), flat."""
    centres = (np.arange(64, dtype=np.float32) * 4 + 2)
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 1, 3)
    distances = ((grid - parula_colors()[None].astype(np.float32)) ** 2).sum(-1)
    return distances.argmin(1).astype(np.uint8)


@lru_cache(maxsize=1)
def _parula_table() -> np.ndarray:
    table = np.zeros((256, 1, 3), np.uint8)
    table[: DENSEPOSE_PARTS + 1, 0] = parula_colors()
    return table


def encode_densepose(parts: np.ndarray) -> np.ndarray:
    """Part index map [H, W] (0..24) -> ``image-densepose`` RGB rendering [H, W, 3]."""
    return cv2.LUT(cv2.merge([parts, parts, parts]), _parula_table())


def decode_densepose(rendering: np.ndarray) -> np.ndarray:
    """``image-densepose`` RGB rendering -> part index map (nearest palette colour; robust to JPEG noise)."""
    q = (rendering >> 2).astype(np.uint32)
    return _parula_lookup()[(q[..., 0] << 12) | (q[..., 1] << 6) | q[..., 2]]


def densepose_tensor(parts: np.ndarray) -> torch.Tensor:
    """Part indices [H, W] -> the contract's ``densepose``: the PARULA rendering as an image in [-1, 1]."""
    return image_to_tensor(encode_densepose(parts))


def read_openpose(path: Path) -> np.ndarray:
    """BODY_25 keypoints of the first person as [25, 2] (x, y) pixels, NaN where missing."""
    data = read_json(path)
    try:
        people = data["people"]
        if not people:
            return np.full((25, 2), np.nan, np.float32)
        flat = np.asarray(people[0]["pose_keypoints_2d"], dtype=np.float32)
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise DataFileError(path, f"not an OpenPose keypoint file ({error!r})") from None
    if flat.size % 3:
        raise DataFileError(path, f"pose_keypoints_2d has {flat.size} values, not a multiple of 3")
    points = flat.reshape(-1, 3)
    xy = points[:, :2].copy()
    xy[(points[:, 2] <= 0) | ((points[:, 0] == 0) & (points[:, 1] == 0))] = np.nan
    return xy


def read_parsing(path: Path) -> np.ndarray:
    """The ``labels`` file (``image-parse-v3``): CIHP labels 0..19 as uint8 [H, W]."""
    labels = read_label(path)
    if labels.max() >= CIHP_LABELS:
        raise DataFileError(path, f"label {labels.max()} is not a CIHP label (0..{CIHP_LABELS - 1})")
    return labels


class VitonHDDataset(PairDataset[VitonHDPair]):
    """Contract samples (see ``contract.py``) for a list of VITON-HD pairs at ``resolution`` (H, W)."""

    def __init__(self, root: str | Path, pairs: list[VitonHDPair], resolution: tuple[int, int],
                 mask_source: MaskSource, with_flow: bool = False, augment: JointAugment | None = None,
                 mask_recipe: str = DEFAULT_MASK_RECIPE):
        self.root = Path(root)
        self.pairs = pairs
        self.resolution = tuple(resolution)
        self.mask_source = mask_source
        self.mask_recipe = mask_recipes.get(mask_recipe).name
        self.with_flow = with_flow
        self.augment = augment

    def files(self, pair: VitonHDPair) -> dict[str, RequiredFile]:
        paths = VitonHDPaths(self.root)

        def person_file(kind: str) -> Path:
            return paths.file(pair.folder, kind, pair.person)

        files = {
            "person": RequiredFile(person_file("person"), "rgb"),
            "garment": RequiredFile(paths.file(pair.folder, "garment", pair.garment), "rgb"),
            "parse": RequiredFile(person_file("labels"), "label", read_parsing, aligned=True),
            "densepose": RequiredFile(person_file("densepose"), "rgb", aligned=True),
        }
        if self.mask_source == "precomputed":
            files["mask"] = RequiredFile(person_file("mask"), "gray", read_binary_mask, aligned=True)
        else:
            files["pose"] = RequiredFile(person_file("keypoints"), "json", read_openpose)
        if self.with_flow:
            files["flow"] = RequiredFile(person_file("flow"), "npz", read_flow, aligned=True)
        return files

    def __getitem__(self, index: int) -> dict:
        data = self.read(index)
        person = data["person"]
        views = Views(person=person, reference=data["garment"],
                      labels={"parse": data["parse"], "densepose": data["densepose"]}, flow=data.get("flow"))
        if self.mask_source == "precomputed":
            views.labels["inpaint_mask"] = data["mask"]
        views = resize_views(views, self.resolution)
        parse = views.labels.pop("parse")
        # Decoding commutes with nearest resizing, so decode the (smaller) resized rendering.
        views.labels["densepose"] = decode_densepose(views.labels["densepose"])
        if self.mask_source == "computed":  # from the native parsing, as the recipe's frame asks
            native = mask_recipes.ParsedPerson(data["parse"], LABEL_SET, data["pose"], KEYPOINT_FORMAT,
                                               person.shape[:2])
            views.labels["inpaint_mask"] = mask_recipes.inpaint_mask(
                self.mask_recipe, native, "upper_body", self.resolution).astype(np.uint8)
        views.labels["loss_region"] = masks.vitonhd_garment_region(parse).astype(np.uint8)
        if self.augment is not None:
            views = self.augment(views, sample_rng(index))
        person_id, reference_id = self.sample_ids(index)
        return contract_sample(person=views.person, reference=views.reference,
                               inpaint_mask=views.labels["inpaint_mask"],
                               densepose=densepose_tensor(views.labels["densepose"]),
                               loss_region=views.labels["loss_region"], person_id=person_id,
                               reference_id=reference_id, flow=views.flow)

    def sample_ids(self, index: int) -> tuple[str, str]:
        return self.pairs[index].person, self.pairs[index].garment


def vitonhd_augment(config: AugmentConfig) -> JointAugment:
    """Joint augmentation with the DensePose left/right parts swapped under flips."""
    return JointAugment(config, flip_luts={"densepose": DENSEPOSE_FLIP_LUT})

