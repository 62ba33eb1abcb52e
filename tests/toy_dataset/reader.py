"""The toy layout: ``{split}_pairs.txt`` (``person garment`` per line) and ``{split}/person``,
``{split}/garment`` PNGs, splits ``train`` and ``test``. Its samples repaint the middle of the person and have no
DensePose (zeros)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leffa_pl.data.datamodule import PersonImageDataModule
from leffa_pl.data.files import FileProblem, RequiredFile
from leffa_pl.data.io import read_pair_list
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.transforms import Views, contract_sample, resize_views

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ToyPair:
    split: str
    person: str
    garment: str


def pair_file(root: Path, split: str) -> Path:
    return root / f"{split}_pairs.txt"


def image_file(root: Path, split: str, kind: str, name: str) -> Path:
    return root / split / kind / name


def middle_mask(size: tuple[int, int]) -> np.ndarray:
    height, width = size
    mask = np.zeros(size, np.uint8)
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
    return mask


class ToyDataset(PairDataset[ToyPair]):
    def __init__(self, root: Path, pairs: list[ToyPair], resolution: tuple[int, int]):
        self.root, self.pairs, self.resolution = root, pairs, tuple(resolution)

    def files(self, pair: ToyPair) -> dict[str, RequiredFile]:
        return {"person": RequiredFile(image_file(self.root, pair.split, "person", pair.person), "rgb"),
                "garment": RequiredFile(image_file(self.root, pair.split, "garment", pair.garment), "rgb")}

    def sample_ids(self, index: int) -> tuple[str, str]:
        return self.pairs[index].person, self.pairs[index].garment

    def __getitem__(self, index: int) -> dict:
        data = self.read(index)
        views = resize_views(Views(person=data["person"], reference=data["garment"]), self.resolution)
        mask = middle_mask(self.resolution)
        densepose = torch.zeros(3, *self.resolution)
        return contract_sample(views.person, views.reference, mask, densepose, mask, *self.sample_ids(index))


class ToyDataModule(PersonImageDataModule):
    name = "Toy"
    task = "tryon"
    splits = SPLITS
    val_splits = ("test",)

    def __init__(self, root: str = "data/toy", **settings: Any):
        super().__init__(root=root, **settings)

    @property
    def test_split(self) -> str:
        return "test"

    def _read_pairs(self, split: str) -> tuple[list, list[FileProblem]]:
        return [ToyPair(split, *pair) for pair in read_pair_list(pair_file(self.root, split))], []

    def _dataset(self, split: str, pairs: list, resolution: tuple[int, int], augment: bool) -> PairDataset:
        return ToyDataset(self.root, pairs, resolution)
