"""DeepFashion In-shop for pose transfer: flattened names, split lists, pair and keypoint CSVs, DensePose IUV maps.

Layout (datasets.md, "DeepFashion In-shop"), ``root`` e.g. ``data/deepfashion``:

| path | content |
|---|---|
| ``train.lst``, ``test.lst`` | flattened image names of each split, one per line |
| ``fasion-resize-pairs-{train,test}.csv`` | header ``from,to``; one pair per row (the "fasion" typo is real) |
| ``fasion-resize-annotation-{train,test}.csv`` | header ``name:keypoints_y:keypoints_x``; rows |
|   | ``name: [18 y]: [18 x]``, COCO-18 order, -1 = missing, in a 256x176 (H x W) frame |
| ``{train,test}_highres/{name}`` | the 750x1101 (W x H) images under their flattened names |
| ``densepose/{stem}.png`` | DensePose IUV of each image (not distributed: computed offline, see below) |

Images are looked up in ``{split}_highres/`` (what the usual preparation script writes); when that folder is
absent and ``img_highres/`` exists, in the original nested tree ``img_highres/{MEN,WOMEN}/<Category>/
id_XXXXXXXX/NN_k_view.jpg``, found by un-flattening the name. Flattening joins the path, drops the ``_`` of
the id folder and the one between the view index and the view, and keeps the category's ``_``:
``WOMEN/Blouses_Shirts/id_00006350/04_1_front.jpg`` -> ``fashionWOMENBlouses_Shirtsid0000635004_1front.jpg``.

Pose-transfer samples: reference = ``from``, person (source = target) = ``to``, DensePose of ``to``,
inpaint mask all ones (so ``agnostic`` is all zeros), loss region = the DensePose foreground (part index
!= 0) dilated by a length proportional to the height (``masks.densepose_foreground_region``).

**DensePose encoding** (leffa.md; detectron2 DensePose R_50_FPN_s1x, score >= 0.5, first instance pasted into
a full-size zero image): an RGB PNG (lossless: a JPEG would blend part indices) at the image's size with
R = U * 255, G = V * 255, B = I (part index 0..24, 0 = background; U = V = 0 there). The model input is
U / 255, V / 255 and I / 24, each mapped to [-1, 1] (``iuv_to_tensor``). The map is resized with nearest
neighbour on all three channels (U/V are chart coordinates of a part; interpolating across parts is
meaningless). Images without a detection have no map: their pairs are skipped and counted.

**No horizontal flips.** Mirroring a person swaps left/right DensePose parts *and* changes their U/V chart
coordinates in a way the released pose model's charts define and this code cannot reproduce faithfully;
swapping I alone would feed inconsistent U/V. Flips are therefore off for DeepFashion (shift/scale and
colour jitter stay available).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Literal

import numpy as np
import torch

from leffa_pl.data import masks
from leffa_pl.data.files import DataFileError, FileProblem, RequiredFile, check_name
from leffa_pl.data.io import read_stored
from leffa_pl.data.layout import DENSEPOSE_PARTS
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.transforms import AugmentConfig, JointAugment, Views, contract_sample, resize_views, sample_rng

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
Layout = Literal["flat", "nested"]
SPLIT_LISTS = {"train": "train.lst", "test": "test.lst"}
PAIR_FILES = {"train": "fasion-resize-pairs-train.csv", "test": "fasion-resize-pairs-test.csv"}
ANNOTATION_FILES = {"train": "fasion-resize-annotation-train.csv", "test": "fasion-resize-annotation-test.csv"}
ANNOTATION_HEADER = "name:keypoints_y:keypoints_x"
NESTED_FOLDER = "img_highres"
DENSEPOSE_FOLDER = "densepose"
KEYPOINT_FRAME = (256, 176)  # (H, W) of the annotation coordinates
# COCO-18: 0 nose, 1 neck, 2-4 right arm, 5-7 left arm, 8-10 right leg, 11-13 left leg, 14-17 eyes/ears.
KEYPOINTS = 18
NAME_PATTERN = re.compile(r"^fashion(?P<gender>WOMEN|MEN)(?P<category>.+?)id(?P<id>\d{8})(?P<item>\d{2})"
                          r"_(?P<view_index>\d+)(?P<view>[a-z]+)(?P<suffix>\.jpg)$")


def split_folder(split: str) -> str:
    """The folder holding a split's flattened images."""
    return f"{split}_highres"


