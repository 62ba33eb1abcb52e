"""Generate a split's images with a checkpoint, then score them under the literature's protocol
(`leffa-pl-evaluate`).

Per pairing, ``OUT/<pairing>/`` (try-on: ``paired``, ``unpaired``; DeepFashion: ``OUT/`` itself) receives the
PNGs (``leffa_pl.evaluation.predict``), ``metrics.json`` and ``metrics.md`` (DressCode with several categories:
also ``metrics_<category>.*``, see ``score_categories``). Already written PNGs are kept, so a rerun resumes.
Real sets follow evaluation.md: try-on paired = the ground truth, unpaired = the test person images,
DeepFashion = all training images (``train.lst``), resized to the evaluation resolution.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from leffa_pl.atomic_write import unwritable_reason
from leffa_pl.callbacks.preemption import EXIT_SIGTERM
from leffa_pl.data.datamodule import DeepFashionDataModule
from leffa_pl.data.files import DataFileError, DatasetFilesError, no_such_folder
from leffa_pl.data.layout import parse_size
from leffa_pl.data.mask_recipes import CATEGORIES
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.registry import build_data_module
from leffa_pl.datasets import registry
from leffa_pl.datasets.spec import RealSetError
from leffa_pl.evaluation.images import ImageReadError
from leffa_pl.evaluation.predict import (
    LeffaPredictor,
    OutputFolderError,
    PredictionOptions,
    PredictionPlan,
    predict_pairs,
)
from leffa_pl.evaluation.report import ScoreResult, markdown_report, write_report
from leffa_pl.evaluation.score import ScoreInputError, ScoreOptions, score_images
from leffa_pl.model.checkpoint import CheckpointError
from leffa_pl.model.loading import check_resolution, load_model
from leffa_pl.model.sampler import SCHEDULERS, SamplerSettings

log = logging.getLogger(__name__)


class EvaluationInputError(ValueError):
    """Missing data, checkpoint or folders, reported before any work starts."""


def build_datamodule(dataset: str, root: Path, resolution: tuple[int, int], pairing: str | None,
                     batch_size: int, num_workers: int, category: str | None = None) -> pl.LightningDataModule:
    """The data module serving the split to evaluate (no augmentation)."""
    try:
        return build_data_module(dataset, str(root), resolution=resolution, batch_size=batch_size,
                                 num_workers=num_workers, pin_memory=torch.accelerator.is_available(),
                                 augment=False, test_pairing=pairing, category=category)
    except ValueError as error:
        raise EvaluationInputError(str(error)) from None


def protocol_for(dataset: str, pairing: str | None) -> str:
    """The evaluation protocol of a dataset and pairing."""
    return registry.get(dataset).protocols[pairing].name


def real_set(dataset: str, predicted: PairDataset, root: Path) -> tuple[list[Path], str]:
    """The FID/KID real images of evaluation.md and a line describing them: the dataset's own real set
    (DeepFashion: all training images), else the test persons of the split."""
    real_images = registry.get(dataset).real_images
    if real_images is not None:
        try:
            return real_images(root)
        except RealSetError as error:
            raise ScoreInputError(str(error)) from None
    persons = sorted({predicted.person_file(index) for index in range(len(predicted))})
    return persons, f"the {len(persons)} test person images of the split"


def category_groups(dataset: PairDataset, indices: Sequence[int]) -> dict[str, list[int]]:
    """Positions in ``indices`` by the person's category (DressCode pairs have one), in the dataset's order of
    categories; empty when the pairs have none or all are of one category (that score is the whole one)."""
    groups: dict[str, list[int]] = {}
    for position, index in enumerate(indices):
        category = getattr(dataset.pairs[index], "person_category", None)
        if category is None:
            return {}
        groups.setdefault(category, []).append(position)
    order = [category for category in CATEGORIES if category in groups]
    return {category: groups[category] for category in order} if len(order) > 1 else {}


def report_name(result: ScoreResult) -> str:
    """``metrics`` or, for one category of a mixed split, ``metrics_<category>`` (as LaDI-VTON names them)."""
    category = result.details.get("category")
    return f"metrics_{category}" if category else "metrics"


def score_categories(dataset: PairDataset, plan: PredictionPlan, protocol: str, real_images: Sequence[Path],
                     options: ScoreOptions, details: dict[str, object]) -> list[ScoreResult]:
    """LaDI-VTON's per-category scores (``val_metrics.py``): per category, its generated images against its
    ground truth, and FID/KID against the real images (test persons) of that category alone."""
    results = []
    for category, positions in category_groups(dataset, plan.unique).items():
        targets = [dataset.person_file(plan.unique[position]) for position in positions]
        persons = set(targets)
        real = [path for path in real_images if path in persons]
        result = score_images([plan.files[position] for position in positions], protocol, targets, real, options)
        result.details.update(details)
        result.details.update({"category": category,
                               "real_set": f"the {len(real)} test person images of {category}"})
        write_report(result, plan.out_dir, report_name(result))
        results.append(result)
    return results


def _check_inputs(args: argparse.Namespace) -> None:
    problems = []
    if not args.data.is_dir():
        problems.append(f"{no_such_folder(args.data, 'data folder')} (--data)")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        problems.append(f"{args.checkpoint}: no such checkpoint file (--checkpoint)")
    if args.base_model is not None and not args.base_model.is_dir():
        problems.append(f"{args.base_model}: no such base-model folder (--base-model)")
    for option in ("inception_weights", "lpips_weights"):
        path = getattr(args, option)
        if path is not None and not path.is_file():
            problems.append(f"{path}: no such file (--{option.replace('_', '-')})")
    try:  # the ranges, before the model is loaded
        SamplerSettings(scheduler=args.scheduler, num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    except ValueError as error:
        problems.append(f"{error} (--steps, --guidance-scale)")
    problems += [f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= {low}"
                 for name, low in (("batch_size", 1), ("score_batch_size", 1), ("num_workers", 0), ("devices", 1))
                 if getattr(args, name) < low]
    reason = None if problems else unwritable_reason(args.out)  # creates it: only for a run that goes ahead
    if reason is not None:
        problems.append(f"{args.out}: the output folder cannot be written ({reason}) (--out)")
    if problems:
        raise EvaluationInputError("; ".join(problems))


def evaluate(args: argparse.Namespace) -> list[ScoreResult]:
    """Predict every pairing, then (rank 0) score each; returns the results (empty on other ranks)."""
    _check_inputs(args)
    spec = registry.get(args.dataset)
    resolution = args.resolution or spec.default_resolution
    pairings = [pairing for pairing in spec.pairings if args.pairing in ("both", pairing) or pairing is None]
    model, model_description = load_model(args.checkpoint, args.base_model, task=spec.task)
    try:
        check_resolution(model, resolution)
    except ValueError as error:
        raise EvaluationInputError(str(error)) from None
    settings = SamplerSettings(scheduler=args.scheduler, num_inference_steps=args.steps,
                               guidance_scale=args.guidance_scale, repaint=args.repaint,
                               reference_acceleration=args.reference_acceleration)
    predictor = LeffaPredictor(model, settings, seed=args.seed, description=model_description)
    options = PredictionOptions(batch_size=args.batch_size, num_workers=args.num_workers,
                                accelerator=args.accelerator, devices=args.devices,
                                strategy="ddp" if args.devices > 1 else "auto", precision=args.precision)
    runs: list[tuple[str | None, pl.LightningDataModule, Path, PredictionPlan | None]] = []
    for pairing in pairings:
        source = build_datamodule(args.dataset, args.data, resolution, pairing, args.batch_size,
                                  args.num_workers, args.category)
        out_dir = args.out / pairing if pairing else args.out
        log.info("predicting %s%s into %s with %s", args.dataset, f" ({pairing})" if pairing else "", out_dir,
                 model_description)
        runs.append((pairing, source, out_dir, predict_pairs(source, predictor, out_dir, options)))
    if any(plan is None for *_, plan in runs):  # a secondary DDP rank: rank 0 scores
        return []

    del predictor, model  # free the generator's memory for the metric networks
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Scoring runs in this process alone (the other ranks stop after prediction): without the group,
        # the metrics do not wait for ranks that are gone.
        torch.distributed.destroy_process_group()
    score_options = ScoreOptions(batch_size=args.score_batch_size, num_workers=args.num_workers,
                                 device="cuda" if torch.cuda.is_available() else "cpu",
                                 cache_dir=args.cache_dir, allow_download=not args.offline,
                                 inception_weights=args.inception_weights, lpips_weights=args.lpips_weights)
    results = []
    for pairing, source, out_dir, plan in runs:
        dataset = source.predict_dataloader().dataset
        targets = [dataset.person_file(index) for index in plan.unique]
        real_images, real_description = real_set(args.dataset, dataset, args.data)
        protocol = protocol_for(args.dataset, pairing)
        result = score_images(plan.files, protocol, targets, real_images, score_options)
        run_details = {
            "dataset": f"{args.dataset} at {args.data}" + (f", {pairing} pairs" if pairing else ""),
            "model": model_description,
            "sampler": ", ".join(f"{key}={value}" for key, value in asdict(settings).items()),
            "seed": f"{args.seed} (one generator per pair, seeded from the seed and the pair's ids)",
            "generated_folder": str(out_dir),
        }
        result.details.update(run_details)
        result.details["real_set"] = real_description
        if isinstance(source, DeepFashionDataModule) and source.split_pairs(source.test_split).skipped_pairs:
            # the protocol scores every test pair: say which could not be generated
            result.details["skipped_test_pairs"] = source.split_pairs(source.test_split).skip_summary()
        write_report(result, out_dir)
        results.append(result)
        results += score_categories(dataset, plan, protocol, real_images, score_options, run_details)
    return results


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``leffa-pl-evaluate``."""
    parser = argparse.ArgumentParser(prog="leffa-pl-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(registry.names()))
    parser.add_argument("--data", required=True, type=Path,
                        help="dataset root (e.g. data/zalando-hd-resized)")
    parser.add_argument("--category", help="DressCode category (default all)")
    parser.add_argument("--checkpoint", type=Path,
                        help="Lightning .ckpt (EMA weights when trained with EMA) or released-layout "
                             ".pth/.safetensors; none: tiny model with random weights (pipeline check only)")
    parser.add_argument("--base-model", type=Path, help="diffusers folder giving the architecture (configs)")
    parser.add_argument("--resolution", type=parse_size,
                        help="HxW of the generated images (default: 1024x768 try-on, 256x176 DeepFashion)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (PNGs and reports)")
    parser.add_argument("--pairing", default="both", choices=("paired", "unpaired", "both"),
                        help="try-on test pairs (ignored for DeepFashion)")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (released: 50)")
    parser.add_argument("--guidance-scale", type=float, default=2.5)
    parser.add_argument("--scheduler", default="ddpm", choices=SCHEDULERS)
    parser.add_argument("--repaint", action="store_true", help="keep the person outside the mask (try-on)")
    parser.add_argument("--reference-acceleration", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--devices", type=int, default=1, help="devices; more than one runs DDP")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=4, help="generation batch size per device")
    parser.add_argument("--score-batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--cache-dir", type=Path, help="real-set statistics cache (see leffa-pl-score)")
    parser.add_argument("--offline", action="store_true", help="never download metric weights")
    parser.add_argument("--inception-weights", type=Path, help="local Inception weights for FID/KID")
    parser.add_argument("--lpips-weights", type=Path, help="local AlexNet/SqueezeNet weights for LPIPS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``leffa-pl-evaluate``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = evaluate(args)
    except SIGTERMException:
        print(f"leffa-pl-evaluate: stopped by SIGTERM; the PNGs written so far are kept in {args.out}: run the "
              "same command again to generate the rest", file=sys.stderr)
        return EXIT_SIGTERM
    except (EvaluationInputError, CheckpointError, DatasetFilesError, DataFileError, ScoreInputError,
            ImageReadError, OutputFolderError) as error:
        print(f"leffa-pl-evaluate: error: {error}", file=sys.stderr)
        return 2
    for result in results:
        folder = Path(str(result.details["generated_folder"]))
        print(markdown_report(result))
        print(f"written: {folder / report_name(result)}.json, {folder / report_name(result)}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
