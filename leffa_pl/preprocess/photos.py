"""Reading users' photos and fitting them to a dataset's size.

``load_photo`` applies the EXIF orientation, turns CMYK, palette, 16-bit and grey images into RGB and
composites transparent ones on white, and says what it did (``notes``); a file PIL cannot decode raises
``PhotoError`` naming it (also a decompression bomb: more pixels than PIL's limit). ``fit`` scales a photo to
fit a size (aspect kept) and pads the rest; ``Placement`` maps results back onto the photo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from leffa_pl.data.files import name_problem
from leffa_pl.data.io import IMAGE_READ_ERRORS, to_8bit

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
EXIF_ORIENTATION = 0x0112
WHITE = (255, 255, 255)
MAX_UPSCALE = 4  # a photo smaller than a quarter of the size (either side) is too small


class PhotoError(ValueError):
    """A photo that cannot be used; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Photo:
    """An RGB photo [H, W, 3] uint8 and what was done to read it."""

    path: Path
    image: np.ndarray
    notes: list[str] = field(default_factory=list)


def load_photo(path: str | os.PathLike) -> Photo:
    path = Path(path)
    notes = []
    try:
        with Image.open(path) as opened:
            opened.load()
            orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
            image = ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise PhotoError(path, "file not found") from None
    except IMAGE_READ_ERRORS as error:
        raise PhotoError(path, f"unreadable image ({error})") from None
    image, converted = to_8bit(image)
    if converted:
        notes.append(converted)
    if orientation not in (0, 1):
        notes.append(f"EXIF orientation {orientation} applied")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent pixels composited on white")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba)
    elif image.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif image.mode not in ("RGB", "L"):
        notes.append(f"mode {image.mode} converted to RGB")
    return Photo(path, np.asarray(image.convert("RGB")), notes)


def check_size(photo: Photo, size: tuple[int, int]) -> None:
    """Refuse a photo too small to be fitted to ``size`` (H, W) (more than ``MAX_UPSCALE`` times upscaled)."""
    height, width = photo.image.shape[:2]
    if height * MAX_UPSCALE < size[0] or width * MAX_UPSCALE < size[1]:
        raise PhotoError(photo.path, f"too small: {height}x{width} px, at least {-(-size[0] // MAX_UPSCALE)}x"
                                     f"{-(-size[1] // MAX_UPSCALE)} for {size[0]}x{size[1]}")


@dataclass(frozen=True)
class Placement:
    """Where a photo of ``source`` (H, W) lies in a fitted image: scaled by ``scale``, top-left at ``offset``
    (x, y), covering ``content`` (H, W) pixels."""

    source: tuple[int, int]
    scale: float
    offset: tuple[int, int]
    content: tuple[int, int]

    def crop(self, fitted: np.ndarray) -> np.ndarray:
        """The content part of a fitted image (or map)."""
        x, y = self.offset
        return fitted[y:y + self.content[0], x:x + self.content[1]]

    def restore(self, fitted: np.ndarray) -> np.ndarray:
        """A fitted image back at the photo's size (area/cubic resize of the content)."""
        content = self.crop(fitted)
        height, width = self.source
        interpolation = cv2.INTER_AREA if self.scale > 1 else cv2.INTER_CUBIC
        return cv2.resize(content, (width, height), interpolation=interpolation)


def fit(image: np.ndarray, size: tuple[int, int], pad: str = "edge",
        nearest: bool = False) -> tuple[np.ndarray, Placement]:
    """``image`` scaled to fit ``size`` (H, W), aspect kept, centred; the border is ``pad``: ``edge``
    (replicated: person photos), ``white`` (garment photos on white) or ``zero`` (masks, label maps, which
    ``nearest`` resizes without mixing values)."""
    height, width = size
    source_h, source_w = image.shape[:2]
    scale = min(height / source_h, width / source_w)
    content_h, content_w = max(1, round(source_h * scale)), max(1, round(source_w * scale))
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (content_w, content_h), interpolation=interpolation)
    top, left = (height - content_h) // 2, (width - content_w) // 2
    border = dict(borderType=cv2.BORDER_REPLICATE) if pad == "edge" else \
        dict(borderType=cv2.BORDER_CONSTANT, value=WHITE if pad == "white" else 0)
    fitted = cv2.copyMakeBorder(resized, top, height - content_h - top, left, width - content_w - left, **border)
    return fitted, Placement((source_h, source_w), scale, (left, top), (content_h, content_w))


def list_photos(folder: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """The photos in ``folder`` (by suffix, case-insensitive, hidden files skipped), sorted by name, and a line
    for each other entry saying why it is not used (folders, other suffixes, broken links, unusable names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoError(folder, "not a folder")
    photos, ignored = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        problem = name_problem(path.name)
        try:
            is_file = path.is_file()  # follows links: a loop or a dangling link is not a file
        except OSError as error:
            is_file, problem = False, problem or f"cannot be read ({error.strerror})"
        if problem is None and not is_file:
            problem = "a folder" if path.is_dir() else "not a regular file (a broken link?)"
        if problem is None and path.suffix.lower() not in PHOTO_SUFFIXES:
            problem = f"suffix {path.suffix or '(none)'!r} is not a photo's ({', '.join(PHOTO_SUFFIXES)})"
        if problem is None:
            photos.append(path)
        else:
            ignored.append(f"{path}: not used: {problem}")
    return photos, ignored
