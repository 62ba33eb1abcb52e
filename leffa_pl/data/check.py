"""Dataset file checking: walk the files a dataset's pairs need and report every problem by path.

Datasets declare their files (``RequiredFile``); ``walk_files`` probes them (optionally in threads)
and returns a ``FileReport`` that counts problems per folder and lists each file. The data modules
run the same walk in ``setup()`` and raise ``DatasetFilesError`` with the report, so a broken
dataset fails before training starts. ``main`` is the ``leffa-pl-check-data`` command.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from leffa_pl.data.io import RequiredFile, probe_file

CheckLevel = Literal["exists", "open", "decode"]


@dataclass(frozen=True)
class FileProblem:
    """One missing or unreadable file (or pair file) and what is wrong with it."""

    path: Path
    problem: str

    @property
    def missing(self) -> bool:
        return self.problem in ("missing", "pair file not found")


class DatasetFilesError(RuntimeError):
    """A dataset with missing or unreadable files; the message is the full report."""

    def __init__(self, report: "FileReport"):
        self.report = report
        super().__init__(report.format())


@dataclass
class FileReport:
    """Outcome of a walk: the problems, and how many pairs and distinct files were checked."""

    name: str
    root: Path
    level: CheckLevel
    pairs: int = 0
    files: int = 0
    problems: list[FileProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # dataset-specific lines printed under the summary

    @property
    def ok(self) -> bool:
        return not self.problems

    def folder_of(self, problem: FileProblem) -> str:
        try:
            folder = problem.path.parent.relative_to(self.root)
        except ValueError:
            folder = problem.path.parent
        return f"{folder.as_posix()}/"

    def per_folder(self) -> dict[str, Counter]:
        """{folder relative to the root: Counter(missing=..., unreadable=...)}, folders sorted."""
        counts: dict[str, Counter] = {}
        for problem in self.problems:
            kind = "missing" if problem.missing else "unreadable"
            counts.setdefault(self.folder_of(problem), Counter())[kind] += 1
        return dict(sorted(counts.items()))

    def format(self) -> str:
        head = (f"{self.name} at {self.root}: {self.pairs} pairs, {self.files} files checked "
                f"(level '{self.level}')")
        if self.ok:
            return "\n".join([f"{head}: OK"] + self.notes)
        missing = sum(p.missing for p in self.problems)
        lines = [f"{head}: {missing} missing, {len(self.problems) - missing} unreadable", *self.notes,
                 "per folder:"]
        for folder, counts in self.per_folder().items():
            lines.append(f"  {folder}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
        lines.append("files:")
        for problem in sorted(self.problems, key=lambda p: str(p.path)):
            what = "missing" if problem.missing else f"unreadable: {problem.problem}"
            lines.append(f"  {problem.path}  ({what})")
        return "\n".join(lines)


def walk_files(name: str, root: Path, files: Iterable[RequiredFile], level: CheckLevel = "open",
               pairs: int = 0, problems: Sequence[FileProblem] = (), workers: int = 8) -> FileReport:
    """Probe each distinct file at ``level`` and collect the problems (plus ``problems`` found earlier)."""
    distinct = list(dict.fromkeys(files))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(lambda required: probe_file(required, level), distinct))
    found = [FileProblem(req.path, outcome) for req, outcome in zip(distinct, outcomes) if outcome is not None]
    return FileReport(name=name, root=Path(root), level=level, pairs=pairs, files=len(distinct),
                      problems=list(problems) + found)


def _vitonhd(args: argparse.Namespace):
    from leffa_pl.data.datamodule import VitonHDDataModule

    return VitonHDDataModule(root=args.root, mask_source=args.mask_source)


def _dresscode(args: argparse.Namespace):
    from leffa_pl.data.datamodule import DressCodeDataModule

    return DressCodeDataModule(root=args.root, category=args.category)


def _deepfashion(args: argparse.Namespace):
    from leffa_pl.data.datamodule import DeepFashionDataModule

    return DeepFashionDataModule(root=args.root)


# Dataset name -> factory of a data module (it has ``splits`` and ``check_files(splits, level, workers)``).
DATASETS: dict[str, Callable[[argparse.Namespace], object]] = {"vitonhd": _vitonhd, "dresscode": _dresscode,
                                                               "deepfashion": _deepfashion}


def main(argv: Sequence[str] | None = None) -> int:
    """``leffa-pl-check-data ROOT --dataset NAME``: exit 0 when every file is fine, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="leffa-pl-check-data", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (data/zalando-hd-resized, data/DressCode, data/deepfashion, ...)")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--splits", nargs="+", help="splits to walk (default: all of the dataset's splits)")
    parser.add_argument("--level", default="decode", choices=["exists", "open", "decode"],
                        help="exists: present and non-empty; open: headers/JSON parse; decode: full decode")
    parser.add_argument("--workers", type=int, default=8, help="threads probing files")
    parser.add_argument("--category", default="all", choices=["upper_body", "lower_body", "dresses", "all"],
                        help="DressCode category")
    parser.add_argument("--mask-source", default="auto", choices=["auto", "precomputed", "computed"],
                        help="VITON-HD inpaint masks: agnostic-mask/ files or computed from parsing + pose")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"{args.root}: not a directory", file=sys.stderr)
        return 1
    module = DATASETS[args.dataset](args)
    report = module.check_files(args.splits or module.splits, level=args.level, workers=args.workers)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
