"""A small synthetic toy copy: random colour fields as persons and garments."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from toy_dataset.reader import SPLITS, image_file, pair_file


def write_synthetic(root: Path, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    height, width = args.size
    for split, count in zip(SPLITS, (args.train, args.test)):
        names = [f"{split}{index:03d}.png" for index in range(count)]
        for kind in ("person", "garment"):
            image_file(root, split, kind, "x").parent.mkdir(parents=True)
            for name in names:
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(image).save(image_file(root, split, kind, name))
        pair_file(root, split).write_text("".join(f"{name} {name}\n" for name in names))
