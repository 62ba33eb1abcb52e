"""Readers for dataset files, and the walk that checks a dataset's files with them.

Every error is a ``DataFileError`` naming the file and what is wrong. Images come back as HWC ``uint8``
numpy arrays, label maps as HW ``uint8`` arrays of label indices (palette PNGs are read as indices, never
converted to RGB). ``probe_file`` checks one ``RequiredFile`` at a level and ``walk_files`` many (in
threads), into a ``FileReport``.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from leffa_pl.data.files import CheckLevel, DataFileError, FileProblem, FileReport, RequiredFile, check_name
from leffa_pl.data.layout import FLOW_KEY


def parsing_palette(count: int = 256) -> list[int]:
    """The usual parsing palette (label bits spread over R, G, B), as a flat PIL palette."""
    colors = []
    for label in range(count):
        r = g = b = 0
        value, bit = label, 0
        while value:
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
            bit += 1
        colors += [r, g, b]
    return colors


def label_image(labels: np.ndarray) -> Image.Image:
    """Label indices as a palette ("P") image in the datasets' parsing palette, as they store parsings."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(parsing_palette())
    return image


# What PIL raises for a file it cannot decode; a decompression bomb (more pixels than ``Image.MAX_IMAGE_PIXELS``
# allows) is none of the others.
IMAGE_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16/32-bit grey: PIL's convert() clips at 255


