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
names each item's mask recipe. The manifest is read as
untrusted: an id, split or category that is not one the layout writes is refused naming its line, so no
pair's files land outside ``--out``. A photo that cannot be used (unreadable, too small, nobody found) is
reported by name and skipped, never stopping the run; CMYK, transparency, 16-bit grey and EXIF rotation are
converted and reported. Items whose source photo was deleted before it was prepared are dropped from the
manifest (and reported). An output that cannot be written (disk full) stops the run with the summary so far.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from leffa_pl import exit_codes
from leffa_pl.annotators.densepose import DensePoseModelError
from leffa_pl.annotators.device import resolve_device
from leffa_pl.annotators.weight_files import WeightsNotFoundError
from leffa_pl.atomic_write import remove_stale_temporaries, unwritable_reason
from leffa_pl.data import mask_recipes
from leffa_pl.data.file_writers import write_text
from leffa_pl.data.files import DataFileError, check_name
from leffa_pl.data.layout import parse_size
from leffa_pl.datasets import registry
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.writing import SPLITS, Item
from leffa_pl.preprocess.annotate import (
    NoPersonError,
    Preprocessor,
    add_weight_arguments,
    needs_app_parsing,
    weights_from_args,
)
from leffa_pl.preprocess.parsing import ParsingModelError
from leffa_pl.preprocess.photos import PhotoError, check_size, fit, list_photos, load_photo

MANIFEST = "prepare-manifest.csv"
SETTINGS = "prepare.json"


class PrepareInputError(ValueError):
    """Inputs that cannot be prepared at all (reported before any work starts)."""


class PrepareWriteError(OSError):
    """An output file that could not be written (disk full, read-only folder): the run stops."""

    def __init__(self, error: OSError):
        self.reason = f"cannot write {error.filename or 'the output'}: {error.strerror or error}"
        super().__init__(error.errno, self.reason)


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
    dropped: list[str] = field(default_factory=list)  # manifest items whose source photo was deleted
    stopped: str | None = None  # why the run stopped early (an output could not be written)

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
        if self.dropped:
            lines += ["dropped from the manifest (source photo deleted):"] + [f"  {line}" for line in self.dropped]
        if self.stopped:
            settled = len(self.present) + len(self.prepared) + len(self.failed)
            lines.append(f"STOPPED: {self.stopped}; {len(self.items) - settled} pairs not prepared, pair files "
                         "not updated; free space (or make the folder writable) and rerun to resume")
            return "\n".join(lines)
        done = len(self.items) - len(self.failed)
        lines.append(f"pair files ({done} pairs): " + ", ".join(str(p.relative_to(root)) for p in self.pair_files))
        return "\n".join(lines)

    def exit_code(self) -> int:
        if self.stopped:
            return exit_codes.CANNOT_WRITE
        return exit_codes.SKIPPED if self.failed or self.unpaired else exit_codes.DONE


# ------------------------------------------------------------------------------------------- inputs
def sources_from_folders(persons: Path, garments: Path, category: str) -> tuple[list[Source], list[str]]:
    """Person and garment photos paired by stem; unmatched photos are returned as problems."""
    (person_list, person_ignored), (garment_list, garment_ignored) = list_photos(persons), list_photos(garments)
    person_files, garment_files = {p.stem: p for p in person_list}, {p.stem: p for p in garment_list}
    problems = [f"{p}: not used: {by_stem[p.stem].name} has the same name (photos are paired by name)"
                for listed, by_stem in ((person_list, person_files), (garment_list, garment_files))
                for p in listed if by_stem[p.stem] != p]
    problems += [f"{garment_files[s]}: no person photo named {s}.*"
                for s in sorted(set(garment_files) - set(person_files))]
    problems += [f"{person_files[s]}: no garment photo named {s}.*"
                 for s in sorted(set(person_files) - set(garment_files))]
    problems += person_ignored + garment_ignored
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
        if any(not row[column] or "\0" in row[column] for column in ("person", "garment")):
            raise PrepareInputError(f"{path}: line {number}: empty path or NUL byte in the person/garment column")
        person, garment = (str((path.parent / p).resolve()) for p in (row["person"], row["garment"]))
        sources.append(Source(person, garment, row_category, split))
    return sources


