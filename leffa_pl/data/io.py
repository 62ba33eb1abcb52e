"""Readers for dataset files. Every error is a ``DataFileError`` naming the file and what is wrong.

Images come back as HWC ``uint8`` numpy arrays, label maps as HW ``uint8`` arrays of label indices
(palette PNGs are read as indices, never converted to RGB). ``RequiredFile`` declares a file a
dataset needs and which reader decodes it, so one checker can walk any dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Sequence, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

FileKind = Literal["rgb", "label", "gray", "json", "npz"]


class DataFileError(ValueError):
    """A dataset file that is missing, unreadable or malformed; ``path`` names it."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class RequiredFile:
    """A file a dataset sample needs, with the reader (``kind``) that decodes it."""

    path: Path
    kind: FileKind


PairT = TypeVar("PairT")


class PairFilesDataset(Dataset, Generic[PairT]):
    """A Dataset over ``pairs`` whose samples read the files ``_files(pair)`` names; the checker walks them."""

    pairs: Sequence[PairT]

    def _files(self, pair: PairT) -> dict[str, RequiredFile]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.pairs)

    def required_files(self) -> list[RequiredFile]:
        """Every file the pairs need, for the checker."""
        return [f for pair in self.pairs for f in self._files(pair).values()]

    def person_file(self, index: int) -> Path:
        """The person (target) image of a sample: the evaluation's ground truth."""
        return self._files(self.pairs[index])["person"].path


def _open_image(path: Path, mode: str | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            if mode is not None and image.mode != mode:
                image = image.convert(mode)
            return np.asarray(image)
    except FileNotFoundError:
        raise DataFileError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataFileError(path, f"unreadable image ({error})") from None


def read_stored(path: str | Path) -> np.ndarray:
    """Read an image as stored (no mode conversion), e.g. to check that a map really is RGB."""
    return _open_image(Path(path), None)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8`` [H, W, 3] RGB."""
    return _open_image(Path(path), "RGB")


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8`` [H, W] luminance (binary masks stored as JPEG or PNG)."""
    return _open_image(Path(path), "L")


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map (palette or grayscale PNG) as ``uint8`` [H, W] label indices.

    A 3-channel file is accepted only when its channels are equal (a label map saved as RGB).
    """
    path = Path(path)
    labels = _open_image(path, None)
    if labels.ndim == 3:
        if labels.shape[2] < 3 or not (np.array_equal(labels[..., 0], labels[..., 1])
                                       and np.array_equal(labels[..., 0], labels[..., 2])):
            raise DataFileError(path, f"expected a single-channel label map, got shape {labels.shape}")
        labels = labels[..., 0]
    if labels.dtype != np.uint8:
        raise DataFileError(path, f"expected 8-bit labels, got {labels.dtype}")
    return labels


def read_json(path: str | Path) -> Any:
    """Parse a JSON file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataFileError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataFileError(path, f"invalid JSON ({error})") from None


def read_npz(path: str | Path, key: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Read an ``.npz`` archive (no pickles): one array by ``key``, or all arrays."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if key is None:
                return {name: archive[name] for name in archive.files}
            if key not in archive.files:
                raise DataFileError(path, f"no array '{key}' (has {archive.files})")
            return archive[key]
    except FileNotFoundError:
        raise DataFileError(path, "file not found") from None
    except (OSError, ValueError, EOFError) as error:
        raise DataFileError(path, f"unreadable npz ({error})") from None


def read_pair_list(path: str | Path) -> list[tuple[str, str]]:
    """Read a pair file: one ``first second`` pair per line, split on any whitespace; blank lines skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(path, "pair file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataFileError(path, f"unreadable pair file ({error})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataFileError(path, f"line {number}: expected 2 file names, got {len(fields)}: {line!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


_READERS = {"rgb": read_rgb, "label": read_label, "gray": read_gray, "json": read_json, "npz": read_npz}


def probe_file(required: RequiredFile, level: Literal["exists", "open", "decode"]) -> str | None:
    """Check one file at ``level`` and return the problem (``"missing"`` or a reason), or None if fine.

    ``exists``: present and non-empty. ``open``: images' headers identify a format, JSON/npz parse.
    ``decode``: every file fully decoded by its reader (catches truncated images).
    """
    path = required.path
    try:
        if path.stat().st_size == 0:
            return "empty file"
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"cannot stat ({error})"
    if level == "exists":
        return None
    try:
        if level == "open" and required.kind in ("rgb", "label", "gray"):
            with Image.open(path) as image:
                image.size  # the header was parsed
        else:
            _READERS[required.kind](path)
    except DataFileError as error:
        return error.problem
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"unreadable image ({error})"
    return None
