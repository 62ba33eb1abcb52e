"""Score a folder of generated PNGs under a protocol of the literature (`leffa-pl-score`).

Generated files are named ``<target id>.png`` or ``<reference id>__to__<target id>.png``; the target id
is the stem of the ground-truth image in the ground-truth folder. Inputs are checked (folders exist,
images found, every generated image has its ground truth, one resolution) before any work starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from leffa_pl.data import deepfashion, dresscode
from leffa_pl.evaluation.images import IMAGE_SUFFIXES, GeneratedImages, ImageFiles, ImageReadError, image_size
from leffa_pl.evaluation.protocols import PROTOCOLS, Protocol, get_protocol
from leffa_pl.evaluation.report import ScoreResult, markdown_report, write_report
from leffa_pl.metrics.features import build_fid_feature_extractor, feature_extractor_identity
from leffa_pl.metrics.perceptual import build_lpips_network
from leffa_pl.metrics.real_statistics import RealStatistics, RealStatisticsCache, describe_real_set
from leffa_pl.metrics.ssim import SSIM_VARIANTS
from leffa_pl.metrics.suite import MetricSuite
from leffa_pl.metrics.weights import WeightsUnavailable

TARGET_SEPARATOR = "__to__"
MAX_LISTED = 10
log = logging.getLogger(__name__)


class ScoreInputError(ValueError):
    """Input that cannot be scored, reported before any work starts."""


def default_cache_dir() -> Path:
    """``$LEFFA_PL_CACHE`` or ``$XDG_CACHE_HOME/leffa_pl`` (``~/.cache/leffa_pl``), then ``real-stats``."""
    root = os.environ.get("LEFFA_PL_CACHE")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leffa_pl"
    return Path(root) / "real-stats"


@dataclass
class ScoreOptions:
    """How to score. The two modules are for callers that bring their own (tests, in-training use)."""

    batch_size: int = 16
    num_workers: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None  # None: default_cache_dir()
    allow_download: bool = True
    inception_weights: Path | None = None
    lpips_weights: Path | None = None
    fid_extractor: str | None = None  # None: the protocol's
    lpips_net: str | None = None  # None: the protocol's
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0
    fid_extractor_module: nn.Module | None = None
    lpips_module: nn.Module | None = None


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(str(item) for item in items[:MAX_LISTED])
    return shown + (f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def target_id(generated: Path) -> str:
    """The ground-truth id of a generated file: the stem, after the last ``__to__`` if there is one."""
    return generated.stem.rsplit(TARGET_SEPARATOR, 1)[-1]


def list_images(directory: str | os.PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                pattern: str = "*") -> list[Path]:
    """Sorted image files of a folder (not recursive)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ScoreInputError(f"{directory}: no such folder")
    return sorted(p for p in directory.glob(pattern) if p.is_file() and p.suffix.lower() in suffixes)


def list_generated(directory: str | os.PathLike) -> list[Path]:
    """The generated PNGs of a folder; none is an error."""
    generated = list_images(directory, suffixes=(".png",))
    if not generated:
        raise ScoreInputError(f"{directory}: no generated PNG images")
    return generated


def match_ground_truth(generated: Sequence[Path], ground_truth_dir: str | os.PathLike) -> list[Path]:
    """The ground-truth file of each generated image, matched by id; all unmatched ids are reported."""
    by_id: dict[str, Path] = {}
    for path in list_images(ground_truth_dir):
        if path.stem in by_id:
            raise ScoreInputError(f"{ground_truth_dir}: two ground-truth images for id {path.stem}: "
                                  f"{by_id[path.stem].name}, {path.name}")
        by_id[path.stem] = path
    unmatched = [f"{g.name} (id {target_id(g)})" for g in generated if target_id(g) not in by_id]
    if unmatched:
        raise ScoreInputError(f"{len(unmatched)} of {len(generated)} generated images have no ground truth in "
                              f"{ground_truth_dir}: {_listing(unmatched)}")
    return [by_id[target_id(g)] for g in generated]


