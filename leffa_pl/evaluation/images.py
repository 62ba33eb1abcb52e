"""Reading images for scoring: RGB uint8 tensors, resized to the generated resolution with PIL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from leffa_pl.data.io import IMAGE_READ_ERRORS, to_8bit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# PIL's resize filters are antialiased (the kernel widens with the scale factor when downsampling).
RESIZE_METHODS = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


class ImageReadError(ValueError):
    """An image file that cannot be used, with the file in the message."""


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except IMAGE_READ_ERRORS as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from None
    return height, width


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None,
               resize: str = "bicubic") -> torch.Tensor:
    """RGB uint8 ``[3, H, W]``, resized to ``size`` (height, width) with ``resize`` when it differs."""
    try:
        with Image.open(path) as image:
            image = to_8bit(image)[0].convert("RGB")
    except IMAGE_READ_ERRORS as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from None
    if size is not None and (image.height, image.width) != tuple(size):
        image = image.resize((size[1], size[0]), RESIZE_METHODS[resize])
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


class ImageFiles(Dataset):
    """Images at one resolution (a real set)."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int], resize: str) -> None:
        self.paths, self.size, self.resize = list(paths), size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return read_image(self.paths[index], self.size, self.resize)


class GeneratedImages(Dataset):
    """Generated images (already at the scoring resolution) with their ground truth, when there is one."""

    def __init__(self, generated: Sequence[Path], targets: Sequence[Path] | None, size: tuple[int, int],
                 resize: str) -> None:
        self.generated, self.targets = list(generated), list(targets) if targets is not None else None
        self.size, self.resize = size, resize

    def __len__(self) -> int:
        return len(self.generated)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generated = read_image(self.generated[index])
        if tuple(generated.shape[1:]) != tuple(self.size):
            raise ImageReadError(f"{self.generated[index]}: {generated.shape[1]}x{generated.shape[2]}, "
                                 f"the other generated images are {self.size[0]}x{self.size[1]}")
        if self.targets is None:
            return {"generated": generated}
        return {"generated": generated, "target": read_image(self.targets[index], self.size, self.resize)}
