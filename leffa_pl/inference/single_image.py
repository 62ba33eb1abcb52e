"""``leffa-pl-tryon`` and ``leffa-pl-pose``: a trained model on one's own photos, one image or folders.

Try-on: each person photo (``--person``, a file or a folder) with each garment photo (``--garment``). The
person is fitted to ``--resolution`` (aspect kept, border replicated), its inpaint mask made by ``--mask-recipe``
from parsing + keypoints (default: the Leffa app's recipe for the checkpoint's dataset; or read from ``--mask``,
white = repaint, at the photo's size) and its
DensePose computed (or read from ``--densepose``: a VITON-HD ``image-densepose`` rendering or a DressCode
part-index map, at the photo's size). Pose transfer: each reference photo (``--reference``) in the pose of each
target (``--target-pose``: a photo whose DensePose is computed, or ``--target-densepose``, an IUV map in the
DeepFashion encoding); its mask is all ones, as in the Leffa app (no garment mask, so no mask recipe).

Output: ``OUT/<garment or reference file name>__to__<person or target file name>.png`` (the names whole,
extension included: ``shirt.jpg__to__anna.jpg.png``, so ``anna.jpg`` and ``anna.png`` get their own images) at
the person's (target's) own size, and beside it a ``.json`` of the settings (model, sampler, resolution, seed,
sources, what was computed). Two inputs that would still share an output name are refused before any work.
Each image has its own generator seeded from ``--seed`` and the two file names, so a seed reproduces an image
whatever else is in the folders. A checkpoint recorded as trained for the other task is refused
(``--allow-other-task`` accepts it); the tiny model with random weights runs only with ``--random-weights``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from leffa_pl import exit_codes
from leffa_pl.annotators.annotation import inpaint_mask
from leffa_pl.annotators.device import resolve_device
from leffa_pl.annotators.weight_files import WeightsNotFoundError
from leffa_pl.atomic_write import MAX_NAME_BYTES, unwritable_reason
from leffa_pl.data import mask_recipes
from leffa_pl.data.file_writers import write_json, write_png
from leffa_pl.data.files import DataFileError, check_name
from leffa_pl.data.io import read_gray
from leffa_pl.data.layout import parse_size
from leffa_pl.data.transforms import contract_sample
from leffa_pl.datasets import registry
from leffa_pl.datasets.deepfashion import reader as deepfashion
from leffa_pl.datasets.deepfashion.densepose_fill import iuv_map
from leffa_pl.evaluation.predict import pair_seed
from leffa_pl.evaluation.score import TARGET_SEPARATOR
from leffa_pl.metrics.suite import quantize_images
from leffa_pl.model.checkpoint import CheckpointError
from leffa_pl.model.loading import check_resolution, load_model
from leffa_pl.model.lora import load_lora
from leffa_pl.model.sampler import SCHEDULERS, LeffaSampler, SamplerSettings
from leffa_pl.preprocess.annotate import (
    NoPersonError,
    Preprocessor,
    add_weight_arguments,
    needs_app_parsing,
    weights_from_args,
)
from leffa_pl.preprocess.photos import Photo, PhotoError, Placement, check_size, fit, list_photos, load_photo


@dataclass
class Job:
    """One image to generate: a person (target) photo, a garment (reference) photo, optional given maps."""

    person: Path
    garment: Path
    mask: Path | None = None
    densepose: Path | None = None

    @property
    def output_name(self) -> str:
        """``<garment file name>__to__<person file name>.png``: whole names, so distinct photos of a folder give
        distinct outputs (``check_outputs`` refuses what could still clash)."""
        return f"{self.garment.name}{TARGET_SEPARATOR}{self.person.name}.png"


def _photos(path: Path, ignored: list[str]) -> list[Path]:
    if not path.is_dir():
        return [path]
    photos, unused = list_photos(path)
    ignored += unused
    return photos


def check_outputs(jobs: list[Job]) -> None:
    """Refuse names that cannot be output names and two jobs with one output (also on case-insensitive file
    systems), before any work."""
    by_name: dict[str, Job] = {}
    for job in jobs:
        for photo in (job.person, job.garment):
            check_name(photo.name, photo, what="photo name")
        size = len(job.output_name.encode())
        if size > MAX_NAME_BYTES:
            raise PhotoError(job.person, f"the output name for {job.garment.name} on {job.person.name} would be "
                                         f"{size} bytes, over the {MAX_NAME_BYTES} a file name can take here: "
                                         "shorten one of the two names")
        other = by_name.setdefault(job.output_name.casefold(), job)
        if other is not job:
            raise PhotoError(job.person, f"{job.garment.name} on {job.person.name} and {other.garment.name} on "
                                         f"{other.person.name} would both be written to {job.output_name}: rename one")


def _given_map(path: Path | None, source: Photo, reader, size: tuple[int, int]) -> np.ndarray | None:
    """A map given at the photo's size, fitted like the photo with nearest-neighbour resizing."""
    if path is None:
        return None
    values = reader(path)
    if values.shape[:2] != source.image.shape[:2]:
        raise DataFileError(path, f"size {values.shape[:2]} differs from the photo's {source.image.shape[:2]} "
                                  f"({source.path})")
    return fit(values, size, pad="zero", nearest=True)[0]


