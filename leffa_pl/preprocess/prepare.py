"""``leffa-pl-prepare``: person and garment photos -> a dataset in the VITON-HD or DressCode layout.

Input: a folder of person photos and a folder of garment photos, paired by file name stem (``anna.jpg`` with
``anna.png``), or a CSV with the columns ``person,garment`` and optionally ``category`` and ``split`` (paths
relative to the CSV). Each person should wear the garment it is paired with: training and paired testing
use it as the target. Every photo is fitted to ``--size`` (aspect kept; persons padded by replicating the
border, garments with white), then parsed, its keypoints and DensePose computed, and written in the layout
with the pair files and, for VITON-HD, the inpaint mask (``agnostic-mask/``) of ``--mask-recipe`` (default: the
Leffa app's recipe, ``leffa-hd``); DressCode stores no masks (its data module computes them).

Resumable: ``prepare-manifest.csv`` fixes each pair's id and split at its first run; an item whose files
all exist is skipped, every file is written atomically (the person image last), and a rerun does the rest.
``prepare.json`` records the layout, size and mask recipe; resuming with others is refused; the manifest
names each item's mask recipe. A photo that cannot be used
(unreadable, too small, nobody found) is reported by name and skipped, never stopping the run; CMYK,
transparency and EXIF rotation are converted and reported.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from leffa_pl.data import dresscode, mask_recipes
from leffa_pl.data.layout import parse_size
from leffa_pl.data.mask_recipes.leffa_app import APP_RECIPES
from leffa_pl.preprocess.annotate import (
    NoPersonError,
    Preprocessor,
    add_weight_arguments,
    resolve_device,
    weights_from_args,
)
from leffa_pl.preprocess.densepose import DensePoseModelError
from leffa_pl.preprocess.files import write_text
from leffa_pl.preprocess.layouts import LAYOUTS, SPLITS, Item
from leffa_pl.preprocess.parsing import ParsingModelError
from leffa_pl.preprocess.photos import Photo, PhotoError, fit, list_photos, load_photo
from leffa_pl.preprocess.weights import WeightsNotFoundError

MANIFEST = "prepare-manifest.csv"
SETTINGS = "prepare.json"
MAX_UPSCALE = 4  # a photo smaller than a quarter of the size (either side) is too small


class PrepareInputError(ValueError):
    """Inputs that cannot be prepared at all (reported before any work starts)."""


@dataclass(frozen=True)
class Source:
    person: str
    garment: str
    category: str
    split: str | None = None


@dataclass
class PrepareSummary:
    items: list[Item]
    prepared: list[Item] = field(default_factory=list)
    present: list[Item] = field(default_factory=list)
    failed: list[tuple[Item, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pair_files: list[Path] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)  # photos left out before planning (folder input)
    mask_recipe: str | None = None  # of the stored masks

    def format(self, title: str, root: Path) -> str:
        lines = [f"{title} layout at {root}: {len(self.items)} pairs: {len(self.prepared)} prepared now, "
                 f"{len(self.present)} already there, {len(self.failed)} skipped"]
        if self.mask_recipe:
            lines.append(f"inpaint masks: mask recipe {mask_recipes.get(self.mask_recipe).describe()}")
        if self.notes:
            lines += ["converted:"] + [f"  {note}" for note in self.notes]
        if self.failed:
            lines += ["skipped:"] + [f"  {item.id}: {reason}" for item, reason in self.failed]
        if self.unpaired:
            lines += ["not paired:"] + [f"  {problem}" for problem in self.unpaired]
        done = len(self.items) - len(self.failed)
        lines.append(f"pair files ({done} pairs): " + ", ".join(str(p.relative_to(root)) for p in self.pair_files))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- inputs
def sources_from_folders(persons: Path, garments: Path, category: str) -> tuple[list[Source], list[str]]:
    """Person and garment photos paired by stem; unmatched photos are returned as problems."""
    person_list, garment_list = list_photos(persons), list_photos(garments)
    person_files, garment_files = {p.stem: p for p in person_list}, {p.stem: p for p in garment_list}
    problems = [f"{p}: not used: {by_stem[p.stem].name} has the same name (photos are paired by name)"
                for listed, by_stem in ((person_list, person_files), (garment_list, garment_files))
                for p in listed if by_stem[p.stem] != p]
    problems += [f"{garment_files[s]}: no person photo named {s}.*"
                for s in sorted(set(garment_files) - set(person_files))]
    problems += [f"{person_files[s]}: no garment photo named {s}.*"
                 for s in sorted(set(person_files) - set(garment_files))]
    return [Source(str(person_files[s].resolve()), str(garment_files[s].resolve()), category)
            for s in sorted(set(person_files) & set(garment_files))], problems


def sources_from_csv(path: Path, category: str) -> list[Source]:
    """Rows ``person,garment[,category][,split]``; relative paths are relative to the CSV's folder."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PrepareInputError(f"{path}: unreadable CSV ({error})") from None
    if not rows or not {"person", "garment"} <= set(rows[0]):
        raise PrepareInputError(f"{path}: expected a header with the columns person,garment[,category][,split]")
    sources = []
    for number, row in enumerate(rows, start=2):
        row_category, split = row.get("category") or category, row.get("split") or None
        if row_category not in dresscode.CATEGORIES:
            raise PrepareInputError(f"{path}: line {number}: category {row_category!r} not in {dresscode.CATEGORIES}")
        if split is not None and split not in SPLITS:
            raise PrepareInputError(f"{path}: line {number}: split {split!r} not in {SPLITS}")
        person, garment = (str((path.parent / p).resolve()) for p in (row["person"], row["garment"]))
        sources.append(Source(person, garment, row_category, split))
    return sources


