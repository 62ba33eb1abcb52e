"""What a dataset's files are and what can be wrong with them: the bottom of the data layer (imports nothing
of leffa_pl).

``RequiredFile`` declares a file a sample needs and the reader (``kind``) that decodes it. ``DataFileError`` is
raised by the readers for one bad file; a walk over many files collects ``FileProblem``s into a ``FileReport``
(problem counts per folder, every file listed), and ``DatasetFilesError`` carries that report when a data
module refuses a dataset in ``setup()``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Callable, Literal

FileKind = Literal["rgb", "label", "gray", "json", "npz"]
CheckLevel = Literal["exists", "open", "decode"]
CHECK_LEVELS: tuple[CheckLevel, ...] = ("exists", "open", "decode")


def no_such_folder(path: str | Path, what: str) -> str:
    """``"<path>: no such <what>"``, saying for a relative path which directory it was taken relative to."""
    path = Path(path)
    relative = "" if path.is_absolute() else f" (relative to the current directory {Path.cwd()})"
    return f"{path}: no such {what}{relative}"


class DataFileError(ValueError):
    """A dataset file that is missing, unreadable or malformed; ``path`` names it."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as one file name inside a folder, or None. The rule for every name read from a
    file (pair lists, CSVs, manifests) or taken from a photo before it is joined to a folder: not empty, no NUL or
    other control character, no path separator (``/`` or ``\\``), not ``.`` or ``..``, no drive (``C:``); such a
    name stays inside its folder."""
    if not name:
        return "empty"
    if "\0" in name:
        return "contains a NUL byte"
    if any(ord(character) < 32 or character == "\x7f" for character in name):
        return "contains a control character"
    if "/" in name or "\\" in name:
        return "contains a path separator (a name, not a path, is expected)"
    if name in (".", ".."):
        return "is a reference to a folder, not a file name"
    if PureWindowsPath(name).drive:
        return "names a drive"
    return None


def check_name(name: str, source: str | Path, line: int | None = None, what: str = "name") -> str:
    """``name`` (read from ``source`` at ``line``) when it passes ``name_problem``, else a ``DataFileError`` naming
    the file, the line and the problem."""
    problem = name_problem(name)
    if problem is not None:
        where = f"line {line}: " if line is not None else ""
        raise DataFileError(source, f"{where}{what} {name!r} {problem}; refused (names must stay inside the folder)")
    return name


@dataclass(frozen=True)
class RequiredFile:
    """A file a dataset sample needs.

    ``kind`` says how the ``open`` check probes an image (its header); ``reader`` is the function the loader
    decodes the file with, and so what the ``decode`` check runs (None: the kind's plain reader; a module-level
    function, so that equal declarations compare equal). ``aligned``: a map aligned with the person image, under
    the auxiliary-map size rule (``io.check_map_size``).
    """

    path: Path
    kind: FileKind
    reader: Callable[[Path], Any] | None = None
    aligned: bool = False


@dataclass(frozen=True)
class FileProblem:
    """One missing or unreadable file (or pair file) and what is wrong with it."""

    path: Path
    problem: str

    @property
    def missing(self) -> bool:
        return self.problem in ("missing", "pair file not found")


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
    resized: list[str] = field(default_factory=list)  # aligned maps of another size, same aspect ratio
    ranks: int = 1  # processes that shared the walk

    @classmethod
    def merged(cls, reports: list[FileReport]) -> FileReport:
        """One report from the shares of a walk split over processes (each walked some of the pairs)."""
        first = reports[0]
        return cls(name=first.name, root=first.root, level=first.level, pairs=sum(r.pairs for r in reports),
                   files=sum(r.files for r in reports),
                   problems=list(dict.fromkeys(p for r in reports for p in r.problems)), notes=first.notes,
                   resized=list(dict.fromkeys(line for r in reports for line in r.resized)), ranks=len(reports))

    def resize_note(self) -> str | None:
        """The one line saying which maps the loader resizes (auxiliary-map size rule), or None."""
        if not self.resized:
            return None
        return (f"{len(self.resized)} auxiliary map(s) have another size than their image with its aspect ratio: "
                f"resized with nearest neighbour, e.g. {self.resized[0]}")

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
        shared = f", shared by {self.ranks} processes" if self.ranks > 1 else ""
        head = (f"{self.name} at {self.root}: {self.pairs} pairs, {self.files} files checked "
                f"(level '{self.level}'{shared})")
        notes = self.notes + ([self.resize_note()] if self.resized else [])
        if self.ok:
            return "\n".join([f"{head}: OK"] + notes)
        missing = sum(p.missing for p in self.problems)
        lines = [f"{head}: {missing} missing, {len(self.problems) - missing} unreadable", *notes, "per folder:"]
        for folder, counts in self.per_folder().items():
            lines.append(f"  {folder}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
        lines.append("files:")
        for problem in sorted(self.problems, key=lambda p: str(p.path)):
            what = "missing" if problem.missing else f"unreadable: {problem.problem}"
            lines.append(f"  {problem.path}  ({what})")
        return "\n".join(lines)


class DatasetFilesError(RuntimeError):
    """A dataset with missing or unreadable files; the message is the full report."""

    def __init__(self, report: FileReport):
        self.report = report
        super().__init__(report.format())