class ImageGenerator:
    """The model, the sampler and the preprocessing, shared by every image of a run."""

    def __init__(self, args: argparse.Namespace, settings: SamplerSettings, task: str):
        self.device = resolve_device(args.device)
        model, self.description = load_model(args.checkpoint, args.base_model, task, args.allow_other_task)
        check_resolution(model, args.resolution)
        if args.lora is not None:
            load_lora(model, args.lora, args.lora_scale)
            self.description += f" + LoRA adapter {args.lora} at scale {args.lora_scale:g}"
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.settings = settings
        self.sampler = LeffaSampler(self.model, self.settings)
        self.resolution, self.seed, self.out = args.resolution, args.seed, args.out
        stored = getattr(args, "dataset", None)  # try-on: the checkpoint's dataset; pose: no parsing
        self.preprocessor = Preprocessor(weights_from_args(args, self.device),
                                         cihp=stored is None or registry.get(stored).label_set == "cihp"
                                         or needs_app_parsing(getattr(args, "mask_recipe", None)))
        self.last_person: tuple[tuple, PersonMaps] | None = None

    def generate(self, name: str, sample: dict, target: Photo, placement: Placement, record: dict) -> Path:
        """Generate ``sample`` (the data contract) and write it as ``name`` at ``target``'s size with ``record``."""
        batch = {key: value[None] if isinstance(value, torch.Tensor) else [value] for key, value in sample.items()}
        seed = pair_seed(self.seed, sample["person_id"], sample["reference_id"])
        image = self.sampler(batch, [torch.Generator().manual_seed(seed)])
        fitted = quantize_images(image)[0].permute(1, 2, 0).cpu().numpy()
        restored = placement.restore(np.ascontiguousarray(fitted))
        path = self.out / name
        write_png(path, restored)
        write_json(path.with_suffix(".json"), {
            **record, "output": str(path), "size": list(target.image.shape[:2]), "model": self.description,
            "resolution": list(self.resolution), "sampler": asdict(self.settings), "seed": self.seed,
            "image_seed": seed, "device": self.device})
        return path


@dataclass
class PersonMaps:
    """A person photo fitted to the model's resolution, with its inpaint mask and DensePose part indices."""

    photo: Photo
    fitted: np.ndarray
    placement: Placement
    mask: np.ndarray
    parts: np.ndarray


def person_maps(runner: ImageGenerator, job: Job, dataset: str, category: str, recipe: str) -> PersonMaps:
    size, pre, spec = runner.resolution, runner.preprocessor, registry.get(dataset)
    person = load_photo(job.person)
    check_size(person, size)
    fitted, placement = fit(person.image, size, pad="edge")
    given_mask = _given_map(job.mask, person, read_gray, size)
    if given_mask is not None:
        mask = given_mask >= 128
    else:
        labels, label_set = pre.mask_labels(fitted, spec, recipe)
        mask = inpaint_mask(recipe, spec, labels, pre.keypoints(fitted), category, label_set)
    given_densepose = _given_map(job.densepose, person, spec.densepose.read, size)
    if given_densepose is None:
        parts = pre.densepose(fitted).parts
    else:
        parts = spec.densepose.decode(given_densepose)
    return PersonMaps(person, fitted, placement, mask, parts)


def tryon_sample(runner: ImageGenerator, job: Job, dataset: str, category: str,
                 recipe: str) -> tuple[dict, Photo, Placement, dict]:
    """The contract sample of a try-on job, the person photo, where it lies in the sample, and a record. A
    person's maps are computed once for all the garments tried on it in a row."""
    key = (job.person, job.mask, job.densepose)
    if runner.last_person is None or runner.last_person[0] != key:
        runner.last_person = key, person_maps(runner, job, dataset, category, recipe)
    maps = runner.last_person[1]
    person, person_fit, placement, mask, parts = maps.photo, maps.fitted, maps.placement, maps.mask, maps.parts
    garment = load_photo(job.garment)
    check_size(garment, runner.resolution)
    garment_fit = fit(garment.image, runner.resolution, pad="white")[0]
    densepose = registry.get(dataset).densepose.to_tensor(parts)
    sample = contract_sample(person_fit, garment_fit, mask.astype(np.uint8), densepose, mask.astype(np.uint8),
                             person_id=job.person.name, reference_id=job.garment.name)
    record = {"task": "tryon", "person": str(job.person), "garment": str(job.garment), "dataset": dataset,
              "category": category,
              "mask": str(job.mask) if job.mask else f"computed: mask recipe {mask_recipes.get(recipe).describe()}",
              "mask_recipe": None if job.mask else recipe,
              "densepose": str(job.densepose) if job.densepose else "computed",
              "notes": [f"{p.path}: {n}" for p in (person, garment) for n in p.notes]}
    return sample, person, placement, record


