"""Throughput of the evaluation metrics (images/s) at 256x176 and 512x352, measured in one run.

Pretrained weights are looked up offline only (torch hub cache); where they are missing the networks are
randomly initialised with the same architecture, which does not change the timing. The output says which.
Run: ``make bench-eval`` (or ``python -m benchmarks.bench_eval --device cuda``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torchmetrics.functional.image import structural_similarity_index_measure

from leffa_pl.datasets.registry import protocols
from leffa_pl.metrics.features import (
    FID_EXTRACTORS,
    build_fid_feature_extractor,
    extractor_from_state_dict,
    random_inception_state_dict,
)
from leffa_pl.metrics.perceptual import LPIPS_BACKBONES, build_lpips_network
from leffa_pl.metrics.ssim import SSIM_GAUSSIAN, SSIM_UNIFORM51, ssim_per_image
from leffa_pl.metrics.suite import MetricSuite
from leffa_pl.metrics.weights import WeightsUnavailable

RESOLUTIONS = ((256, 176), (512, 352))


def fid_extractors(device: str) -> tuple[dict[str, torch.nn.Module], list[str]]:
    extractors, notes = {}, []
    for kind in FID_EXTRACTORS:
        try:
            extractors[kind] = build_fid_feature_extractor(kind, allow_download=False)
            notes.append(f"{kind}: pretrained weights")
        except WeightsUnavailable as error:
            extractors[kind] = extractor_from_state_dict(kind, random_inception_state_dict(kind))
            notes.append(f"{kind}: RANDOMLY INITIALISED, same architecture ({error.reason})")
    return {kind: extractor.to(device).eval() for kind, extractor in extractors.items()}, notes


def lpips_networks(device: str, directory: Path) -> tuple[dict[str, torch.nn.Module], list[str]]:
    networks, notes = {}, []
    for net, (architecture, _) in LPIPS_BACKBONES.items():
        try:
            networks[net] = build_lpips_network(net, allow_download=False)
            notes.append(f"LPIPS {net}: pretrained backbone")
        except WeightsUnavailable as error:
            path = directory / f"{architecture}.pth"
            torch.save(getattr(torchvision.models, architecture)(weights=None).state_dict(), path)
            networks[net] = build_lpips_network(net, path, allow_download=False)
            notes.append(f"LPIPS {net}: RANDOM backbone, same architecture ({error.reason})")
    return {net: network.to(device) for net, network in networks.items()}, notes


def images_per_second(step: Callable[[torch.Tensor, torch.Tensor], object], images: torch.Tensor,
                      truth: torch.Tensor, batch_size: int, device: str, repeats: int) -> float:
    """Best throughput over ``repeats`` passes through all images, after one warm-up batch (the best pass is
    the one least disturbed by other processes)."""
    best = float("inf")
    with torch.no_grad():
        step(images[:2], truth[:2])
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for begin in range(0, len(images), batch_size):
                step(images[begin:begin + batch_size], truth[begin:begin + batch_size])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="passes per measurement; the best one counts")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        extractors, notes = fid_extractors(args.device)
        networks, lpips_notes = lpips_networks(args.device, Path(directory))
    notes += lpips_notes

    def suite_step(protocol: str) -> Callable:
        spec = protocols()[protocol]
        suite = MetricSuite(spec.metrics, fid_features=extractors[spec.fid_extractor],
                            lpips_network=networks[spec.lpips_net]).to(args.device)
        return suite.update

    def float01(step: Callable) -> Callable:
        return lambda generated, truth: step(generated.float() / 255, truth.float() / 255)

    rows: dict[str, Callable] = {
        "FID/KID features, tf-inception": lambda g, t: extractors["tf-inception"](g),
        "FID/KID features, torchvision-inception": lambda g, t: extractors["torchvision-inception"](g),
        "SSIM, Gaussian 11": float01(lambda g, t: ssim_per_image(g, t, SSIM_GAUSSIAN)),
        "SSIM, uniform 51": float01(lambda g, t: ssim_per_image(g, t, SSIM_UNIFORM51)),
        "(torchmetrics SSIM, uniform 51, for comparison)": float01(
            lambda g, t: structural_similarity_index_measure(g, t, gaussian_kernel=False, kernel_size=51,
                                                             data_range=1.0, reduction="none")),
        "LPIPS, alex": float01(lambda g, t: networks["alex"](g * 2 - 1, t * 2 - 1)),
        "LPIPS, squeeze": float01(lambda g, t: networks["squeeze"](g * 2 - 1, t * 2 - 1)),
        "PSNR": MetricSuite(["psnr"]).to(args.device).update,
        "all metrics, deepfashion protocol": suite_step("deepfashion"),
        "all metrics, vton-paired protocol": suite_step("vton-paired"),
    }
    generator = torch.Generator().manual_seed(0)
    results: dict[str, list[float]] = {name: [] for name in rows}
    for height, width in RESOLUTIONS:
        images = torch.randint(0, 256, (args.images, 3, height, width), generator=generator, dtype=torch.uint8)
        truth = torch.randint(0, 256, (args.images, 3, height, width), generator=generator, dtype=torch.uint8)
        images, truth = images.to(args.device), truth.to(args.device)
        for name, step in rows.items():
            results[name].append(images_per_second(step, images, truth, args.batch_size, args.device,
                                                   args.repeats))

    print(f"# bench-eval: images/s, best of {args.repeats} passes over {args.images} images, "
          f"batch {args.batch_size}, "
          f"device {args.device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} at the end")
    for note in notes:
        print(f"# {note}")
    header = " | ".join(f"{h}x{w}" for h, w in RESOLUTIONS)
    print(f"\n| metric step | {header} |\n|---|" + "---:|" * len(RESOLUTIONS))
    for name, values in results.items():
        print(f"| {name} | " + " | ".join(f"{value:.2f}" for value in values) + " |")


if __name__ == "__main__":
    main()
