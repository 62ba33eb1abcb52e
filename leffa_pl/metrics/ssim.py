"""Per-image SSIM in the variants of the literature: scikit-image's (border left out) and torchmetrics' (border in).

The try-on evaluator (franciszzj/VtonEval) calls torchmetrics' SSIM, whose mean (torchmetrics >= 1.4.2) also
covers the 5-pixel border, filtered on reflect padding: ``ssim_vtoneval`` is that call. torchmetrics has no
sample-covariance option and filters with a dense 2-D window (51x51 for the uniform variant), so the
border-free variants are computed here with kornia's separable filters and cropped to the valid region, as
``skimage.metrics.structural_similarity`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from kornia.filters import filter2d_separable, get_gaussian_kernel1d
from torchmetrics.functional.image import structural_similarity_index_measure

K1, K2 = 0.01, 0.03


@dataclass(frozen=True)
class SSIMVariant:
    """One SSIM setting; ``equivalent`` is the library call it reproduces. ``border``: ``cropped`` leaves out
    the pixels whose window leaves the image (scikit-image), ``reflect`` filters them on reflect padding and
    includes them in the mean (torchmetrics >= 1.4.2)."""

    name: str
    window: Literal["gaussian", "uniform"]
    size: int
    sigma: float | None
    sample_covariance: bool
    border: Literal["cropped", "reflect"]
    equivalent: str


SSIM_VTONEVAL = SSIMVariant(
    name="ssim_vtoneval", window="gaussian", size=11, sigma=1.5, sample_covariance=False, border="reflect",
    equivalent="torchmetrics StructuralSimilarityIndexMeasure(data_range=1.0) on images in [0, 1], border "
               "included (torchmetrics >= 1.4.2), as franciszzj/VtonEval's eval.py calls it (Leffa's try-on numbers)")
SSIM_GAUSSIAN = SSIMVariant(
    name="ssim_gaussian", window="gaussian", size=11, sigma=1.5, sample_covariance=False, border="cropped",
    equivalent="structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, "
               "data_range=255, channel_axis=0) on uint8 images (CFLD's ssim_256 with a fixed data range; also "
               "torchmetrics' SSIM(data_range=1) before 1.4.2, which left the border out)")
SSIM_UNIFORM51 = SSIMVariant(
    name="ssim_uniform51", window="uniform", size=51, sigma=None, sample_covariance=True, border="cropped",
    equivalent="structural_similarity(win_size=51, data_range=1, channel_axis=0) on images in [0, 1] "
               "(CFLD's ssim)")
SSIM_VARIANTS = {variant.name: variant for variant in (SSIM_VTONEVAL, SSIM_GAUSSIAN, SSIM_UNIFORM51)}


def _window(variant: SSIMVariant, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if variant.window == "gaussian":
        return get_gaussian_kernel1d(variant.size, variant.sigma, dtype=dtype, device=device)
    return torch.full((1, variant.size), 1.0 / variant.size, dtype=dtype, device=device)


def ssim_per_image(preds: torch.Tensor, target: torch.Tensor, variant: SSIMVariant) -> torch.Tensor:
    """SSIM of each image pair ``[B, C, H, W]`` with values in [0, 1] (data range 1); returns ``[B]``.

    Border-free variants: float32 on centred values (the variances are differences of moments: centring keeps
    their digits); float64 convolutions are several times slower on CPU.
    """
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(f"SSIM needs two [B, C, H, W] batches of one shape, got {tuple(preds.shape)} "
                         f"and {tuple(target.shape)}")
    height, width = preds.shape[-2:]
    if min(height, width) < variant.size:
        raise ValueError(f"{variant.name}: the {variant.size}-pixel window exceeds the {height}x{width} images")
    if variant.border == "reflect":
        return structural_similarity_index_measure(
            preds.float(), target.float(), gaussian_kernel=variant.window == "gaussian", sigma=variant.sigma,
            kernel_size=variant.size, data_range=1.0, reduction="none")
    x, y = preds.float() - 0.5, target.float() - 0.5
    window = _window(variant, x.dtype, x.device)
    moments = filter2d_separable(torch.cat([x, y, x * x, y * y, x * y]), window, window, padding="valid")
    mean_x, mean_y, xx, yy, xy = moments.chunk(5)
    # scikit-image's use_sample_covariance rescales the (co)variances by N / (N - 1)
    samples = variant.size * variant.size
    cov_norm = samples / (samples - 1) if variant.sample_covariance else 1.0
    var_x = cov_norm * (xx - mean_x * mean_x)
    var_y = cov_norm * (yy - mean_y * mean_y)
    cov_xy = cov_norm * (xy - mean_x * mean_y)
    mu_x, mu_y = mean_x + 0.5, mean_y + 0.5
    c1, c2 = K1 ** 2, K2 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)