def pose_sample(runner: ImageGenerator, job: Job) -> tuple[dict, Photo, Placement, dict]:
    """The same for pose transfer: ``job.person`` is the target photo, ``job.garment`` the reference."""
    size = runner.resolution
    target, reference = load_photo(job.person), load_photo(job.garment)
    for photo in (target, reference):
        check_size(photo, size)
    target_fit, placement = fit(target.image, size, pad="edge")
    reference_fit = fit(reference.image, size, pad="edge")[0]
    iuv = _given_map(job.densepose, target, deepfashion.read_iuv, size)
    if iuv is None:
        iuv = iuv_map(runner.preprocessor.densepose(target_fit), runner.preprocessor.weights.iuv_scaling)
    ones = np.ones(size, np.uint8)
    sample = contract_sample(target_fit, reference_fit, ones, deepfashion.iuv_to_tensor(iuv), ones,
                             person_id=job.person.name, reference_id=job.garment.name)
    record = {"task": "pose", "reference": str(job.garment), "target_pose": str(job.person),
              "mask": "all ones (the Leffa app's pose-transfer mask)",
              "densepose": str(job.densepose) if job.densepose else "computed",
              "notes": [f"{p.path}: {n}" for p in (target, reference) for n in p.notes]}
    return sample, target, placement, record


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="Lightning .ckpt or released-layout .pth/.safetensors")
    parser.add_argument("--random-weights", action="store_true",
                        help="without --checkpoint: the tiny model with random weights (a pipeline check; the "
                             "images are noise)")
    parser.add_argument("--allow-other-task", action="store_true",
                        help="use a checkpoint recorded as trained for the other task (try-on / pose transfer)")
    parser.add_argument("--base-model", help="diffusers SD-inpainting folder giving the checkpoint's architecture")
    parser.add_argument("--lora", type=Path, help="a LoRA adapter (a LoRA run's export/leffa_lora.safetensors), "
                                                  "merged into --checkpoint's weights (its base)")
    parser.add_argument("--lora-scale", type=float, help="scale of the adapter (default 1)")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="output folder (default outputs/)")
    parser.add_argument("--resolution", type=parse_size, default=(1024, 768), help="HxW the model runs at")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=2.5)
    parser.add_argument("--scheduler", default="ddpm", choices=SCHEDULERS)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reference-acceleration", action="store_true",
                        help="run the reference UNet once (about 30%% faster)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    add_weight_arguments(parser)


def _settings(args: argparse.Namespace) -> SamplerSettings:
    """The sampler settings, range-checked (``ValueError``) before anything is loaded."""
    if not math.isfinite(args.guidance_scale):
        raise ValueError(f"--guidance-scale {args.guidance_scale}: expected a finite number >= 0")
    if args.checkpoint is None and not args.random_weights:
        raise ValueError("no --checkpoint: give the trained weights (or --random-weights for a pipeline check "
                         "with the tiny model's random weights)")
    if args.checkpoint is not None and args.random_weights:
        raise ValueError("--random-weights and --checkpoint exclude each other")
    try:
        return SamplerSettings(scheduler=args.scheduler, num_inference_steps=args.steps,
                               guidance_scale=args.guidance_scale, repaint=getattr(args, "repaint", False),
                               reference_acceleration=args.reference_acceleration)
    except ValueError as error:
        raise ValueError(str(error).replace("steps (num_inference_steps)", "--steps")
                         .replace("guidance scale", "--guidance-scale")) from None


class OutputWriteError(RuntimeError):
    """An image or settings file that could not be written: the run stops."""


def _run(args: argparse.Namespace, jobs: list[Job], make_sample, skipped: int, task: str) -> int:
    runner = ImageGenerator(args, _settings(args), task)
    for job in jobs:
        try:
            prepared = make_sample(runner, job)
        except (PhotoError, NoPersonError, DataFileError) as error:  # this image only; the others go on
            print(f"skipped {job.person.name} + {job.garment.name}: {error}", file=sys.stderr)
            skipped += 1
            continue
        try:
            print(runner.generate(job.output_name, *prepared))
        except OSError as error:
            raise OutputWriteError(f"cannot write {error.filename or args.out}: {error.strerror or error}; "
                                   "stopped (the images written so far are complete)") from None
    return exit_codes.SKIPPED if skipped else exit_codes.DONE


