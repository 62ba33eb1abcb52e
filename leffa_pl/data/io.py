"""Readers for dataset files, and the walk that checks a dataset's files with them.

Every error is a ``DataFileError`` naming the file and what is wrong. Images come back as HWC ``uint8``
numpy arrays, label maps as HW ``uint8`` arrays of label indices (palette PNGs are read as indices, never
converted to RGB). ``probe_file`` checks one ``RequiredFile`` at a level and ``walk_files`` many (in
threads), into a ``FileReport``.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from leffa_pl.data.files import CheckLevel, DataFileError, FileProblem, FileReport, RequiredFile

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


def probe_file(required: RequiredFile, level: CheckLevel) -> str | None:
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


def walk_files(name: str, root: Path, files: Iterable[RequiredFile], level: CheckLevel = "open",
               pairs: int = 0, problems: Sequence[FileProblem] = (), workers: int = 8) -> FileReport:
    """Probe each distinct file at ``level`` and collect the problems (plus ``problems`` found earlier)."""
    distinct = list(dict.fromkeys(files))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(lambda required: probe_file(required, level), distinct))
    found = [FileProblem(req.path, outcome) for req, outcome in zip(distinct, outcomes) if outcome is not None]
    return FileReport(name=name, root=Path(root), level=level, pairs=pairs, files=len(distinct),
                      problems=list(problems) + found)
