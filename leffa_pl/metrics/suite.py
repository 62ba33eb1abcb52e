"""All image metrics of one evaluation, as torchmetrics metrics (so they also sync across DDP ranks).

Inputs are uint8 images ``[B, 3, H, W]``: generated images quantised like the PNGs they become, and the
ground truth at the same resolution. Per-image scores are averaged over every image (no batch remainder
is dropped); the counts come back with the results.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric, SumMetric
from torchmetrics.image import PeakSignalNoiseRatio
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from leffa_pl.metrics.real_statistics import RealStatistics
from leffa_pl.metrics.ssim import SSIM_VARIANTS, ssim_per_image

SET_METRICS = ("fid", "kid")
PAIRED_METRICS = ("ssim_vtoneval", "ssim_gaussian", "ssim_uniform51", "lpips", "psnr")
METRICS = SET_METRICS + PAIRED_METRICS


class _PrecomputedFeatures(nn.Module):
    """Lets FID and KID share one feature pass: torchmetrics would run an extractor inside each metric."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@dataclass
class MetricResults:
    """Metric values, the metrics that could not be computed (with reason and remedy), and the counts."""

    values: dict[str, float]
    not_computed: dict[str, str]
    n_generated: int
    n_paired: int
    n_real: int
    kid_subset_size: int | None = None


