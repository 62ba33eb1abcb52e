"""End-point error of an attention flow against a ground-truth flow (synthetic data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, h, w, 2] normalised flow -> [B, 2, H, W], bilinear, clamped to [-1, 1] (as the Leffa loss)."""
    return F.interpolate(flow.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False).clamp(-1, 1)


def end_point_error(flow: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
    """Mean EPE in pixels per sample over the pixels where ``ground_truth`` is defined (not NaN).

    ``flow`` is an attention flow [B, h, w, 2] (upsampled as in the loss); ``ground_truth`` is
    [B, 2, H, W]; both in grid_sample coordinates of an H x W reference image. Samples without any
    defined pixel give NaN.
    """
    height, width = ground_truth.shape[-2:]
    flow = upsample_flow(flow, (height, width))
    to_pixels = torch.tensor([width / 2, height / 2], device=flow.device).view(1, 2, 1, 1)
    error = ((flow.float() - ground_truth.float()) * to_pixels).norm(dim=1)  # [B, H, W]
    valid = ~torch.isnan(ground_truth).any(dim=1)
    total = torch.where(valid, error, torch.zeros_like(error)).sum(dim=(1, 2))
    return total / valid.sum(dim=(1, 2))