def read_image_list(list_file: str | os.PathLike, directory: str | os.PathLike) -> list[Path]:
    """Images named in the first column of ``list_file``, one per line, found in ``directory``: DeepFashion's
    train.lst, or a DressCode pair file (``test_pairs_paired.txt``: person image, garment image)."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise ScoreInputError(f"{list_file}: no such file")
    names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    paths = [Path(directory) / name for name in names]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise ScoreInputError(f"{list_file}: {len(missing)} of {len(paths)} listed images are not in {directory}: "
                              f"{_listing(missing)}")
    if not paths:
        raise ScoreInputError(f"{list_file}: lists no images")
    return paths


def common_resolution(paths: Sequence[Path]) -> tuple[int, int]:
    """The (height, width) shared by all images; mixed sizes are an error naming examples."""
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path in paths:
        try:
            sizes.setdefault(image_size(path), []).append(path)
        except ImageReadError as error:
            raise ScoreInputError(str(error)) from None
    if len(sizes) > 1:
        found = "; ".join(f"{h}x{w}: {len(files)} files, e.g. {files[0].name}" for (h, w), files in sizes.items())
        raise ScoreInputError(f"generated images differ in size ({found})")
    return next(iter(sizes))


def _fid_extractor(protocol: Protocol, options: ScoreOptions) -> nn.Module:
    if options.fid_extractor_module is not None:
        return options.fid_extractor_module
    return build_fid_feature_extractor(options.fid_extractor or protocol.fid_extractor, options.inception_weights,
                                       options.allow_download)


def _lpips_network(protocol: Protocol, options: ScoreOptions) -> nn.Module:
    if options.lpips_module is not None:
        return options.lpips_module
    return build_lpips_network(options.lpips_net or protocol.lpips_net, options.lpips_weights,
                               options.allow_download)


@torch.no_grad()
def compute_real_statistics(paths: Sequence[Path], extractor: nn.Module, resolution: tuple[int, int], resize: str,
                            keep_features: bool, options: ScoreOptions) -> RealStatistics:
    """Features of the real images (resized to ``resolution``), accumulated as FID/KID need them."""
    statistics = RealStatistics.empty(extractor.num_features, keep_features)
    loader = DataLoader(ImageFiles(paths, resolution, resize), batch_size=options.batch_size,
                        num_workers=options.num_workers)
    report_every = max(1, len(loader) // 10)
    for index, images in enumerate(loader):
        statistics.add(extractor(images.to(options.device)))
        if (index + 1) % report_every == 0:
            log.info("real-set features: %d / %d images", statistics.count, len(paths))
    return statistics


def cached_real_statistics(paths: Sequence[Path], extractor: nn.Module, extractor_identity: str,
                           resolution: tuple[int, int], resize: str, keep_features: bool,
                           options: ScoreOptions) -> tuple[RealStatistics, Path, bool]:
    """The real set's statistics from the cache when its key matches, else computed and cached; also the
    cache file and whether it was a hit. ``extractor_identity`` is ``feature_extractor_identity(extractor)``."""
    cache = RealStatisticsCache(options.cache_dir or default_cache_dir())
    try:
        description = describe_real_set(paths, resolution, resize, extractor_identity)
    except FileNotFoundError as error:
        raise ScoreInputError(f"{error.filename}: real image vanished") from None
    cached = cache.load(description, need_features=keep_features)
    if cached is not None:
        return cached, cache.path_for(description), True
    statistics = compute_real_statistics(paths, extractor, resolution, resize, keep_features, options)
    return statistics, cache.save(description, statistics), False


def score_images(generated: Sequence[Path], protocol: str | Protocol, targets: Sequence[Path] | None = None,
                 real_images: Sequence[Path] | None = None, options: ScoreOptions | None = None) -> ScoreResult:
    """Score generated PNGs (one resolution) against their ground truth ``targets`` and a real set.

    Metrics whose weights or inputs are missing are reported as not computed; the others are computed.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    options = options or ScoreOptions()
    if not generated:
        raise ScoreInputError("no generated images to score")
    if protocol.needs_ground_truth and (targets is None or len(targets) != len(generated)):
        raise ScoreInputError(f"the {protocol.name} protocol needs one ground-truth image per generated image")
    resolution = common_resolution(generated)
    for path in targets or ():
        try:
            image_size(path)
        except ImageReadError as error:
            raise ScoreInputError(str(error)) from None
    for variant in (SSIM_VARIANTS[name] for name in protocol.metrics if name in SSIM_VARIANTS):
        if min(resolution) < variant.size:
            raise ScoreInputError(f"{variant.name} needs images of at least {variant.size} pixels a side, "
                                  f"the generated ones are {resolution[0]}x{resolution[1]}")
    set_metrics = [name for name in protocol.metrics if name in ("fid", "kid")]
    unavailable: dict[str, str] = {}
    details: dict[str, object] = {"ground_truth_resize": f"PIL {protocol.ground_truth_resize} (antialiased) to "
                                                         f"{resolution[0]}x{resolution[1]} when the size differs"}
    extractor = None
    if set_metrics and not real_images:
        unavailable.update({name: f"no real image set given. Give {protocol.real_set} (--real)"
                            for name in set_metrics})
    elif set_metrics:
        try:
            extractor = _fid_extractor(protocol, options).to(options.device).eval()
        except WeightsUnavailable as error:
            unavailable.update({name: str(error) for name in set_metrics})
    lpips_network = None
    if "lpips" in protocol.metrics:
        try:
            lpips_network = _lpips_network(protocol, options).to(options.device)
            details["lpips"] = f"{options.lpips_net or protocol.lpips_net} network, inputs in [-1, 1]"
        except WeightsUnavailable as error:
            unavailable["lpips"] = str(error)

    suite = MetricSuite(protocol.metrics, fid_features=extractor, lpips_network=lpips_network,
                        unavailable=unavailable, kid_subsets=options.kid_subsets,
                        kid_subset_size=options.kid_subset_size, seed=options.seed).to(options.device)
    if extractor is not None:
        identity = feature_extractor_identity(extractor)
        statistics, cache_file, hit = cached_real_statistics(real_images, extractor, identity, resolution,
                                                             protocol.ground_truth_resize, suite.kid is not None,
                                                             options)
        suite.set_real_statistics(statistics)
        details.update({"fid_feature_extractor": identity, "real_statistics_cache": str(cache_file),
                        "real_statistics_cache_hit": hit})

    loader = DataLoader(GeneratedImages(generated, targets if suite.paired else None, resolution,
                                        protocol.ground_truth_resize),
                        batch_size=options.batch_size, num_workers=options.num_workers)
    report_every = max(1, len(loader) // 10)
    for index, batch in enumerate(loader):
        target = batch.get("target")
        suite.update(batch["generated"].to(options.device), None if target is None else target.to(options.device))
        if (index + 1) % report_every == 0:
            log.info("scored %d / %d generated images", min((index + 1) * options.batch_size, len(generated)),
                     len(generated))
    results = suite.compute()

    details.update({name: SSIM_VARIANTS[name].equivalent for name in protocol.metrics if name in SSIM_VARIANTS})
    if "psnr" in protocol.metrics:
        details["psnr"] = "mean of per-image PSNR, data range 1"
    if results.kid_subset_size is not None:
        details["kid"] = f"{options.kid_subsets} subsets of {results.kid_subset_size} images, seed {options.seed}"
    result = ScoreResult.from_metrics(protocol.name, resolution, results, details)
    result.n_real = len(real_images or ())  # the real set's size, also when FID/KID could not be computed
    return result


def score_folder(generated_dir: str | os.PathLike, protocol: str,
                 ground_truth_dir: str | os.PathLike | None = None, real_dir: str | os.PathLike | None = None,
                 real_list: str | os.PathLike | None = None, real_pattern: str = "*",
                 options: ScoreOptions | None = None, write: bool = True) -> ScoreResult:
    """Score every PNG of ``generated_dir``; with ``write``, put metrics.json and metrics.md beside them.

    ``real_dir`` (optionally narrowed by ``real_list`` names or a ``real_pattern`` glob) is the FID/KID
    real set; for the try-on protocols it defaults to ``ground_truth_dir``.
    """
    spec = get_protocol(protocol)
    generated = list_generated(generated_dir)
    targets = None
    if spec.needs_ground_truth:
        if ground_truth_dir is None:
            raise ScoreInputError(f"the {spec.name} protocol needs the ground-truth folder (--ground-truth)")
        targets = match_ground_truth(generated, ground_truth_dir)
    if real_dir is None and spec.real_set_defaults_to_ground_truth:
        real_dir = ground_truth_dir
    real_images = None
    if real_dir is not None:
        real_images = (read_image_list(real_list, real_dir) if real_list
                       else list_images(real_dir, pattern=real_pattern))
        if not real_images:
            raise ScoreInputError(f"{real_dir}: no real images (pattern {real_pattern!r})")
    result = score_images(generated, spec, targets, real_images, options)
    result.details["generated_folder"] = str(Path(generated_dir))
    if real_dir is not None:
        result.details["real_set"] = (f"{len(real_images)} images from {real_dir}"
                                      + (f" listed in {real_list}" if real_list else ""))
    if write:
        write_report(result, generated_dir)
    return result


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``leffa-pl-score``."""
    parser = argparse.ArgumentParser(prog="leffa-pl-score", description=__doc__.splitlines()[0])
    parser.add_argument("generated", type=Path, help="folder of generated PNGs; the report is written there")
    parser.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    parser.add_argument("--ground-truth", type=Path, help="folder of ground-truth images, matched by id")
    parser.add_argument("--real", type=Path, help="folder of the FID/KID real set (try-on: defaults to "
                                                  "--ground-truth; DeepFashion: the training images)")
    parser.add_argument("--real-list", type=Path, help="file naming the real images, one per line "
                                                       f"({deepfashion.SPLIT_LISTS['train']})")
    parser.add_argument("--real-pattern", default="*", help="glob selecting the real images, e.g. "
                                                            f"'{dresscode.file_name('person', '*')}'")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-dir", type=Path,
                        help=f"real-set statistics cache (default {default_cache_dir()})")
    parser.add_argument("--offline", action="store_true", help="never download weights")
    parser.add_argument("--inception-weights", type=Path, help="local Inception weights for FID/KID")
    parser.add_argument("--lpips-weights", type=Path,
                        help="local torchvision AlexNet/SqueezeNet weights for LPIPS")
    parser.add_argument("--fid-extractor", choices=("tf-inception", "torchvision-inception"),
                        help="override the protocol's FID feature extractor")
    parser.add_argument("--lpips-net", choices=("alex", "squeeze"), help="override the protocol's LPIPS network")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``leffa-pl-score``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ScoreOptions(batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
                           cache_dir=args.cache_dir, allow_download=not args.offline,
                           inception_weights=args.inception_weights, lpips_weights=args.lpips_weights,
                           fid_extractor=args.fid_extractor, lpips_net=args.lpips_net)
    try:
        result = score_folder(args.generated, args.protocol, args.ground_truth, args.real, args.real_list,
                              args.real_pattern, options)
    except (ScoreInputError, ImageReadError) as error:
        print(f"leffa-pl-score: error: {error}", file=sys.stderr)
        return 2
    print(markdown_report(result))
    print(f"written: {args.generated / 'metrics.json'}, {args.generated / 'metrics.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
