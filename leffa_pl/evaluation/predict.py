"""Generate the images of a split's pairs with Lightning's predict loop: resumable, seeded per pair, DDP.

Output files are ``<reference>__to__<person>.png`` (``leffa-pl-score``'s naming: the part after ``__to__``
is the ground-truth id). Each part is the id without its image suffix (``.jpg``, ``.jpeg``, ``.png``), with
every character outside ``A-Z a-z 0-9 . _ -`` (path separators included) replaced by ``_`` and ``__to__``
inside an id shortened to ``_to_``: ``00006_00.jpg`` -> ``00006_00``, ``a/b c.jpg`` -> ``a_b_c``.

A run first lists the pairs whose PNG is missing and generates only those, so an interrupted run resumes
where it stopped; PNGs are written atomically (temporary file, then rename), so a file that exists is whole.
``prediction.json`` records the model (a description and the SHA-256 of its weights), resolution, sampler settings
and seed: resuming with others is refused, so images of a retrained checkpoint at the same path are never mixed
with the old ones. A damaged PNG found there is reported with "delete it and rerun".
Every pair has its own generator, seeded from the seed and its ids, so an image does not depend on the batch
it fell in or on the number of devices.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, Subset

from leffa_pl.atomic_write import atomic_write, remove_stale_temporaries
from leffa_pl.data.file_writers import write_png
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.evaluation.score import PREDICTION_RECORD, TARGET_SEPARATOR
from leffa_pl.metrics.suite import quantize_images
from leffa_pl.model.checkpoint import weights_fingerprint
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.sampler import LeffaSampler, SamplerSettings

ID_SUFFIXES = (".jpg", ".jpeg", ".png")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MANIFEST = PREDICTION_RECORD
log = logging.getLogger(__name__)


def safe_id(identifier: str) -> str:
    """An id as a file-name part (see the module docstring)."""
    stem = identifier
    if stem.lower().endswith(ID_SUFFIXES):
        stem = stem.rsplit(".", 1)[0]
    safe = _UNSAFE.sub("_", stem).replace(TARGET_SEPARATOR, "_to_")
    if safe.strip(".") == "":
        raise ValueError(f"id {identifier!r} gives no usable file name")
    return safe


def output_name(person_id: str, reference_id: str) -> str:
    """``<reference>__to__<person>.png``."""
    return f"{safe_id(reference_id)}{TARGET_SEPARATOR}{safe_id(person_id)}.png"


def pair_seed(seed: int, person_id: str, reference_id: str) -> int:
    """The generator seed of one pair."""
    return zlib.crc32(f"{seed}:{reference_id}:{person_id}".encode())


# --------------------------------------------------------------------------------------------- plan
@dataclass
class PredictionPlan:
    """The pairs of a dataset, their output files, and which are still to be generated."""

    out_dir: Path
    names: list[str]  # output file name per dataset index
    unique: list[int]  # first index of each distinct output (repeated pairs are generated once)
    pending: list[int]  # indices of ``unique`` whose PNG does not exist yet

    @property
    def files(self) -> list[Path]:
        """The output PNG of every distinct pair, in dataset order."""
        return [self.out_dir / self.names[index] for index in self.unique]


def plan_predictions(dataset: PairDataset, out_dir: str | os.PathLike) -> PredictionPlan:
    """Output names of all pairs and those still missing. Two different pairs with one name is an error."""
    out_dir = Path(out_dir)
    if not isinstance(dataset, PairDataset):
        raise TypeError(f"{type(dataset).__name__} is not a leffa_pl.data.pair_dataset.PairDataset: prediction "
                        "needs the ids of a pair (sample_ids) before reading it")
    names, owner, unique, clashes = [], {}, [], []
    for index in range(len(dataset)):
        ids = dataset.sample_ids(index)
        name = output_name(*ids)
        names.append(name)
        if name not in owner:
            owner[name] = ids
            unique.append(index)
        elif owner[name] != ids:
            clashes.append(f"{owner[name]} and {ids} -> {name}")
    if clashes:
        raise ValueError(f"different pairs map to one output file: {'; '.join(clashes[:5])}")
    pending = [index for index in unique if not (out_dir / names[index]).is_file()]
    return PredictionPlan(out_dir, names, unique, pending)


class OutputFolderError(ValueError):
    """An output folder holding images generated with other settings."""


def check_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Record how the images of ``out_dir`` are generated (``prediction.json``); resuming into a folder whose
    images came from other weights, resolution, sampler or seed is refused, as the PNGs would be mixed. The
    model's description (its path) is for people: the weights' fingerprint decides."""
    path = out_dir / MANIFEST
    wanted = json.loads(json.dumps(manifest))
    if not path.is_file():
        with atomic_write(path) as temporary:
            temporary.write_text(json.dumps(wanted, indent=2) + "\n")
        return
    stored = json.loads(path.read_text())
    changed = [f"{key}: {stored.get(key)!r} there, {value!r} now" for key, value in wanted.items()
               if key != "model" and stored.get(key) != value]
    if changed:
        raise OutputFolderError(f"{out_dir}: holds images generated with other settings "
                                f"({'; '.join(changed)}). Give another output folder, or empty this one to "
                                "start again")