def _tryon_arguments(parser: argparse.ArgumentParser, try_on: list) -> None:
    parser.add_argument("--person", type=Path, required=True, help="person photo or folder of them")
    parser.add_argument("--garment", type=Path, required=True, help="garment photo or folder of them")
    parser.add_argument("--category", default="upper_body", choices=mask_recipes.CATEGORIES)
    parser.add_argument("--dataset", choices=[spec.name for spec in try_on],
                        help="what the checkpoint was trained on: its DensePose encoding and mask recipe "
                             "(default: the first of " + ", ".join(spec.name for spec in try_on)
                             + " that tries on the category)")
    parser.add_argument("--mask", type=Path, help="inpaint mask (white = repaint) of a single person photo")
    parser.add_argument("--mask-recipe", choices=sorted(mask_recipes.RECIPES),
                        help="recipe of computed masks (default: the Leffa app's for --dataset: "
                             + ", ".join(f"{spec.app_mask_recipe} for {spec.name}" for spec in try_on) + ")")
    parser.add_argument("--densepose", type=Path, help="DensePose map of a single person photo")
    parser.add_argument("--repaint", action="store_true", help="keep the person outside a softened mask")


def _resolve_dataset(parser: argparse.ArgumentParser, args: argparse.Namespace, try_on: list) -> None:
    """``--dataset`` (default: the first try-on dataset of the category) and its mask recipe."""
    args.dataset = args.dataset or next(spec.name for spec in try_on if args.category in spec.categories)
    spec = registry.get(args.dataset)
    if args.category not in spec.categories:
        others = [other.name for other in try_on if args.category in other.categories]
        parser.error(f"--category {args.category}: {spec.title} models try on {', '.join(spec.categories)} "
                     f"garments only (use a model of another dataset: --dataset {' or '.join(others)})")
    args.mask_recipe = args.mask_recipe or spec.app_mask_recipe


def _main(argv: Sequence[str] | None, prog: str) -> int:
    tryon = prog == "leffa-pl-tryon"
    try_on = [spec for spec in registry.specs() if spec.task == "tryon"]
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=exit_codes.EPILOG)
    if tryon:
        _tryon_arguments(parser, try_on)
    else:
        parser.add_argument("--reference", type=Path, required=True, help="reference photo or folder of them")
        parser.add_argument("--target-pose", type=Path, required=True, help="target photo or folder of them")
        parser.add_argument("--target-densepose", type=Path,
                            help="IUV map (U*255, V*255, I) of a single target photo")
    _common_arguments(parser)
    args = parser.parse_args(argv)
    if args.lora_scale is not None and args.lora is None:
        parser.error("--lora-scale needs --lora")
    args.lora_scale = 1.0 if args.lora_scale is None else args.lora_scale
    if tryon:
        _resolve_dataset(parser, args, try_on)
        if args.mask is None:
            print(f"{prog}: masks by mask recipe {mask_recipes.get(args.mask_recipe).describe()}", file=sys.stderr)
        people, garments, given = args.person, args.garment, (args.mask, args.densepose)
    else:
        people, garments, given = args.target_pose, args.reference, (None, args.target_densepose)
    try:
        _settings(args)  # before any listing or loading
        ignored: list[str] = []
        jobs = [Job(p, g, *given) for p in _photos(people, ignored) for g in _photos(garments, ignored)]
        for line in ignored:
            print(f"skipped {line}", file=sys.stderr)
        if any(given) and people.is_dir():
            raise PhotoError(people, "given masks or DensePose maps belong to one photo, not a folder")
        if not jobs:
            raise PhotoError(people, "no photos")
        check_outputs(jobs)
        reason = unwritable_reason(args.out)
        if reason is not None:
            print(f"{prog}: {args.out}: the output folder cannot be written ({reason}) (--out)", file=sys.stderr)
            return exit_codes.CANNOT_WRITE
        make = (lambda runner, job: tryon_sample(runner, job, args.dataset, args.category, args.mask_recipe)) \
            if tryon else pose_sample
        return _run(args, jobs, make, len(ignored), "tryon" if tryon else "pose")
    except OutputWriteError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return exit_codes.CANNOT_WRITE
    except (PhotoError, CheckpointError, WeightsNotFoundError, ValueError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return exit_codes.CANNOT_START


def tryon_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, "leffa-pl-tryon")


def pose_main(argv: Sequence[str] | None = None) -> int:
    return _main(argv, "leffa-pl-pose")


if __name__ == "__main__":
    sys.exit(tryon_main())
