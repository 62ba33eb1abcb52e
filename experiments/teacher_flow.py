"""Experiment-only: seed correspondence into attention with a supervised flow term toward a teacher flow.

A pretrained model (SD) starts Leffa's fine-tune with attention that already points roughly at the right
reference tokens; a randomly initialised tiny model has none, and the Leffa loss alone cannot create it
(docs/experiments.md). ``TeacherSeededModule`` stands in for that pretraining: its training steps add,
to the diffusion loss, a term pulling every Leffa layer's attention flow toward a *teacher* flow, the
ground truth with a known systematic error (a constant shift of a few pixels). The resulting initialisation
is approximately, not exactly, right. Nothing here is used by the training framework.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from leffa_pl.losses.attention_flow import attention_flow, token_grid
from leffa_pl.metrics.flow_error import upsample_flow
from leffa_pl.model.reference_attention import AttentionRecord
from leffa_pl.training.leffa_module import DiffusionInputs, LeffaModule


def shift_vector(size_px: float, seed: int) -> tuple[float, float]:
    """A shift of ``size_px`` pixels in a direction drawn from ``seed`` (x, y in pixels)."""
    angle = 2 * math.pi * torch.rand(1, generator=torch.Generator().manual_seed(seed)).item()
    return size_px * math.cos(angle), size_px * math.sin(angle)


def shifted_flow(flow: torch.Tensor, shift_px: tuple[float, float]) -> torch.Tensor:
    """Flow [B, 2, H, W] (grid_sample coordinates of an H x W reference) moved by ``shift_px`` = (dx, dy)
    pixels and clamped to the image; undefined (NaN) pixels stay undefined."""
    height, width = flow.shape[-2:]
    offset = torch.tensor([2 * shift_px[0] / width, 2 * shift_px[1] / height], device=flow.device)
    return (flow + offset.view(1, 2, 1, 1)).clamp(-1, 1)


def layer_flows(records: Sequence[AttentionRecord], select_layers, image_size: tuple[int, int],
                reference_size: tuple[int, int], tau: float) -> list[torch.Tensor]:
    """The attention flow [B, h, w, 2] of every layer ``select_layers`` keeps, as the Leffa loss computes it."""
    flows = []
    for record, grid in select_layers(records, image_size):
        flow = attention_flow(record.query.float(), record.key.float(), record.scale / tau,
                              token_grid(record.key.shape[2], reference_size))
        flows.append(flow.reshape(-1, *grid, 2))
    return flows


def flow_supervision_loss(flows: Sequence[torch.Tensor], teacher: torch.Tensor) -> torch.Tensor:
    """Mean over layers and samples of the smooth-L1 end-point distance (pixels, beta 1) between each
    upsampled flow and ``teacher`` [B, 2, H, W], over the pixels where the teacher is defined."""
    height, width = teacher.shape[-2:]
    to_pixels = torch.tensor([width / 2, height / 2], device=teacher.device).view(1, 2, 1, 1)
    valid = ~torch.isnan(teacher).any(dim=1)  # [B, H, W]
    target = torch.nan_to_num(teacher)
    per_layer = []
    for flow in flows:
        distance = (upsample_flow(flow, (height, width)) - target) * to_pixels
        error = F.smooth_l1_loss(distance, torch.zeros_like(distance), reduction="none", beta=1.0).sum(dim=1)
        per_sample = torch.where(valid, error, 0).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1)
        per_layer.append(per_sample.mean())
    return torch.stack(per_layer).mean()


class TeacherSeededModule(LeffaModule):
    """``LeffaModule`` whose training loss adds ``teacher_weight`` x the flow supervision toward the batch's
    ground-truth flow shifted by ``teacher_shift`` pixels (samples whose reference was dropped excluded), at
    the Leffa loss's layers and temperature. Needs batches with ``flow`` (the synthetic data); trains without
    the Leffa loss and image logging (the experiment's init stage)."""

    def __init__(self, teacher_shift: tuple[float, float], teacher_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.teacher_shift = tuple(teacher_shift)
        self.teacher_weight = teacher_weight

    def training_losses(self, batch: Mapping[str, Any], inputs: DiffusionInputs, log_images: bool
                        ) -> tuple[dict[str, torch.Tensor], None]:
        if "flow" not in batch:
            raise KeyError("TeacherSeededModule needs ground-truth flow in the batch (synthetic data)")
        if self.leffa_loss_enabled or log_images:
            raise ValueError("TeacherSeededModule trains without the Leffa loss and image logging")
        records: list[AttentionRecord] = []
        losses = {"mse": self.diffusion_loss(inputs, records)}
        index = inputs.keep.nonzero().squeeze(1)
        if len(index) > 0:
            flows = layer_flows(records, self.leffa_loss.select_layers, tuple(batch["person"].shape[-2:]),
                                tuple(batch["reference"].shape[-2:]), self.leffa_loss.tau)
            teacher = shifted_flow(batch["flow"][index].float(), self.teacher_shift)
            losses["teacher_flow"] = self.teacher_weight * flow_supervision_loss([flow[index] for flow in flows],
                                                                                 teacher)
        return losses, None
