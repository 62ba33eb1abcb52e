"""EMA of the trainable weights only, whose unchanged parts stay bit-identical (Lightning's ``EMAWeightAveraging``).

Lightning's callback keeps an ``AveragedModel`` of the whole module (the frozen VAE, cross-attention and the
reference UNet's tail included) and saves all of it in every checkpoint. Frozen weights never change, so their
average is the weights themselves: this callback averages only the trainable parameters (a shadow), which is
what a checkpoint holds under ``checkpoint["ema"]`` beside the module's own weights in ``state_dict``.

Lightning's EMA computes ``decay * ema + (1 - decay) * weight``, which rounds a weight that never changes to a
neighbouring float; ``torch.lerp(ema, weight, 1 - decay)`` is the same average and returns ``ema`` exactly when
``weight == ema``.

Not under FSDP: the shadow is of full parameters, which FSDP holds as shards, so ``setup`` refuses that
combination (``configs/trainer/gpu_fsdp.yaml`` trains without EMA).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim.swa_utils import AveragedModel

from leffa_pl.model.checkpoint import EMA_KEY


def _lerp_ema(decay: float):
    @torch.no_grad()
    def update(ema: torch.Tensor, weight: torch.Tensor, num_averaged) -> torch.Tensor:
        return torch.lerp(ema, weight.to(ema.dtype), 1 - decay)

    return update


class LeffaEMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` (same arguments but ``use_buffers``) over the trainable parameters only."""

    def __init__(self, decay: float = 0.9999, **kwargs):
        super().__init__(decay=decay, use_buffers=False, **kwargs)
        self._kwargs["avg_fn"] = _lerp_ema(decay)
        self._names: list[str] = []
        self._trainable = nn.ParameterList()  # the module's own trainable parameters (not copies)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError(f"LeffaEMA does not work under {type(trainer.strategy).__name__}: it averages full "
                             "parameters and FSDP holds shards. Remove LeffaEMA from trainer.callbacks "
                             "(configs/trainer/gpu_fsdp.yaml has none) or train under ddp (configs/trainer/gpu.yaml)")
        if stage != "fit":
            return
        named = [(name, p) for name, p in pl_module.named_parameters() if p.requires_grad]
        self._names = [name for name, _ in named]
        self._trainable = nn.ParameterList([p for _, p in named])
        self._average_model = AveragedModel(self._trainable, device=self._device or pl_module.device,
                                            use_buffers=False, **self._kwargs)

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The averages by parameter name (as in the module's state dict)."""
        return {name: p.detach() for name, p in zip(self._names, self._average_model.module.parameters())}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self._average_model.update_parameters(self._trainable)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > self._latest_update_epoch and self.should_update(epoch_idx=trainer.current_epoch):
            self._average_model.update_parameters(self._trainable)
            self._latest_update_epoch = trainer.current_epoch

    @torch.no_grad()
    def _swap_models(self, pl_module: pl.LightningModule) -> None:
        for average, current in zip(self._average_model.module.parameters(), self._trainable, strict=True):
            kept = current.detach().clone()
            current.copy_(average)
            average.copy_(kept)

    @torch.no_grad()
    def _copy_average_to_current(self, pl_module: pl.LightningModule) -> None:
        for average, current in zip(self._average_model.module.parameters(), self._trainable, strict=True):
            current.copy_(average)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self._average_model is not None:
            checkpoint[EMA_KEY] = {"shadow": self.shadow, "n_averaged": self._average_model.n_averaged.detach()}

    @torch.no_grad()
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return  # not fitting: the module's weights are the checkpoint's state_dict
        if EMA_KEY in checkpoint:
            shadow = checkpoint[EMA_KEY]["shadow"]
            if set(shadow) != set(self._names):
                missing, extra = sorted(set(self._names) - set(shadow)), sorted(set(shadow) - set(self._names))
                raise ValueError(f"the checkpoint's EMA does not match the trainable parameters (missing "
                                 f"{missing[:3]}, unexpected {extra[:3]}): was it trained with another "
                                 "model.trainable setting?")
            n_averaged = checkpoint[EMA_KEY]["n_averaged"]
        elif "current_model_state" in checkpoint:  # Lightning's layout (earlier LeffaEMA): the average in state_dict
            shadow, n_averaged = checkpoint["state_dict"], checkpoint["averaging_state"]["n_averaged"]
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            rank_zero_warn("the checkpoint has no EMA: the average starts from its weights")
            shadow, n_averaged = checkpoint["state_dict"], torch.tensor(1)
        for name, average in zip(self._names, self._average_model.module.parameters()):
            average.copy_(shadow[name])
        self._average_model.n_averaged.copy_(n_averaged)
