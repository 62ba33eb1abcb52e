"""What a checkpoint or export was trained for: its task (try-on or pose transfer) and data module class.

Lightning checkpoints carry it under ``RECORD_KEY`` (``LeffaModule.on_save_checkpoint``); ``.safetensors``
exports in their metadata; a ``.pth`` export in ``EXPORT_RECORD`` beside it (the export's manifest, written
last). Files without a record (the authors' releases, older runs) are accepted with their task unknown.
Loading one for the other task is refused naming both, unless overridden.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open

from leffa_pl.model.checkpoint import CheckpointError

TASKS = {"tryon": "virtual try-on", "pose": "pose transfer"}
RECORD_KEY = "leffa_pl"  # in a Lightning checkpoint's top-level dict
METADATA_PREFIX = "leffa_pl."  # safetensors metadata keys
EXPORT_RECORD = "export.json"


class TaskMismatchError(CheckpointError):
    """A checkpoint of one task (or data module) used for another."""


@dataclass(frozen=True)
class Provenance:
    task: str
    data_module: str  # class path, e.g. leffa_pl.data.datamodule.VitonHDDataModule

    @classmethod
    def of(cls, datamodule: object) -> Provenance | None:
        """The provenance of training on ``datamodule`` (None for one without a task)."""
        task = getattr(datamodule, "task", "")
        kind = type(datamodule)
        return cls(task, f"{kind.__module__}.{kind.__qualname__}") if task in TASKS else None

    @classmethod
    def from_mapping(cls, record: Mapping | None) -> Provenance | None:
        if not isinstance(record, Mapping) or record.get("task") not in TASKS:
            return None
        return cls(str(record["task"]), str(record.get("data_module", "?")))

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def describe(self) -> str:
        return f"{TASKS[self.task]} ({self.data_module.rsplit('.', 1)[-1]})"


def read_provenance(path: str | os.PathLike, checkpoint: Mapping | None = None) -> Provenance | None:
    """The record of a ``.ckpt`` (``checkpoint``: its already loaded dict), ``.safetensors`` or exported ``.pth``;
    None when it has none."""
    path = Path(path)
    if path.suffix == ".ckpt":
        if checkpoint is None:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return Provenance.from_mapping(checkpoint.get(RECORD_KEY))
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        return Provenance.from_mapping({key.removeprefix(METADATA_PREFIX): value for key, value in metadata.items()})
    record = path.parent / EXPORT_RECORD
    if record.is_file():
        try:
            content = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if path.name in content.get("files", {}):
            return Provenance.from_mapping(content)
    return None


def check_task(path: str | os.PathLike, provenance: Provenance | None, task: str, allow_other_task: bool,
               override: str) -> str:
    """Refuse a file trained for another task than ``task``, naming both and ``override`` (the flag that
    accepts it); returns a phrase for the model's description."""
    if provenance is None:
        return "task not recorded"
    if provenance.task != task and not allow_other_task:
        raise TaskMismatchError(f"{path}: trained for {provenance.describe()}, used here for {TASKS[task]}; give "
                                f"a {TASKS[task]} checkpoint (or {override} to use it anyway)")
    return f"trained for {provenance.describe()}"