def flatten_name(path: str | PurePosixPath) -> str:
    """``[img_highres/]WOMEN/Blouses_Shirts/id_00006350/04_1_front.jpg``
    -> ``fashionWOMENBlouses_Shirtsid0000635004_1front.jpg``."""
    parts = PurePosixPath(path).parts
    start = next((i for i, part in enumerate(parts) if part in ("MEN", "WOMEN")), None)
    if start is None or len(parts) != start + 4:
        raise ValueError(f"{path}: expected {{MEN,WOMEN}}/<Category>/id_XXXXXXXX/NN_k_view.jpg")
    gender, category, identity, file_name = parts[start:]
    item, _, rest = file_name.partition("_")
    view_index, _, view = rest.partition("_")
    name = f"fashion{gender}{category}{identity.replace('_', '')}{item}_{view_index}{view}"
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{path}: does not flatten to a DeepFashion name (got {name!r})")
    return name


def unflatten_name(name: str) -> str:
    """Inverse of ``flatten_name``: the image's path inside ``img_highres/``."""
    match = NAME_PATTERN.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a flattened DeepFashion name (fashion{{MEN,WOMEN}}<Category>id<8+2 "
                         "digits>_<k><view>.jpg)")
    g = match.groupdict()
    return f"{g['gender']}/{g['category']}/id_{g['id']}/{g['item']}_{g['view_index']}_{g['view']}{g['suffix']}"


# -- the distributed text files --------------------------------------------------------------------

