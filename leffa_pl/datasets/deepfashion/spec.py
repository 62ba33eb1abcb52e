"""DeepFashion's ``DatasetSpec``."""

from __future__ import annotations

import argparse
from pathlib import Path

from leffa_pl.data.datamodule import DeepFashionDataModule
from leffa_pl.data.files import DataFileError
from leffa_pl.datasets.deepfashion import reader
from leffa_pl.datasets.deepfashion.protocol import PROTOCOL
from leffa_pl.datasets.deepfashion.synthetic import make_deepfashion
from leffa_pl.datasets.spec import DatasetSpec, RealSetError, SyntheticRecipe


def write_synthetic(path: Path, args: argparse.Namespace) -> None:
    make_deepfashion(path, args.train_people, args.test_people, args.views, args.deepfashion_size, args.seed)


def training_images(root: Path) -> tuple[list[Path], str]:
    """The FID real set: the images named in ``train.lst``, where the data module reads them (flat or nested
    layout)."""
    split_list = root / reader.SPLIT_LISTS["train"]
    try:
        names = reader.read_split_list(split_list)
        layout = reader.image_layout(root, "train")
        paths = [reader.image_path(root, "train", name, layout) for name in names]
    except (DataFileError, ValueError) as error:
        raise RealSetError(f"the DeepFashion FID real set: {error}") from None
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise RealSetError(f"{split_list}: {len(missing)} of {len(paths)} training images are missing "
                           f"(the FID real set is all of them), e.g. {', '.join(missing[:3])}")
    return paths, f"all training images ({split_list})"


SPEC = DatasetSpec(
    name="deepfashion",
    title="DeepFashion",
    data_module=DeepFashionDataModule,
    default_resolution=(256, 176),
    protocols={None: PROTOCOL},
    synthetic=SyntheticRecipe("deepfashion", write_synthetic),
    real_images=training_images,
)
