"""The run folder of ``leffa-pl fit``: checks made before any work starts.

A run writes its checkpoints, export and TensorBoard logs under ``run.dir`` (the trainer configs place every
path there by interpolation). A second run into a folder holding another run's files would overwrite its
export and leave ``last.ckpt`` pointing at the old run, so a non-empty run folder is refused unless the run
resumes (``--ckpt_path``) or is told to overwrite (``--run.overwrite=true``, which empties it first).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from leffa_pl.atomic_write import remove_stale_temporaries, unwritable_reason
from leffa_pl.model.provenance import RECORD_KEY, TASKS, Provenance

LIGHTNING_KEYS = ("pytorch-lightning_version", "state_dict")
CLI_HYPERPARAMETER_KEYS = {"_instantiator", "_class_path"}  # LightningCLI's own: how it builds the module


class RunFolderError(ValueError):
    """A run folder, output folder or resume checkpoint that cannot be used, with the fix in the message."""


def prepare_run_folder(run_dir: str | os.PathLike, resuming: bool, overwrite: bool) -> None:
    """Refuse another run's folder (see the module docstring); with ``overwrite``, empty it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()) or resuming:
        return
    if not overwrite:
        held = ", ".join(sorted(path.name for path in run_dir.iterdir())[:6])
        raise RunFolderError(
            f"{run_dir}: the run folder already holds a run ({held}). Resume it with --run.resume=true (make: "
            f"RESUME=1) or --ckpt_path=<checkpoint>, give another folder with --run.dir=..., or "
            "replace it with --run.overwrite=true (deletes its contents)")
    rank_zero_info(f"--run.overwrite: removing the previous run in {run_dir}")
    for path in run_dir.iterdir():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space of the disk that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(run_dir: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse a run whose files (``needed`` bytes in all, ``what`` they are) do not fit the disk: its free space
    plus what the run folder holds already (a resumed run's files are part of ``needed``)."""
    run_dir = Path(run_dir)
    held = sum(p.lstat().st_size for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink()) \
        if run_dir.is_dir() else 0
    available = free_bytes(run_dir) + held
    if needed > available:
        gib = 2**30
        raise RunFolderError(
            f"{run_dir}: the run needs up to {needed / gib:.1f} GiB on disk ({what}) and {available / gib:.1f} GiB "
            f"is available (free {(available - held) / gib:.1f} GiB + {held / gib:.1f} GiB the run folder holds). "
            "Free space, give a larger disk with --run.dir=..., keep fewer checkpoints (RetainedCheckpoints keep), "
            "or start anyway with --run.ignore_free_space=true")


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Fail now if the ``what`` folder cannot be written, not at the first checkpoint or export."""
    reason = unwritable_reason(folder)
    if reason is not None:
        raise RunFolderError(f"{folder}: the {what} folder cannot be written ({reason}); give a writable folder")


def remove_stale_checkpoint_temporaries(folder: str | os.PathLike) -> None:
    """Temporaries of checkpoint writes a crash interrupted (as large as a checkpoint)."""
    for path in remove_stale_temporaries(folder, "*.ckpt") if Path(folder).is_dir() else []:
        rank_zero_info(f"removed {path}: a checkpoint write that never finished")


def check_resume_checkpoint(path: str | os.PathLike, model_settings: Collection[str],
                            data_module: str | None = None) -> None:
    """``--ckpt_path`` must be a Lightning checkpoint of a training run whose ``hyper_parameters`` (which
    LightningCLI applies as model settings) are all in ``model_settings``, and that trained on ``data_module``
    (a class path) where it records one; say what is wrong otherwise.

    Reads the file memory-mapped and weights-only: only the pickle is parsed, the tensors are not read.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: no such checkpoint file (--ckpt_path)")
    advice = (f"--ckpt_path resumes a Lightning training checkpoint (<run>/checkpoints/last.ckpt). To start a new "
              f"run from the weights of {path}, give it as --model.init_checkpoint={path} instead")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch.load raises many types on other files; all mean the same here
        if path.suffix == ".safetensors":
            raise RunFolderError(f"{path}: a safetensors weights file, not a training checkpoint. {advice}") from None
        raise RunFolderError(f"{path}: not a checkpoint that torch.load reads weights-only ({error}). "
                             f"--ckpt_path takes a Lightning training checkpoint (<run>/checkpoints/last.ckpt)"
                             ) from None
    if not isinstance(content, Mapping) or not all(key in content for key in LIGHTNING_KEYS):
        if isinstance(content, Mapping) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
            raise RunFolderError(f"{path}: a weights file (flat state dict, as the export and the released "
                                 f"checkpoints are), not a training checkpoint. {advice}")
        raise RunFolderError(f"{path}: not a Lightning training checkpoint (no {' / '.join(LIGHTNING_KEYS)})."
                             f" {advice}")
    unknown = sorted(set(content.get("hyper_parameters") or {}) - set(model_settings) - CLI_HYPERPARAMETER_KEYS)
    if unknown:
        raise RunFolderError(f"{path}: its hyper_parameters hold model settings that LeffaModule does not take "
                             f"({', '.join(unknown)}), which LightningCLI would apply on resume: a checkpoint of "
                             "another version or model class. Resume it with the leffa_pl version that wrote it")
    recorded = Provenance.from_mapping(content.get(RECORD_KEY))
    if data_module is not None and recorded is not None and recorded.data_module != data_module:
        raise RunFolderError(f"{path}: trained on {recorded.data_module} ({TASKS[recorded.task]}), resumed here with "
                             f"{data_module}: a resume continues the same training. Give the run's data config, or "
                             f"start a new run from its weights with --model.init_checkpoint={path}")