def to_8bit(image: Image.Image) -> tuple[Image.Image, str | None]:
    """A 16-bit (or 32-bit integer / float) grey image scaled to 8 bits by its bit depth; PIL's ``convert``
    would clip every value above 255 to white. Returns the image and a note when it converted."""
    if image.mode not in _WIDE_MODES:
        return image, None
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scale, depth = max(1.0, float(np.nanmax(values)) if values.size else 1.0) / 255.0, "float"
    else:  # 16-bit files (PNG, TIFF) load as I;16 or I: scale 0..65535 to 0..255
        scale, depth = 65535.0 / 255.0, "16-bit"
    eight = np.clip(np.nan_to_num(values / scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(eight, mode="L"), f"{depth} grey ({image.mode}) scaled to 8 bits"


def _open_image(path: Path, mode: str | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            image = to_8bit(image)[0] if mode is not None else image
            if mode is not None and image.mode != mode:
                image = image.convert(mode)
            return np.asarray(image)
    except FileNotFoundError:
        raise DataFileError(path, "file not found") from None
    except IMAGE_READ_ERRORS as error:
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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataFileError(path, f"unreadable npz ({error})") from None


def read_pair_list(path: str | Path) -> list[tuple[str, str]]:
    """Read a pair file: one ``first second`` pair per line, split on any whitespace; blank lines skipped. Each
    name must be a plain file name (``check_name``: never a path out of the dataset)."""
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
        pairs.append((check_name(fields[0], path, number), check_name(fields[1], path, number)))
    return pairs


def read_binary_mask(path: str | Path) -> np.ndarray:
    """A mask stored as an 8-bit image (JPEG or PNG) -> ``uint8`` [H, W] of 0/1 (1 where >= 128)."""
    return (read_gray(path) >= 128).astype(np.uint8)


def read_flow(path: str | Path) -> np.ndarray:
    """A ground-truth flow archive (key ``flow``, float [2, H, W]) -> float32 [H, W, 2]."""
    path = Path(path)
    flow = read_npz(path, FLOW_KEY)
    if flow.ndim != 3 or flow.shape[0] != 2 or not np.issubdtype(flow.dtype, np.floating):
        raise DataFileError(path, f"expected a float [2, H, W] flow, got {flow.dtype} {list(flow.shape)}")
    return flow.transpose(1, 2, 0).astype(np.float32, copy=False)


_READERS = {"rgb": read_rgb, "label": read_label, "gray": read_gray, "json": read_json, "npz": read_npz}


def read_file(required: RequiredFile) -> Any:
    """Decode a required file with its reader (raises ``DataFileError`` naming it)."""
    return (required.reader or _READERS[required.kind])(required.path)


def check_map_size(path: Path, size: tuple[int, int], image_size: tuple[int, int]) -> bool:
    """The auxiliary-map size rule: a map aligned with an image of ``image_size`` (H, W) may have another size
    with the same aspect ratio, up to rounding to whole pixels (True: the loader resizes it with nearest
    neighbour); another aspect ratio is a ``DataFileError`` naming the map."""
    if tuple(size) == tuple(image_size):
        return False
    (height, width), (image_height, image_width) = size, image_size
    # e.g. 550x375 for 1101x750: the width its height implies is 374.6, within a pixel.
    if abs(width - height * image_width / image_height) > 1 and abs(height - width * image_height / image_width) > 1:
        raise DataFileError(path, f"size {height}x{width} has another aspect ratio than its image's "
                                  f"{image_height}x{image_width} (maps aligned with the image must have its aspect "
                                  "ratio; those of another size are resized)")
    return True


def data_size(data: Any) -> tuple[int, int] | None:
    """(H, W) of a decoded map or image, None for other data (JSON)."""
    return tuple(data.shape[:2]) if isinstance(data, np.ndarray) and data.ndim >= 2 else None


# What ends an intact file of a format: a truncated file lacks it (checked at the ``open`` level, cheaply).
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL_BYTES = 1024


def _missing_end_marker(path: Path, image_format: str | None) -> bool:
    marker = _END_MARKERS.get(image_format or "")
    if marker is None:
        return False
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - _TAIL_BYTES))
        return marker not in handle.read()


@dataclass(frozen=True)
class Probe:
    """Outcome of checking one file: the problem (None when fine) and its (H, W) where the level knows it."""

    problem: str | None
    size: tuple[int, int] | None = None


def probe_file(required: RequiredFile, level: CheckLevel) -> Probe:
    """Check one file at ``level``.

    ``exists``: present and non-empty. ``open``: plain images (photos, renderings: every pixel value is valid)
    have a header naming a format and, as JPEG/PNG, their end marker (a truncated file has none); every other
    file (label maps, masks, DensePose, JSON, npz: their values are checked) is read by the loader's reader.
    ``decode``: every file read by the loader's reader (also catches corrupt data inside a plain image).
    """
    path = required.path
    try:
        if path.stat().st_size == 0:
            return Probe("empty file")
    except FileNotFoundError:
        return Probe("missing")
    except OSError as error:
        return Probe(f"cannot stat ({error})")
    if level == "exists":
        return Probe(None)
    try:
        if level == "open" and required.kind == "rgb" and required.reader is None:
            with Image.open(path) as image:
                width, height = image.size  # the header was parsed
                image_format = image.format
            if _missing_end_marker(path, image_format):
                return Probe(f"truncated {image_format} (no end marker)", (height, width))
            return Probe(None, (height, width))
        return Probe(None, data_size(read_file(required)))
    except DataFileError as error:
        return Probe(error.problem)
    except IMAGE_READ_ERRORS as error:
        return Probe(f"unreadable image ({error})")


def walk_files(name: str, root: Path, pair_files: Iterable[dict[str, RequiredFile]], level: CheckLevel = "open",
               problems: Sequence[FileProblem] = (), workers: int = 8) -> FileReport:
    """Probe each distinct file of the pairs at ``level``, then apply the auxiliary-map size rule per pair
    where the level knows the sizes; collect the problems (plus ``problems`` found earlier)."""
    pair_files = list(pair_files)
    distinct = list(dict.fromkeys(f for files in pair_files for f in files.values()))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        probes = dict(zip(distinct, pool.map(lambda required: probe_file(required, level), distinct)))
    found = {req.path: FileProblem(req.path, probe.problem) for req, probe in probes.items() if probe.problem}
    resized: dict[Path, str] = {}
    for files in pair_files:
        image_size = probes[files["person"]].size
        for required in files.values():
            size = probes[required].size
            if not required.aligned or image_size is None or size is None or required.path in found:
                continue
            try:
                if check_map_size(required.path, size, image_size):
                    resized[required.path] = (f"{required.path} {size[0]}x{size[1]} for "
                                              f"{image_size[0]}x{image_size[1]}")
            except DataFileError as error:
                found[required.path] = FileProblem(required.path, error.problem)
    return FileReport(name=name, root=Path(root), level=level, pairs=len(pair_files), files=len(distinct),
                      problems=list(problems) + list(found.values()), resized=list(resized.values()))