# --------------------------------------------------------------------------------------------- plan
def read_manifest(root: Path) -> list[Item]:
    path = root / MANIFEST
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [Item(**row) for row in csv.DictReader(handle)]


def write_manifest(root: Path, items: Sequence[Item]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[f.name for f in fields(Item)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(item) for item in items)
    write_text(root / MANIFEST, text.getvalue())


def plan_items(sources: Sequence[Source], existing: Sequence[Item], layout_class, test_fraction: float,
               mask_recipe: str = "") -> list[Item]:
    """Existing items keep their id, split and mask recipe; new sources get the next ids and ``mask_recipe``, and
    every ``1 / test_fraction``-th new one without a split goes to ``test``."""
    known = {(item.person, item.garment, item.category): item for item in existing}
    items = list(existing)
    number = max((layout_class.id_number(item.id) for item in existing), default=-1) + 1
    every = max(1, round(1 / test_fraction)) if test_fraction > 0 else 0
    fresh = 0
    for source in sources:
        if (source.person, source.garment, source.category) in known:
            continue
        split = source.split or ("test" if every and fresh % every == every - 1 else "train")
        items.append(Item(layout_class.make_id(number), split, source.category, source.person, source.garment,
                          mask_recipe))
        number, fresh = number + 1, fresh + 1
    return items


def check_settings(root: Path, settings: dict) -> None:
    path = root / SETTINGS
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != settings:
            raise PrepareInputError(f"{root}: prepared with {stored}, now {settings}: give another output folder")
    else:
        write_text(path, json.dumps(settings, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ prepare
def _usable(photo: Photo, size: tuple[int, int]) -> None:
    height, width = photo.image.shape[:2]
    if height * MAX_UPSCALE < size[0] or width * MAX_UPSCALE < size[1]:
        raise PhotoError(photo.path, f"too small: {height}x{width} px, at least {-(-size[0] // MAX_UPSCALE)}x"
                                     f"{-(-size[1] // MAX_UPSCALE)} for {size[0]}x{size[1]}")


def prepare_item(item: Item, layout, preprocessor: Preprocessor, size: tuple[int, int]) -> list[str]:
    """Write one item's files; returns notes on converted photos. Raises PhotoError / NoPersonError."""
    photos = [load_photo(item.person), load_photo(item.garment)]
    for photo in photos:
        _usable(photo, size)
    person = fit(photos[0].image, size, pad="edge")[0]
    garment = fit(photos[1].image, size, pad="white")[0]
    try:
        annotation = preprocessor.annotate(person, layout.name)
    except NoPersonError as error:
        raise PhotoError(item.person, str(error)) from None
    layout.write(item, person, garment, annotation)
    return [f"{photo.path}: {note}" for photo in photos for note in photo.notes]


def resolve_mask_recipe(layout_name: str, requested: str | None) -> str | None:
    """The recipe of the stored masks: ``requested`` or the Leffa app's for the layout; None for a layout that
    stores no masks (asking for one there is an error)."""
    if not LAYOUTS[layout_name].stores_masks:
        if requested is not None:
            raise PrepareInputError(f"--mask-recipe {requested}: the {LAYOUTS[layout_name].title} layout stores no "
                                    "masks; its data module computes them (its mask_recipe setting)")
        return None
    return mask_recipes.get(requested or APP_RECIPES[layout_name]).name


def prepare_dataset(sources: Sequence[Source], root: Path, layout_name: str, size: tuple[int, int],
                    preprocessor: Preprocessor, test_fraction: float = 0.1, progress: bool = True,
                    mask_recipe: str | None = None) -> PrepareSummary:
    """``mask_recipe``: of the stored masks (``resolve_mask_recipe``)."""
    recipe = resolve_mask_recipe(layout_name, mask_recipe)
    root.mkdir(parents=True, exist_ok=True)
    layout = LAYOUTS[layout_name](root)
    check_settings(root, {"layout": layout_name, "size": list(size)} | ({"mask_recipe": recipe} if recipe else {}))
    items = plan_items(sources, read_manifest(root), type(layout), test_fraction, recipe or "")
    write_manifest(root, items)
    summary = PrepareSummary(items, mask_recipe=recipe)
    pending = []
    for item in items:
        (summary.present if all(p.is_file() for p in layout.outputs(item).values()) else pending).append(item)
    if pending:
        preprocessor.load()
    for item in tqdm(pending, desc="leffa-pl-prepare", unit="pair", disable=not progress):
        try:
            summary.notes += prepare_item(item, layout, preprocessor, size)
            summary.prepared.append(item)
        except PhotoError as error:
            summary.failed.append((item, str(error)))
        except (WeightsNotFoundError, ParsingModelError, DensePoseModelError):
            raise  # no item can be prepared without the networks
        except Exception as error:  # one bad photo must not stop the run; the summary names it
            summary.failed.append((item, f"{item.person}: unexpected {type(error).__name__}: {error}"))
    failed = {item.id for item, _ in summary.failed}
    summary.pair_files = layout.write_pair_files([item for item in items if item.id not in failed])
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every pair was prepared, 1 when some were skipped (the rest is a usable dataset), 2 on errors
    that stop the run before it starts."""
    parser = argparse.ArgumentParser(prog="leffa-pl-prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--persons", type=Path, help="folder of person photos (with --garments)")
    inputs.add_argument("--pairs", type=Path, help="CSV: person,garment[,category][,split]")
    parser.add_argument("--garments", type=Path, help="folder of garment photos, paired with persons by name")
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write (resumed when it exists)")
    parser.add_argument("--size", type=parse_size, default=(1024, 768), help="HxW (default 1024x768)")
    parser.add_argument("--category", default="upper_body", choices=dresscode.CATEGORIES,
                        help="DressCode category of pairs without one")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of new pairs put in the test split")
    parser.add_argument("--mask-recipe", choices=sorted(mask_recipes.RECIPES),
                        help=f"recipe of the stored inpaint masks (vitonhd layout; default {APP_RECIPES['vitonhd']}, "
                             "the Leffa app's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    parser.add_argument("--no-progress", action="store_true")
    add_weight_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.persons is not None:
            if args.garments is None:
                parser.error("--persons needs --garments")
            sources, unmatched = sources_from_folders(args.persons, args.garments, args.category)
        else:
            sources, unmatched = sources_from_csv(args.pairs, args.category), []
        if not sources:
            raise PrepareInputError("no person/garment pairs found" + "".join(f"\n  {p}" for p in unmatched))
        preprocessor = Preprocessor(weights_from_args(args, resolve_device(args.device)),
                                    cihp=args.layout == "vitonhd")
        summary = prepare_dataset(sources, args.out, args.layout, args.size, preprocessor, args.test_fraction,
                                  progress=not args.no_progress, mask_recipe=args.mask_recipe)
        summary.unpaired = unmatched
    except (PrepareInputError, PhotoError, WeightsNotFoundError, ValueError) as error:
        print(f"leffa-pl-prepare: {error}", file=sys.stderr)
        return 2
    print(summary.format(LAYOUTS[args.layout].title, args.out))
    print(f"check it: leffa-pl-check-data {args.out} --dataset {args.layout}")
    return 1 if summary.failed or summary.unpaired else 0


if __name__ == "__main__":
    sys.exit(main())
