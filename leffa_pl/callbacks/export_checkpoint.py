"""Export the trained model in the released Leffa layout when training ends (and a LoRA run's adapter alone)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from leffa_pl.model.checkpoint import write_state_dict
from leffa_pl.model.lora import has_lora, merged_state_dict, write_adapter

MODEL_PREFIX = "model."  # LeffaModule.model in the module's state dict
ADAPTER_FILE = "leffa_lora.safetensors"


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

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "export")
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
        for suffix in self.formats:
            path = write_state_dict(weights, folder / f"leffa{suffix}")
            rank_zero_info(f"exported the model in the released layout: {path}")
