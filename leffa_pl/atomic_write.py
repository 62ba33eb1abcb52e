"""Atomic file writes: write a temporary file beside the target, then rename it over the target.

A file that exists is therefore complete (the temporary is fsynced before the rename, the folder after it, so
this holds after a power loss too): an interrupted or failed write leaves the old file (or none),
plus at most a hidden temporary ``.<name>.<pid>.tmp``, which the next run removes
(``remove_stale_temporaries``). Files get the permissions a plain ``open`` gives them (0666 less the umask),
whatever the writer used (safetensors and ``mkstemp`` create 0600).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMPORARY_SUFFIX = ".tmp"
# Longest target name whose temporary ".<name>.<pid>.tmp" still fits the usual 255-byte file-name limit
# (Linux pids have at most 7 digits).
MAX_NAME_BYTES = 255 - len(".") - len(".4194304") - len(TEMPORARY_SUFFIX)


def temporary_path(path: Path) -> Path:
    """Where ``atomic_write`` writes ``path`` first: hidden, same folder (so the rename is atomic), one per
    process (DDP ranks never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yields the temporary path to write to; renamed over ``path`` when the block succeeds, removed when
    it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        _fsync(temporary)  # the data is on disk before the name points at it (else a crash can leave it empty)
        os.replace(temporary, path)
        _fsync(path.parent)  # and the rename itself
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_stale_temporaries(folder: str | os.PathLike, name_pattern: str = "*") -> list[Path]:
    """Remove the temporaries of interrupted writes of files matching ``name_pattern`` in ``folder`` (leffa-pl-prepare
    sweeps its whole output this way at its start); returns
    them. Call it when nothing else writes there (a run's start, before its writers start)."""
    stale = sorted(Path(folder).glob(f".{name_pattern}.*{TEMPORARY_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into ``folder`` (created if missing), or None: found by writing one now,
    rather than at the first checkpoint, export or image."""
    folder = Path(folder)
    probe = folder / ".write-check"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(probe) as temporary:
            temporary.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return error.strerror or str(error)
    return None
