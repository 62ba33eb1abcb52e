"""DeepFashion's DensePose maps computed where they are missing (``DeepFashionDataModule.prepare_data``).

The maps the data module reads are those of the pairs' targets (``to``, listed in the split's ``.lst``) whose
image exists: ``densepose/{stem}.png`` in the encoding ``deepfashion.read_iuv`` reads (RGB U*255, V*255, I; or
U, V min-max stretched as the Leffa app, ``scaling="minmax"``).
``fill_missing_maps`` computes each missing one with a ``DensePoseEstimator`` and writes it atomically, so an
interrupted run resumes with the maps still missing; maps that exist are never touched. Images in which
DensePose finds nobody get no map (their pairs stay skipped, as with detectron2's offline maps) and are tried
again on the next run; unreadable images are left to the data module's file check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from leffa_pl.annotators import weight_files as weights
from leffa_pl.annotators.densepose import (
    IUV_SCALINGS,
    DensePoseEstimator,
    DensePoseResult,
    IuvScaling,
    TorchScriptDensePose,
    minmax_iuv,
)
from leffa_pl.annotators.device import resolve_device
from leffa_pl.data.file_writers import write_png
from leffa_pl.data.files import DataFileError
from leffa_pl.data.io import read_rgb
from leffa_pl.datasets.deepfashion import reader as deepfashion


def iuv_map(found: DensePoseResult, scaling: IuvScaling = "scale") -> np.ndarray:
    """A DensePose result as a stored DeepFashion IUV map: U, V scaled by ``scaling`` (``densepose.IuvScaling``)."""
    if scaling == "scale":
        return deepfashion.encode_iuv(found.parts, found.u, found.v)
    return minmax_iuv(found.parts, found.u, found.v, found.box)


def estimator(model: str | None, device: str) -> DensePoseEstimator:
    """The DensePose network (``model``: its TorchScript file, or None for the pinned download, looked up as
    ``leffa-pl-prepare`` does) on ``device`` (``auto``: CUDA when present)."""
    return TorchScriptDensePose(weights.resolve_file(weights.DENSEPOSE_R50, model), resolve_device(device))


def missing_maps(root: str | Path) -> dict[Path, Path]:
    """{DensePose map path: its image} for every pair target of every split whose image exists and map does not.
    Raises ``DataFileError`` for a missing or malformed split list or pair file."""
    root = Path(root)
    needed: dict[Path, Path] = {}
    for split in deepfashion.SPLITS:
        listed = frozenset(deepfashion.read_split_list(root / deepfashion.SPLIT_LISTS[split]))
        layout = deepfashion.image_layout(root, split)
        for _, person in deepfashion.read_pair_csv(root / deepfashion.PAIR_FILES[split]):
            if person not in listed:
                continue  # a problem the file check reports
            try:
                image = deepfashion.image_path(root, split, person, layout)
            except ValueError:
                continue  # likewise
            target = deepfashion.densepose_path(root, person)
            if target not in needed and image.is_file() and not target.is_file():
                needed[target] = image
    return needed


@dataclass
class FillReport:
    """What ``fill_missing_maps`` did: maps written, images where DensePose found nobody, unreadable images."""

    written: list[Path] = field(default_factory=list)
    no_person: list[Path] = field(default_factory=list)
    unreadable: list[DataFileError] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.written)} DensePose map(s) written, {len(self.no_person)} image(s) with nobody found "
                f"(their pairs are skipped), {len(self.unreadable)} unreadable image(s)")


def fill_missing_maps(root: str | Path, estimator: Callable[[], DensePoseEstimator],
                      progress: bool = True, scaling: IuvScaling = "scale") -> FillReport:
    """Compute and write every missing DensePose map of the dataset at ``root`` (see the module docstring).
    ``estimator`` builds the DensePose network; it is called only when a map is missing. ``scaling``: of U, V
    (``densepose.IuvScaling``)."""
    if scaling not in IUV_SCALINGS:
        raise ValueError(f"DensePose IUV scaling {scaling!r} is not one of {IUV_SCALINGS}")
    report = FillReport()
    missing = missing_maps(root)
    if not missing:
        return report
    model = estimator()
    for target, image in tqdm(missing.items(), desc="DeepFashion DensePose", unit="map", disable=not progress):
        try:
            photo = read_rgb(image)
        except DataFileError as error:
            report.unreadable.append(error)
            continue
        found = model(photo)
        if found is None:
            report.no_person.append(image)
            continue
        write_png(target, iuv_map(found, scaling))
        report.written.append(target)
    return report