# --------------------------------------------------------------------------------------------- plan
def _manifest_item(row: dict, path: Path, line: int, layout_class) -> Item:
    """One manifest row, checked like any input: an id the layout makes (a plain name), a known split and
    category. The manifest can be edited or planted; its values become output paths."""
    columns = [f.name for f in fields(Item)]
    if sorted(row) == sorted(set(columns) - {"mask_recipe"}):
        raise PrepareInputError(f"{path}: written by an earlier leffa-pl (no mask_recipe column): its masks came "
                                "from a recipe that matches no published one; prepare into a new folder")
    if sorted(row) != sorted(columns) or any(value is None for value in row.values()):
        raise PrepareInputError(f"{path}: line {line}: expected the columns {','.join(columns)}")
    item = Item(**row)
    try:
        check_name(item.id, path, line, "id")
        wellformed = layout_class.make_id(layout_class.id_number(item.id)) == item.id
    except DataFileError as error:
        raise PrepareInputError(str(error)) from None
    except ValueError:
        wellformed = False
    if not wellformed:
        raise PrepareInputError(f"{path}: line {line}: id {item.id!r} is not a {layout_class.title} id "
                                f"(like {layout_class.make_id(0)})")
    if item.split not in SPLITS:
        raise PrepareInputError(f"{path}: line {line}: split {item.split!r} not in {SPLITS}")
    if item.category not in dresscode.CATEGORIES:
        raise PrepareInputError(f"{path}: line {line}: category {item.category!r} not in {dresscode.CATEGORIES}")
    if item.mask_recipe and item.mask_recipe not in mask_recipes.RECIPES:
        raise PrepareInputError(f"{path}: line {line}: mask recipe {item.mask_recipe!r} not in "
                                f"{sorted(mask_recipes.RECIPES)}")
    return item


