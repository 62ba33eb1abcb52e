"""DressCode's ``DatasetSpec``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from leffa_pl.data.datamodule import DressCodeDataModule
from leffa_pl.data.io import read_label
from leffa_pl.data.mask_recipes.leffa_app import LEFFA_DC
from leffa_pl.datasets.dresscode import reader
from leffa_pl.datasets.dresscode.synthetic import make_dresscode
from leffa_pl.datasets.dresscode.writer import DressCodeLayout
from leffa_pl.datasets.spec import DatasetSpec, DensePoseCodec, SyntheticRecipe
from leffa_pl.evaluation.protocols import VTON_PAIRED, VTON_UNPAIRED


def write_synthetic(path: Path, args: argparse.Namespace) -> None:
    make_dresscode(path, max(1, args.train // 3), max(2, args.test // 2), args.size, args.seed)


def part_indices(stored: np.ndarray) -> np.ndarray:
    """DressCode stores the part indices themselves."""
    return stored


SPEC = DatasetSpec(
    name="dresscode",
    title="DressCode",
    data_module=DressCodeDataModule,
    default_resolution=(1024, 768),
    protocols={"paired": VTON_PAIRED, "unpaired": VTON_UNPAIRED},
    synthetic=SyntheticRecipe("DressCode", write_synthetic),
    categories=reader.CATEGORIES,
    label_set=reader.LABEL_SET,
    keypoint_format=reader.KEYPOINT_FORMAT,
    app_mask_recipe=LEFFA_DC.name,
    densepose=DensePoseCodec(read=read_label, decode=part_indices, to_tensor=reader.encode_densepose),
    layout_writer=DressCodeLayout,
)
