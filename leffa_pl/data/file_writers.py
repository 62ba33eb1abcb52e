"""The files preprocessing writes, each atomically (``leffa_pl.atomic_write``), so a file that exists is whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from leffa_pl.atomic_write import atomic_write
from leffa_pl.data.io import label_image

JPEG_QUALITY = 95


def _write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary)`` under ``atomic_write``."""
    with atomic_write(path) as temporary:
        write(temporary)
    return path


def write_jpeg(path: Path, image: np.ndarray, quality: int = JPEG_QUALITY, subsampling: int = -1) -> Path:
    """RGB or grey uint8 JPEG (``subsampling=0``: no chroma subsampling, for colour-coded maps)."""
    return _write(path, lambda t: Image.fromarray(image).save(t, format="JPEG", quality=quality,
                                                                  subsampling=subsampling))


def write_png(path: Path, image: np.ndarray) -> Path:
    return _write(path, lambda t: Image.fromarray(image).save(t, format="PNG"))


def write_palette_png(path: Path, labels: np.ndarray) -> Path:
    """Label indices as a palette ("P") PNG, as the datasets store parsings."""
    return _write(path, lambda t: label_image(labels).save(t, format="PNG"))


def write_json(path: Path, content: Any) -> Path:
    return _write(path, lambda t: t.write_text(json.dumps(content), encoding="utf-8"))


def write_text(path: Path, text: str) -> Path:
    return _write(path, lambda t: t.write_text(text, encoding="utf-8"))


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    def save(temporary: Path) -> None:
        with open(temporary, "wb") as handle:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(handle, **arrays)
    return _write(path, save)