def quantize_images(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Float images to uint8 as they are written to PNG (clamped, rounded to the nearest level)."""
    low, high = value_range
    return ((images.float() - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)


def _is_secondary_rank() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def _check_images(images: torch.Tensor, name: str) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} images: expected uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")


class MetricSuite(nn.Module):
    """FID, KID, SSIM (three variants, `leffa_pl.metrics.ssim`), LPIPS and PSNR of generated images.

    ``metrics`` names what to compute (from ``METRICS``). FID/KID need ``fid_features`` (an extractor from
    ``leffa_pl.metrics.features`` or any module mapping uint8 images to ``[B, D]``) and the real-set
    statistics (``set_real_statistics``); LPIPS needs ``lpips_network``. A metric listed in ``unavailable``
    (name -> reason and remedy) is reported as not computed and needs nothing.
    """

    def __init__(self, metrics: Sequence[str], fid_features: nn.Module | None = None,
                 lpips_network: nn.Module | None = None, unavailable: Mapping[str, str] | None = None,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> None:
        super().__init__()
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; expected names from {METRICS}")
        self.unavailable = {name: reason for name, reason in (unavailable or {}).items() if name in metrics}
        active = [name for name in metrics if name not in self.unavailable]
        if any(name in SET_METRICS for name in active) and fid_features is None:
            raise ValueError("FID/KID need a feature extractor (or a reason why not in `unavailable`)")
        if "lpips" in active and lpips_network is None:
            raise ValueError("LPIPS needs a network (or a reason why not in `unavailable`)")
        self.metric_names = tuple(metrics)
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.n_real = 0
        self.fid_features = fid_features if any(name in SET_METRICS for name in active) else None
        num_features = getattr(fid_features, "num_features", None)
        if self.fid_features is not None and not isinstance(num_features, int):
            raise ValueError("the FID feature extractor needs an integer `num_features` attribute")
        self.fid = (FrechetInceptionDistance(feature=_PrecomputedFeatures(num_features), reset_real_features=False)
                    if "fid" in active else None)
        self.kid = (KernelInceptionDistance(feature=_PrecomputedFeatures(num_features), subsets=kid_subsets,
                                            subset_size=kid_subset_size, reset_real_features=False)
                    if "kid" in active else None)
        self.ssim = nn.ModuleDict({name: self._mean() for name in active if name in SSIM_VARIANTS})
        self.lpips_network = lpips_network if "lpips" in active else None
        self.lpips = self._mean() if "lpips" in active else None
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)) if "psnr" in active else None
        self.n_generated = SumMetric()
        self.n_paired = SumMetric()

    @staticmethod
    def _mean() -> MeanMetric:
        return MeanMetric(nan_strategy="error").set_dtype(torch.float64)

    @property
    def paired(self) -> bool:
        """Whether ``update`` needs ground truth."""
        return bool(self.ssim) or self.lpips is not None or self.psnr is not None

    def set_real_statistics(self, statistics: RealStatistics) -> None:
        """Use a real set's cached statistics. Under DDP only rank 0 holds them: FID/KID states are summed
        (or concatenated) across ranks when computed."""
        if self.kid is not None and statistics.features is None:
            raise ValueError("KID needs the real features; compute the statistics with keep_features=True")
        self.n_real = statistics.count
        device = self.n_generated.device
        if _is_secondary_rank():
            if self.kid is not None:  # one (empty) tensor, as on rank 0: ranks gather list states item by item
                self.kid.real_features = [torch.zeros(0, statistics.features.shape[1], dtype=torch.float64,
                                                      device=device)]
            return
        if self.fid is not None:
            self.fid.real_features_sum = statistics.feature_sum.to(device, torch.float64)
            self.fid.real_features_cov_sum = statistics.outer_sum.to(device, torch.float64)
            self.fid.real_features_num_samples = torch.tensor(statistics.count, device=device)
        if self.kid is not None:
            self.kid.real_features = [statistics.features.to(device, torch.float64)]

    @torch.no_grad()
    def update(self, generated: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Add a batch of generated uint8 images and, for the paired metrics, their ground truth."""
        _check_images(generated, "generated")
        self.n_generated.update(float(generated.shape[0]))
        if self.fid_features is not None:
            features = self.fid_features(generated).double()
            for metric in (self.fid, self.kid):
                if metric is not None:
                    metric.update(features, real=False)
        if not self.paired:
            return
        if target is None:
            raise ValueError(f"{', '.join(self._paired_names())} need the ground truth of every generated image")
        _check_images(target, "ground-truth")
        if target.shape != generated.shape:
            raise ValueError(f"ground truth {tuple(target.shape)} and generated {tuple(generated.shape)} differ; "
                             "resize the ground truth to the generated resolution first")
        self.n_paired.update(float(generated.shape[0]))
        preds, truth = generated.float() / 255.0, target.float() / 255.0
        for name, metric in self.ssim.items():
            metric.update(ssim_per_image(preds, truth, SSIM_VARIANTS[name]))
        if self.lpips is not None:
            self.lpips.update(self.lpips_network(preds * 2 - 1, truth * 2 - 1).flatten())
        if self.psnr is not None:
            self.psnr.update(generated.double() / 255.0, target.double() / 255.0)

    def _paired_names(self) -> list[str]:
        return [name for name in PAIRED_METRICS if name in self.metric_names and name not in self.unavailable]

    @staticmethod
    def _count(metric: SumMetric) -> int:
        # computed even without updates: under DDP every rank must join the sync
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was called before the ``update``")
            return int(metric.compute().item())

    def compute(self) -> MetricResults:
        """Values of all metrics; those that cannot be computed are listed with the reason."""
        not_computed = dict(self.unavailable)
        values: dict[str, float] = {}
        n_generated, n_paired = self._count(self.n_generated), self._count(self.n_paired)
        kid_subset_size = None
        if self.fid is not None or self.kid is not None:
            if n_generated < 2 or self.n_real < 2:
                reason = (f"needs at least 2 generated and 2 real images, got {n_generated} and {self.n_real}. "
                          "Give more images (and a real set)")
                for name, metric in (("fid", self.fid), ("kid", self.kid)):
                    if metric is not None:
                        not_computed[name] = reason
            else:
                if self.fid is not None:
                    values["fid"] = float(self.fid.compute())
                if self.kid is not None:
                    # one tensor per rank, whatever the number of updates: ranks gather list states item by item
                    fake = self.kid.fake_features
                    self.kid.fake_features = [torch.cat(fake) if fake else
                                              torch.zeros(0, self.fid_features.num_features, dtype=torch.float64,
                                                          device=self.n_generated.device)]
                    kid_subset_size = min(self.kid_subset_size, n_generated, self.n_real)
                    self.kid.subset_size = kid_subset_size
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(self.seed)
                        kid_mean, kid_std = self.kid.compute()
                    values["kid"], values["kid_std"] = float(kid_mean), float(kid_std)
        paired = self._paired_names()
        if paired and n_paired == 0:
            not_computed.update({name: "no ground-truth pairs were scored" for name in paired})
        elif paired:
            for name, metric in self.ssim.items():
                values[name] = float(metric.compute())
            if self.lpips is not None:
                values["lpips"] = float(self.lpips.compute())
            if self.psnr is not None:
                values["psnr"] = float(self.psnr.compute())
        ordered = {name: values[name] for name in (*METRICS, "kid_std") if name in values}
        return MetricResults(ordered, not_computed, n_generated, n_paired, self.n_real, kid_subset_size)

    def reset(self) -> None:
        """Forget the generated images (the real-set statistics stay)."""
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()
