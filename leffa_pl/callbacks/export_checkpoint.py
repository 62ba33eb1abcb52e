"""Export the trained model in the released Leffa layout when training ends."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only


class ExportReleasedCheckpoint(pl.Callback):
    """Writes ``leffa.pth`` and ``leffa.safetensors`` (keys ``vae.``, ``unet_encoder.``, ``unet.``).

    Place it after ``EMAWeightAveraging`` in the callback list: that callback swaps the averaged
    weights into the model at the end of training, so the export holds the EMA weights.
    """

    def __init__(self, dirpath: str | None = None, formats: tuple[str, ...] = (".pth", ".safetensors")):
        self.dirpath = dirpath
        self.formats = formats

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "export")
        for suffix in self.formats:
            path = pl_module.model.export(folder / f"leffa{suffix}")
            rank_zero_info(f"exported the model in the released layout: {path}")