def read_manifest(root: Path, layout_class) -> list[Item]:
    """The items of earlier runs; a malformed or tampered manifest is refused naming the line."""
    path = root / MANIFEST
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            items = [_manifest_item(row, path, reader.line_num, layout_class) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PrepareInputError(f"{path}: unreadable manifest ({error})") from None
    repeated = [identifier for identifier, count in Counter(item.id for item in items).items() if count > 1]
    if repeated:
        raise PrepareInputError(f"{path}: id {repeated[0]} appears more than once")
    return items


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
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PrepareInputError(f"{path}: unreadable ({error})") from None
        if stored != settings:
            raise PrepareInputError(f"{root}: prepared with {stored}, now {settings}: give another output folder")
    else:
        write_text(path, json.dumps(settings, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ prepare
def prepare_item(item: Item, layout, preprocessor: Preprocessor, size: tuple[int, int]) -> list[str]:
    """Write one item's files; returns notes on converted photos. Raises PhotoError / NoPersonError, and
    PrepareWriteError when a file cannot be written."""
    photos = [load_photo(item.person), load_photo(item.garment)]
    for photo in photos:
        check_size(photo, size)
    person = fit(photos[0].image, size, pad="edge")[0]
    garment = fit(photos[1].image, size, pad="white")[0]
    try:
        annotation = preprocessor.annotate(person, layout, item.mask_recipe or None)
    except NoPersonError as error:
        raise PhotoError(item.person, str(error)) from None
    try:
        layout.write(item, person, garment, annotation)
    except OSError as error:
        raise PrepareWriteError(error) from None
    return [f"{photo.path}: {note}" for photo in photos for note in photo.notes]


def layout_names() -> list[str]:
    """The datasets whose layout prepare writes (their spec has a ``layout_writer``)."""
    return [spec.name for spec in registry.specs() if spec.layout_writer is not None]


def resolve_mask_recipe(layout_name: str, requested: str | None) -> str | None:
    """The recipe of the stored masks: ``requested`` or the Leffa app's for the layout; None for a layout that
    stores no masks (asking for one there is an error)."""
    spec = registry.get(layout_name)
    if not spec.layout_writer.stores_masks:
        if requested is not None:
            raise PrepareInputError(f"--mask-recipe {requested}: the {spec.layout_writer.title} layout stores no "
                                    "masks; its data module computes them (its mask_recipe setting)")
        return None
    return mask_recipes.get(requested or spec.app_mask_recipe).name


def check_sources_outside(sources: Sequence[Source], root: Path) -> None:
    """Refuse photos inside the dataset root: prepare writes and sweeps there, so a photo could be overwritten by
    an output of the same name, or a rerun could read outputs as new photos."""
    inside = sorted({photo for source in sources for photo in (source.person, source.garment)
                     if Path(photo).resolve().is_relative_to(root.resolve())})
    if inside:
        raise PrepareInputError(f"{len(inside)} photo(s) lie inside the output folder {root}, where prepare writes, "
                                f"e.g. {inside[0]}: keep the photos elsewhere or choose another --out")


def prepare_dataset(sources: Sequence[Source], root: Path, layout_name: str, size: tuple[int, int],
                    preprocessor: Preprocessor, test_fraction: float = 0.1, progress: bool = True,
                    mask_recipe: str | None = None) -> PrepareSummary:
    """Prepare every source into ``root`` (see the module docstring); ``mask_recipe``: of the stored masks
    (``resolve_mask_recipe``). Raises ``PrepareInputError`` for inputs
    that cannot be used and ``PrepareWriteError`` when ``root`` cannot be written, both before any work; a write
    failure later stops the run and is recorded in the summary (``stopped``)."""
    recipe = resolve_mask_recipe(layout_name, mask_recipe)
    check_sources_outside(sources, root)
    reason = unwritable_reason(root)
    if reason is not None:
        raise PrepareWriteError(OSError(0, reason, str(root)))
    layout = registry.get(layout_name).layout_writer(root)
    existing = read_manifest(root, type(layout))
    try:
        check_settings(root, {"layout": layout_name, "size": list(size)}
                       | ({"mask_recipe": recipe} if recipe else {}))
    except OSError as error:
        raise PrepareWriteError(error) from None
    for folder in [root, *(path for path in root.rglob("*") if path.is_dir() and not path.is_symlink())]:
        remove_stale_temporaries(folder)  # of writes a killed run interrupted; nothing else writes here now
    items, dropped = [], []
    for item in plan_items(sources, existing, type(layout), test_fraction, recipe or ""):
        complete = all(p.is_file() for p in layout.outputs(item).values())
        gone = [photo for photo in (item.person, item.garment) if not Path(photo).is_file()]
        if gone and not complete:
            dropped.append(f"{item.id}: {gone[0]} no longer exists")
        else:
            items.append(item)
    try:
        write_manifest(root, items)
    except OSError as error:
        raise PrepareWriteError(error) from None
    summary = PrepareSummary(items, dropped=dropped, mask_recipe=recipe)
    pending = []
    for item in items:
        (summary.present if all(p.is_file() for p in layout.outputs(item).values()) else pending).append(item)
    if pending:
        preprocessor.load()
    for item in tqdm(pending, desc="leffa-pl-prepare", unit="pair", disable=not progress):
        try:
            summary.notes += prepare_item(item, layout, preprocessor, size)
            summary.prepared.append(item)
        except PrepareWriteError as error:
            summary.stopped = error.reason  # every later pair would fail the same way
            return summary
        except PhotoError as error:
            summary.failed.append((item, str(error)))
        except (WeightsNotFoundError, ParsingModelError, DensePoseModelError):
            raise  # no item can be prepared without the networks
        except Exception as error:  # one bad photo must not stop the run; the summary names it
            summary.failed.append((item, f"{item.person}: unexpected {type(error).__name__}: {error}"))
    failed = {item.id for item, _ in summary.failed}
    try:
        summary.pair_files = layout.write_pair_files([item for item in items if item.id not in failed])
    except OSError as error:
        summary.stopped = PrepareWriteError(error).reason
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The exit codes of ``exit_codes``: some pairs skipped leaves the rest a usable dataset."""
    parser = argparse.ArgumentParser(prog="leffa-pl-prepare", description=__doc__.splitlines()[0],
                                     epilog=exit_codes.EPILOG)
    parser.add_argument("--layout", required=True, choices=sorted(layout_names()))
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
                        help="recipe of the stored inpaint masks (layouts storing masks; default the Leffa app's: "
                             + ", ".join(f"{spec.app_mask_recipe} for {spec.name}" for spec in registry.specs()
                                         if spec.layout_writer is not None and spec.layout_writer.stores_masks) + ")")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    parser.add_argument("--no-progress", action="store_true")
    add_weight_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.test_fraction <= 1:  # NaN fails too
        parser.error(f"--test-fraction {args.test_fraction}: expected a share between 0 and 1")
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
                                    cihp=registry.get(args.layout).label_set == "cihp"
                                    or needs_app_parsing(args.mask_recipe))
        summary = prepare_dataset(sources, args.out, args.layout, args.size, preprocessor, args.test_fraction,
                                  progress=not args.no_progress, mask_recipe=args.mask_recipe)
        summary.unpaired = unmatched
    except PrepareWriteError as error:
        print(f"leffa-pl-prepare: {error.reason}", file=sys.stderr)
        return exit_codes.CANNOT_WRITE
    except (PrepareInputError, PhotoError, WeightsNotFoundError, ValueError) as error:
        print(f"leffa-pl-prepare: {error}", file=sys.stderr)
        return exit_codes.CANNOT_START
    print(summary.format(registry.get(args.layout).layout_writer.title, args.out))
    if summary.stopped:
        print(f"leffa-pl-prepare: {summary.stopped}", file=sys.stderr)
    else:
        print(f"check it: leffa-pl-check-data {args.out} --dataset {args.layout}")
    return summary.exit_code()


if __name__ == "__main__":
    sys.exit(main())