def check_written_pngs(plan: PredictionPlan) -> None:
    """PNGs already in the folder are complete (written atomically) unless damaged since: check their chunk
    checksums (PIL ``verify``, no decoding) before they are kept and scored."""
    pending = set(plan.pending)
    for index in plan.unique:
        path = plan.out_dir / plan.names[index]
        if index in pending:
            continue
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # PIL raises many types on damaged files; all mean the same here
            raise OutputFolderError(f"{path}: a damaged PNG in the output folder ({error}); delete it and rerun: "
                                    "the missing image is generated again") from None


class ShardSampler(DistributedSampler):
    """Indices ``rank::num_replicas`` in order, without the padding of ``DistributedSampler``.

    Padding would give some pairs twice (written twice, concurrently, and counted twice). Lightning's own
    predict sampler (``UnrepeatedDistributedSampler``) does not pad either but refuses a rank with no
    sample, which happens when fewer pairs remain than there are devices; a rank may be idle here
    (``PairPredictionData`` allows it), as prediction has no collective per batch. Lightning leaves a
    ``DistributedSampler`` it is given alone.
    """

    def __init__(self, dataset: Subset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class PairPredictionData(pl.LightningDataModule):
    """The missing pairs of a data module's predict split (``predict_dataloader().dataset``), by rank.

    The plan is made on rank 0 and broadcast, so every rank shards the same list even when files appear
    while the ranks start.
    """

    def __init__(self, source: pl.LightningDataModule, out_dir: str | os.PathLike, batch_size: int = 1,
                 num_workers: int = 0, manifest: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.source, self.out_dir, self.manifest = source, Path(out_dir), dict(manifest or {})
        self.batch_size, self.num_workers = batch_size, num_workers
        self.dataset: PairDataset | None = None
        self.plan: PredictionPlan | None = None
        self.allow_zero_length_dataloader_with_multiple_devices = True  # see ShardSampler

    def setup(self, stage: str | None = None) -> None:
        self.source.setup("predict")
        self.dataset = self.source.predict_dataloader().dataset
        plan: PredictionPlan | Exception | None = None
        if self.trainer is None or self.trainer.is_global_zero:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                check_manifest(self.out_dir, self.manifest)
                remove_stale_temporaries(self.out_dir, "*.png")  # PNGs an interrupted run never renamed
                plan = plan_predictions(self.dataset, self.out_dir)
                check_written_pngs(plan)
            except (OutputFolderError, ValueError, TypeError) as error:
                plan = error  # raised on every rank below, so that none waits for the others
        if self.trainer is not None:
            plan = self.trainer.strategy.broadcast(plan, src=0)
        if isinstance(plan, Exception):
            raise plan
        self.plan = plan

    def predict_dataloader(self) -> DataLoader:
        subset = Subset(self.dataset, self.plan.pending)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return DataLoader(subset, batch_size=self.batch_size, sampler=ShardSampler(subset, world, rank),
                          num_workers=self.num_workers, pin_memory=torch.accelerator.is_available())


# ------------------------------------------------------------------------------------ lightning parts
class LeffaPredictor(pl.LightningModule):
    """Generates a batch of the data contract with ``LeffaSampler``; one generator per pair."""

    def __init__(self, model: LeffaModel, settings: SamplerSettings | None = None, seed: int = 0,
                 description: str = "") -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.settings = settings or SamplerSettings()
        self.seed = seed
        self.description = description  # what the model is (``load_model``), recorded with the images
        self.fingerprint = weights_fingerprint(self.model.state_dict())  # recorded too: decides a resume
        self.sampler = LeffaSampler(self.model, self.settings)

    def generators(self, batch: Mapping[str, Any]) -> list[torch.Generator]:
        """CPU generators, so that a seed gives the same noise on any device."""
        return [torch.Generator().manual_seed(pair_seed(self.seed, person_id, reference_id))
                for person_id, reference_id in zip(batch["person_id"], batch["reference_id"])]

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int,
                     dataloader_idx: int = 0) -> dict[str, Any]:
        images = self.sampler(batch, self.generators(batch))
        return {"images": quantize_images(images).cpu(), "person_id": list(batch["person_id"]),
                "reference_id": list(batch["reference_id"])}


class PNGWriter(BasePredictionWriter):
    """Writes each predicted image to ``out_dir / output_name(person_id, reference_id)`` as it comes.

    On SIGTERM it stops after writing the batch in progress (Lightning notes the signal but its predict loop
    would go on to the end) by raising Lightning's ``SIGTERMException``: what is written stays, a rerun resumes.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        for image, person_id, reference_id in zip(prediction["images"], prediction["person_id"],
                                                  prediction["reference_id"]):
            write_png(self.out_dir / output_name(person_id, reference_id),  # uint8 [3, H, W] as HWC
                      np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
        if trainer.received_sigterm:
            raise SIGTERMException


# ---------------------------------------------------------------------------------------- entry
@dataclass
class PredictionOptions:
    """How to run the predict loop."""

    batch_size: int = 1
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = True


def predict_pairs(source: pl.LightningDataModule, predictor: LeffaPredictor, out_dir: str | os.PathLike,
                  options: PredictionOptions | None = None) -> PredictionPlan | None:
    """Generate every missing PNG of ``source``'s predict split into ``out_dir``.

    Returns the final plan on rank 0 (``plan.files``: one PNG per distinct pair, all present) and None on
    the other ranks, which under DDP run the calling script too and should stop there.
    """
    options = options or PredictionOptions()
    manifest = {"model": predictor.description, "weights_sha256": predictor.fingerprint,
                "resolution": list(getattr(source, "resolution", ())), "split": getattr(source, "test_split", None),
                "sampler": asdict(predictor.settings), "seed": predictor.seed}
    data = PairPredictionData(source, out_dir, options.batch_size, options.num_workers, manifest)
    trainer = pl.Trainer(accelerator=options.accelerator, devices=options.devices, strategy=options.strategy,
                         precision=options.precision, logger=False, enable_checkpointing=False,
                         enable_progress_bar=options.progress, enable_model_summary=False,
                         callbacks=[PNGWriter(out_dir)], use_distributed_sampler=False)
    trainer.predict(predictor, datamodule=data, return_predictions=False)
    trainer.strategy.barrier("leffa_pl.predict: all written")  # other ranks may still be writing
    if not trainer.is_global_zero:
        return None
    plan = data.plan
    log.info("%s: %d pairs, %d already written, %d generated now", out_dir, len(plan.unique),
             len(plan.unique) - len(plan.pending), len(plan.pending))
    plan = plan_predictions(data.dataset, out_dir)
    if plan.pending:
        raise RuntimeError(f"{out_dir}: {len(plan.pending)} PNGs still missing after prediction, "
                           f"e.g. {plan.names[plan.pending[0]]}")
    return plan
