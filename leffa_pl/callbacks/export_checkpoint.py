"""Export the trained model in the released Leffa layout when training ends (and a LoRA run's adapter alone).

All or nothing: every format is written to a temporary file first and renamed only when all were written, then
``export.json`` records the task, the data module and each file's SHA-256 (written last: an export without it
is incomplete). A run resumed after it finished (nothing left to train) exports again when the export is
incomplete, so a failed export (disk full) is redone by rerunning the documented resume command.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from leffa_pl.atomic_write import atomic_write
from leffa_pl.model.checkpoint import SAFETENSORS_SUFFIX, file_sha256, save_state_dict
from leffa_pl.model.lora import has_lora, merged_state_dict, write_adapter
from leffa_pl.model.provenance import EXPORT_RECORD, METADATA_PREFIX, Provenance

MODEL_PREFIX = "model."  # LeffaModule.model in the module's state dict
ADAPTER_FILE = "leffa_lora.safetensors"


class ExportError(RuntimeError):
    """An export that could not be written; no export file was replaced."""



def write_export(weights: Mapping[str, torch.Tensor], folder: Path, formats: Sequence[str],
                 provenance: Provenance | None) -> list[Path]:
    """``leffa<suffix>`` for each format, all or none (see the module docstring), then ``export.json``."""
    record = folder / EXPORT_RECORD
    paths = [folder / f"leffa{suffix}" for suffix in formats]
    metadata = {f"{METADATA_PREFIX}{key}": value for key, value in (provenance.as_dict() if provenance else {}).items()}
    current = paths[0]
    try:
        record.unlink(missing_ok=True)  # incomplete from here until the record is written again
        with ExitStack() as stack:  # the renames happen on leaving, only when every file was written
            temporaries = [stack.enter_context(atomic_write(path)) for path in paths]
            for current, temporary in zip(paths, temporaries):
                save_state_dict(weights, temporary, current.suffix,
                                metadata if current.suffix == SAFETENSORS_SUFFIX else None)
        current = record
        content = {**(provenance.as_dict() if provenance else {}), "files": {p.name: file_sha256(p) for p in paths}}
        with atomic_write(record) as temporary:
            temporary.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    except Exception as error:  # OSError, safetensors' own error on a full disk: all mean the same here
        raise ExportError(f"{current}: the export could not be written ({error}); no export file was replaced. "
                          "Free space and rerun the resume command (--ckpt_path=<run>/checkpoints/last.ckpt): it "
                          "exports again") from error
    return paths


def export_complete(folder: Path, formats: Sequence[str]) -> bool:
    """Whether ``folder`` holds a finished export of every format (``export.json`` lists them all)."""
    try:
        listed = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8")).get("files", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    return all(f"leffa{suffix}" in listed and (folder / f"leffa{suffix}").is_file() for suffix in formats)


class ExportReleasedCheckpoint(pl.Callback):
    """Writes ``leffa.pth`` and ``leffa.safetensors`` (keys ``vae.``, ``unet_encoder.``, ``unet.``). A LoRA run
    (``model.trainable=lora``) writes there the merged weights (base + scaled adapter), and the adapter alone as
    ``leffa_lora.safetensors`` (diffusers' LoRA layout: ``leffa-pl-tryon --lora``, ``leffa_pl.model.lora``).

    Place it after ``EMAWeightAveraging`` in the callback list: that callback swaps the averaged
    weights into the model at the end of training, so the export holds the EMA weights.
    """

    def __init__(self, dirpath: str | None = None, formats: tuple[str, ...] = (".pth", ".safetensors")):
        self.dirpath = dirpath
        self.formats = formats

    def folder(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "export")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.export(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run that had finished skips training, and with it on_train_end.
        missing = trainer.strategy.broadcast(not export_complete(self.folder(trainer), self.formats))
        if missing and trainer.fit_loop.done:
            rank_zero_info("the export is missing or incomplete: exporting the finished run's model")
            self.export(trainer, pl_module)

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = self.folder(trainer)
        if has_lora(pl_module.model):  # LoRA trains under DDP only (sharding.py): the module holds every weight
            if not trainer.is_global_zero:
                return
            weights = merged_state_dict(pl_module.model)
            rank_zero_info(f"exported the LoRA adapter: {write_adapter(pl_module.model, folder / ADAPTER_FILE)}")
        else:
            # Every rank takes part: under FSDP the module holds shards and gathering the full weights (onto rank
            # 0) is a collective; under DDP this is the module's own state dict.
            state = trainer.strategy.lightning_module_state_dict()
            if not trainer.is_global_zero:
                return
            weights = {name.removeprefix(MODEL_PREFIX): t for name, t in state.items()
                       if name.startswith(MODEL_PREFIX)}
        for path in write_export(weights, folder, self.formats, Provenance.of(trainer.datamodule)):
            rank_zero_info(f"exported the model in the released layout: {path}")
