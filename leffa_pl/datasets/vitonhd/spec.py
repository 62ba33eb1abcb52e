"""VITON-HD's ``DatasetSpec``."""

from __future__ import annotations

import argparse
from pathlib import Path

from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.data.io import read_rgb
from leffa_pl.data.mask_recipes.leffa_app import LEFFA_HD
from leffa_pl.datasets.spec import DatasetSpec, DensePoseCodec, SyntheticRecipe
from leffa_pl.datasets.vitonhd import reader
from leffa_pl.datasets.vitonhd.synthetic import make_vitonhd
from leffa_pl.datasets.vitonhd.writer import VitonHDLayout
from leffa_pl.evaluation.protocols import VTON_PAIRED, VTON_UNPAIRED


def write_synthetic(path: Path, args: argparse.Namespace) -> None:
    make_vitonhd(path, args.train, args.test, args.size, args.seed)


SPEC = DatasetSpec(
    name="vitonhd",
    title="VITON-HD",
    data_module=VitonHDDataModule,
    default_resolution=(1024, 768),
    protocols={"paired": VTON_PAIRED, "unpaired": VTON_UNPAIRED},
    synthetic=SyntheticRecipe("zalando-hd-resized", write_synthetic),
    categories=("upper_body",),
    label_set=reader.LABEL_SET,
    keypoint_format=reader.KEYPOINT_FORMAT,
    app_mask_recipe=LEFFA_HD.name,
    densepose=DensePoseCodec(read=read_rgb, decode=reader.decode_densepose, to_tensor=reader.densepose_tensor),
    layout_writer=VitonHDLayout,
)
