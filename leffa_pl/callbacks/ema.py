"""EMA of the weights whose frozen parts stay bit-identical (Lightning's ``EMAWeightAveraging``, lerp update).

Lightning's EMA computes ``decay * ema + (1 - decay) * weight``, which rounds a weight that never changes
(the frozen VAE, cross-attention, the reference UNet's tail) to a neighbouring float, so the exported model
would not hold the input's frozen weights. ``torch.lerp(ema, weight, 1 - decay)`` is the same average and
returns ``ema`` exactly when ``weight == ema``.

Not under FSDP: the callback keeps a full copy of the module and averages its parameters, which FSDP holds
as shards, so ``setup`` refuses that combination (``configs/trainer/gpu_fsdp.yaml`` trains without EMA).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.strategies import FSDPStrategy


def _lerp_ema(decay: float):
    @torch.no_grad()
    def update(ema: torch.Tensor, weight: torch.Tensor, num_averaged) -> torch.Tensor:
        return torch.lerp(ema, weight.to(ema.dtype), 1 - decay)

    return update


class LeffaEMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` (same arguments) with an update that keeps unchanged weights bit-identical."""

    def __init__(self, decay: float = 0.9999, **kwargs):
        super().__init__(decay=decay, **kwargs)
        self._kwargs["avg_fn"] = _lerp_ema(decay)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError(f"LeffaEMA does not work under {type(trainer.strategy).__name__}: it averages full "
                             "parameters and FSDP holds shards. Remove LeffaEMA from trainer.callbacks "
                             "(configs/trainer/gpu_fsdp.yaml has none) or train under ddp (configs/trainer/gpu.yaml)")
        super().setup(trainer, pl_module, stage)
