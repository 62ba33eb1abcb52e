"""What ``LeffaModule``'s steps return: the one seam its callbacks read (image logger, validation scores)."""

from __future__ import annotations

from typing import TypedDict

import torch

from leffa_pl.losses.leffa_loss import LeffaLossOutput


class TrainingStepOutput(TypedDict):
    """Lightning hands this dict (``loss`` detached) to ``on_train_batch_end``."""

    loss: torch.Tensor  # the optimised total
    leffa: LeffaLossOutput | None  # per-layer flows; None when neither the Leffa loss nor images need them
    log_images: bool  # an image step: ``leffa`` keeps the warped references


class ValidationStepOutput(TypedDict):
    generated: torch.Tensor  # [B, 3, H, W] in [-1, 1], the validation sampler's images of the batch