def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(path, f"{what} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataFileError(path, f"unreadable {what} ({error})") from None


def read_split_list(path: str | Path) -> list[str]:
    """``train.lst`` / ``test.lst``: one flattened image name per line (each a plain file name, ``check_name``)."""
    lines = _read_text(Path(path), "split list").splitlines()
    return [check_name(line.strip(), path, number) for number, line in enumerate(lines, start=1) if line.strip()]


def read_pair_csv(path: str | Path) -> list[tuple[str, str]]:
    """``fasion-resize-pairs-*.csv``: (from, to) per row, by the header's ``from`` and ``to`` columns."""
    path = Path(path)
    rows = [row for row in csv.reader(_read_text(path, "pair file").splitlines()) if row]
    header = [column.strip() for column in rows[0]] if rows else []
    if "from" not in header or "to" not in header:
        raise DataFileError(path, f"expected a header with columns 'from' and 'to', got {header}")
    first, second = header.index("from"), header.index("to")
    pairs = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataFileError(path, f"line {number}: expected {len(header)} columns, got {len(row)}: {row}")
        pairs.append(tuple(check_name(row[column].strip(), path, number) for column in (first, second)))
    return pairs


def read_annotations(path: str | Path) -> dict[str, np.ndarray]:
    """``fasion-resize-annotation-*.csv`` -> {name: [18, 2] float32 (x, y) in the 256x176 frame, NaN = missing}."""
    path = Path(path)
    lines = _read_text(path, "annotation file").splitlines()
    if not lines or lines[0].replace(" ", "") != ANNOTATION_HEADER:
        raise DataFileError(path, f"expected the header {ANNOTATION_HEADER!r}, got {lines[0] if lines else ''!r}")
    height, width = KEYPOINT_FRAME
    annotations = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(":")
        if len(fields) != 3:
            raise DataFileError(path, f"line {number}: expected 3 ':'-separated fields, got {len(fields)}")
        try:
            ys, xs = (np.asarray(json.loads(text), dtype=np.float64) for text in fields[1:])
        except (json.JSONDecodeError, ValueError, TypeError) as error:
            raise DataFileError(path, f"line {number}: keypoints are not lists of numbers ({error})") from None
        if ys.shape != (KEYPOINTS,) or xs.shape != (KEYPOINTS,):
            raise DataFileError(path, f"line {number}: expected {KEYPOINTS} y and {KEYPOINTS} x values, "
                                      f"got {ys.size} and {xs.size}")
        if ((ys < -1) | (ys > height) | (xs < -1) | (xs > width)).any():
            raise DataFileError(path, f"line {number}: keypoints outside the {height}x{width} frame "
                                      "(-1 = missing)")
        xy = np.stack([xs, ys], axis=1).astype(np.float32)
        xy[(ys == -1) | (xs == -1)] = np.nan
        annotations[fields[0].strip()] = xy
    return annotations


def scale_keypoints(xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Keypoints from the 256x176 annotation frame to an image of ``size`` (H, W)."""
    return xy * np.array([size[1] / KEYPOINT_FRAME[1], size[0] / KEYPOINT_FRAME[0]], np.float32)


# -- DensePose IUV ---------------------------------------------------------------------------------

def encode_iuv(parts: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Part index [H, W] (0..24) and U, V in [0, 1] -> the stored uint8 [H, W, 3] map (U*255, V*255, I)."""
    foreground = parts != 0
    iuv = np.zeros(parts.shape + (3,), np.uint8)
    iuv[..., 0] = np.where(foreground, np.round(np.clip(u, 0, 1) * 255), 0)
    iuv[..., 1] = np.where(foreground, np.round(np.clip(v, 0, 1) * 255), 0)
    iuv[..., 2] = parts
    return iuv


def read_iuv(path: str | Path) -> np.ndarray:
    """Read a stored DensePose map as uint8 [H, W, 3] (U*255, V*255, I); it must be RGB with I <= 24."""
    path = Path(path)
    iuv = read_stored(path)
    if iuv.ndim != 3 or iuv.shape[2] != 3 or iuv.dtype != np.uint8:
        raise DataFileError(path, f"expected an 8-bit RGB (U, V, I) map, got shape {iuv.shape} {iuv.dtype}")
    if iuv[..., 2].max() > DENSEPOSE_PARTS:
        raise DataFileError(path, f"part index (blue channel) up to {iuv[..., 2].max()} > {DENSEPOSE_PARTS}")
    return iuv


_IUV_SCALE = np.array([255.0, 255.0, DENSEPOSE_PARTS], np.float32)


def iuv_to_tensor(iuv: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] (U*255, V*255, I) -> the model's float32 [3, H, W]: U/255, V/255, I/24 mapped to [-1, 1]."""
    return torch.from_numpy(iuv.astype(np.float32) / _IUV_SCALE * 2.0 - 1.0).permute(2, 0, 1).contiguous()


def tensor_to_iuv(densepose: torch.Tensor) -> np.ndarray:
    """Inverse of ``iuv_to_tensor`` (for inspection and tests)."""
    values = (densepose.permute(1, 2, 0).double().numpy() + 1.0) / 2.0 * _IUV_SCALE
    return np.round(values).clip(0, 255).astype(np.uint8)


# -- pairs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeepFashionPair:
    """Flattened names: ``reference`` = the CSV's ``from``, ``person`` (source = target) = its ``to``."""

    split: str
    reference: str
    person: str


@dataclass
class SplitPairs:
    """A split's usable pairs, the problems in its files, and the pairs skipped for missing files."""

    pairs: list[DeepFashionPair]
    problems: list[FileProblem] = field(default_factory=list)
    skipped_pairs: int = 0
    missing: list[FileProblem] = field(default_factory=list)  # distinct missing images / DensePose maps
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def missing_densepose(self) -> int:
        return sum(p.path.parent.name == DENSEPOSE_FOLDER for p in self.missing)

    def skip_summary(self) -> str:
        densepose = self.missing_densepose
        return (f"skipped {self.skipped_pairs} of {self.skipped_pairs + len(self.pairs)} pairs with missing files "
                f"({densepose} DensePose maps, {len(self.missing) - densepose} images missing)")


def image_layout(root: str | Path, split: str) -> Layout:
    """``flat`` (``{split}_highres/{name}``) unless only the original ``img_highres/`` tree exists."""
    root = Path(root)
    nested = not (root / split_folder(split)).is_dir() and (root / NESTED_FOLDER).is_dir()
    return "nested" if nested else "flat"


def image_path(root: Path, split: str, name: str, layout: Layout) -> Path:
    """Where the image ``name`` of ``split`` lives (raises ``ValueError`` for a bad name in the nested layout)."""
    if layout == "flat":
        return root / split_folder(split) / name
    return root / NESTED_FOLDER / unflatten_name(name)


def densepose_path(root: Path, name: str) -> Path:
    return root / DENSEPOSE_FOLDER / f"{Path(name).stem}.png"


def _existence(folder_listings: dict[Path, frozenset[str]]) -> Callable[[Path], bool]:
    """``exists(path)`` answered from one listing per folder (fast on large folders)."""

    def exists(path: Path) -> bool:
        folder = path.parent
        if folder not in folder_listings:
            folder_listings[folder] = (frozenset(p.name for p in folder.iterdir()) if folder.is_dir()
                                       else frozenset())
        return path.name in folder_listings[folder]

    return exists


def read_pairs(root: str | Path, split: Split) -> SplitPairs:
    """Pairs of ``split`` with their files located. Names missing from ``{split}.lst`` (or not parseable in the
    nested layout) are problems; pairs whose images or target DensePose are missing are skipped and counted.

    Raises ``DataFileError`` for a missing or malformed split list, pair CSV or annotation CSV.
    """
    root = Path(root)
    listed = frozenset(read_split_list(root / SPLIT_LISTS[split]))
    pair_file = root / PAIR_FILES[split]
    rows = read_pair_csv(pair_file)
    keypoints = read_annotations(root / ANNOTATION_FILES[split])
    layout, exists = image_layout(root, split), _existence({})
    result = SplitPairs(pairs=[], keypoints=keypoints)
    missing: dict[Path, None] = {}
    for number, (reference, person) in enumerate(rows, start=2):
        unlisted = [name for name in (reference, person) if name not in listed]
        if unlisted:
            problem = f"line {number}: {unlisted[0]} is not in {SPLIT_LISTS[split]}"
            result.problems.append(FileProblem(pair_file, problem))
            continue
        try:
            needed = [image_path(root, split, reference, layout), image_path(root, split, person, layout),
                      densepose_path(root, person)]
        except ValueError as error:
            result.problems.append(FileProblem(pair_file, f"line {number}: {error}"))
            continue
        absent = [path for path in needed if not exists(path)]
        if absent:
            result.skipped_pairs += 1
            missing.update(dict.fromkeys(absent))
            continue
        result.pairs.append(DeepFashionPair(split, reference, person))
    result.missing = [FileProblem(path, "missing") for path in missing]
    return result


# -- the Dataset -----------------------------------------------------------------------------------

class DeepFashionDataset(PairDataset[DeepFashionPair]):
    """Contract samples (see ``contract.py``) for DeepFashion pose-transfer pairs at ``resolution`` (H, W)."""

    def __init__(self, root: str | Path, pairs: list[DeepFashionPair], resolution: tuple[int, int],
                 layout: Layout = "flat", keypoints: dict[str, np.ndarray] | None = None,
                 augment: JointAugment | None = None):
        self.root = Path(root)
        self.pairs = pairs
        self.resolution = tuple(resolution)
        self.layout = layout
        self.annotations = keypoints or {}
        self.augment = augment

    def files(self, pair: DeepFashionPair) -> dict[str, RequiredFile]:
        return {
            "person": RequiredFile(image_path(self.root, pair.split, pair.person, self.layout), "rgb"),
            "reference": RequiredFile(image_path(self.root, pair.split, pair.reference, self.layout), "rgb"),
            "densepose": RequiredFile(densepose_path(self.root, pair.person), "rgb", read_iuv, aligned=True),
        }

    def keypoints(self, index: int) -> dict[str, np.ndarray]:
        """COCO-18 keypoints (x, y) of the ``reference`` and the ``person`` image, scaled to the dataset's
        resolution (before augmentation); NaN where missing or not annotated."""
        pair = self.pairs[index]
        absent = np.full((KEYPOINTS, 2), np.nan, np.float32)
        return {role: scale_keypoints(self.annotations.get(name, absent), self.resolution)
                for role, name in (("reference", pair.reference), ("person", pair.person))}

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        data = self.read(index)
        views = Views(person=data["person"], reference=data["reference"], labels={"densepose": data["densepose"]})
        views = resize_views(views, self.resolution)
        if self.augment is not None:
            views = self.augment(views, sample_rng(index))
        iuv = views.labels["densepose"]
        return contract_sample(person=views.person, reference=views.reference,
                               inpaint_mask=np.ones(iuv.shape[:2], np.uint8), densepose=iuv_to_tensor(iuv),
                               loss_region=masks.densepose_foreground_region(iuv[..., 2]).astype(np.uint8),
                               person_id=pair.person, reference_id=pair.reference)

    def sample_ids(self, index: int) -> tuple[str, str]:
        return self.pairs[index].person, self.pairs[index].reference


def deepfashion_augment(config: AugmentConfig) -> JointAugment:
    """Shift/scale and colour jitter; horizontal flips are refused (see the module docstring)."""
    if config.flip_p > 0:
        raise ValueError("horizontal flips are off for DeepFashion: a mirrored person needs its DensePose "
                         "left/right parts and their U/V charts swapped, which is not implemented")
    return JointAugment(config)
