"""``DatasetSpec``: everything the commands need to know about one dataset, in one object.

Each dataset folder (``leffa_pl/datasets/<name>/spec.py``) builds one; ``leffa_pl.datasets.registry`` maps names
to them. Commands (check-data, evaluate, predict, prepare, tryon, make-synthetic, the data modules' users) ask the
spec instead of switching on dataset names, so a new dataset is one folder plus one ``register`` call.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
import torch

if TYPE_CHECKING:
    from leffa_pl.evaluation.protocols import Protocol


class RealSetError(ValueError):
    """The FID/KID real set a dataset's protocol asks for cannot be read."""


@dataclass(frozen=True)
class DensePoseCodec:
    """How a dataset stores DensePose and what the model reads: ``read`` a stored map file, ``decode`` it to part
    indices [H, W] (after nearest-neighbour fitting, which commutes with decoding), ``to_tensor`` the part indices
    as the contract's ``densepose`` [3, H, W] in [-1, 1]. The data set and the single-image commands use the same
    functions."""

    read: Callable[[Path], np.ndarray]
    decode: Callable[[np.ndarray], np.ndarray]
    to_tensor: Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class SyntheticRecipe:
    """The synthetic copy of a dataset: its folder name under ``make-synthetic --out`` and the function writing
    it into a folder, given the command's arguments (``leffa_pl.data.make_synthetic``)."""

    folder: str
    write: Callable[[Path, argparse.Namespace], object]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset. ``data_module``: its LightningDataModule class (``task`` "tryon" or "pose" on it);
    ``protocols``: the evaluation protocol of each test pairing (``None``: the dataset has one pairing);
    ``real_images``: the FID/KID real set (paths, a line describing them) when it is not the split's test
    persons, raising ``RealSetError``; ``categories``: the garment categories its models try on;
    ``label_set``/``keypoint_format``: what its stored parsing and keypoints are (``data.mask_recipes``; its data
    module's ``mask_recipe`` setting computes its masks); ``app_mask_recipe``: the Leffa app's recipe for its
    models (single-image try-on and prepare default);
    ``layout_writer``: the class writing prepared photos in its layout (``leffa-pl-prepare``)."""

    name: str
    title: str
    data_module: type
    default_resolution: tuple[int, int]
    protocols: Mapping[str | None, Protocol]
    synthetic: SyntheticRecipe | None = None
    real_images: Callable[[Path], tuple[list[Path], str]] | None = None
    categories: tuple[str, ...] = ()
    label_set: str = ""
    keypoint_format: str = ""
    app_mask_recipe: str | None = None
    densepose: DensePoseCodec | None = None
    layout_writer: type | None = None

    @property
    def task(self) -> str:
        return self.data_module.task

    @property
    def pairings(self) -> list[str | None]:
        return list(self.protocols)
