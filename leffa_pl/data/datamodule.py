"""LightningDataModules: a dataset-independent base and the VITON-HD, DressCode and DeepFashion modules.

The base owns what every dataset shares: the current stage (``resolution``, ``batch_size``, changed
with ``set_stage`` and used by the next ``*_dataloader()`` call) and the training loader (both in
``StagedDataModule``, which ``MixedDataModule`` shares), loader settings, the validation
subsets, augmentation settings, and the file check in ``setup()`` that fails before training starts
with the checker's report. A dataset plugs in by reading its pair lists (``_read_pairs``) and building
a ``PairDataset`` for a split (``_dataset``), which declares the files of each pair (``files``).

Validation uses small evenly spaced subsets of the test splits in ``val_splits`` (try-on: paired then
unpaired: ``dataloader_idx`` 0 and 1; DeepFashion has one test pairing: one loader, index 0), named by
``val_names``; ``test_dataloader``/``predict_dataloader`` serve the whole ``test_split``.

The training loader is built once per stage (``TrainLoaderCache``): the stage schedule has Lightning ask for it
every epoch, and gets the same loader back while the resolution and batch size stay, so its workers
(``persistent_workers``, on by default) live through the stage; a stage of another resolution or batch size
builds a new one. Shuffling and augmentation come from one seed per pass (``ResumableDataLoader``), so they are
reproducible under ``lightning.seed_everything(seed)``, do not depend on the workers, and a run resumed mid-epoch
repeats the uninterrupted one. Under DDP the data module builds the DistributedSampler itself (``train_sampler``:
Lightning would re-instantiate the loader at every epoch otherwise); Lightning shards the evaluation loaders.

Constructors take their own settings and pass the rest on as ``**settings`` (keyword arguments only):
LightningCLI (jsonargparse) follows ``super().__init__(..., **settings)`` to the base's signature, so
``--data.init_args.*`` and the YAML configs see every setting with its type and default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from leffa_pl.data import mask_recipes
from leffa_pl.data.files import CheckLevel, DataFileError, DatasetFilesError, FileProblem, FileReport, no_such_folder
from leffa_pl.data.io import walk_files
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.resumable_loader import ResumableDataLoader
from leffa_pl.data.transforms import AugmentConfig
from leffa_pl.datasets.deepfashion import reader as deepfashion
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.vitonhd import reader as vitonhd

if TYPE_CHECKING:
    from leffa_pl.annotators.densepose import DensePoseEstimator


def shuffle_generator(trainer: Any) -> torch.Generator:
    """The training loader's shuffle generator (its pass seeds), seeded by the seed and the optimizer step the
    loader is built at (the state ``ResumableDataLoader`` checkpoints and restores)."""
    step = trainer.global_step if trainer is not None else 0
    return torch.Generator().manual_seed((torch.initial_seed() + 1_000_003 * step) % 2**63)


def train_sampler(dataset: Dataset, trainer: Any) -> DistributedSampler | None:
    """The training shard of this rank under DDP, as Lightning would inject it (its seed, shuffled, set to each
    epoch by Lightning), built here so that Lightning keeps the loader (and its persistent workers) instead of
    re-instantiating it at every epoch; None on one device."""
    if trainer is None or trainer.world_size <= 1:
        return None
    return DistributedSampler(dataset, shuffle=True, seed=int(os.getenv("PL_GLOBAL_SEED", 0)),
                              **trainer.distributed_sampler_kwargs)


class TrainLoaderCache:
    """The training loader of the current stage: ``get`` returns the cached one while the trainer and the key
    (resolution, batch size) are unchanged, so Lightning's per-epoch reload gets the same loader, whose
    persistent workers live on; another key drops it (its workers end) and builds a new one."""

    def __init__(self):
        self._key: tuple | None = None
        self._loader: DataLoader | None = None

    def get(self, trainer: Any, key: tuple, build: Callable[[], DataLoader]) -> DataLoader:
        if self._loader is None or self._key != (id(trainer), key):
            self.clear()  # its workers end once Lightning lets go of it too
            self._loader, self._key = build(), (id(trainer), key)
        return self._loader

    def clear(self) -> None:
        self._loader, self._key = None, None


def build_loader(dataset: Dataset, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    """An evaluation loader (in order) with the data modules' settings; pinned memory only helps (and only
    exists) with an accelerator. Its workers end with each pass: a validation reads a few batches, and
    Lightning builds new evaluation loaders every epoch."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                      pin_memory=pin_memory and torch.accelerator.is_available())


def build_train_loader(dataset: Dataset, trainer: Any, batch_size: int, num_workers: int, pin_memory: bool,
                       persistent_workers: bool) -> ResumableDataLoader:
    """The training loader: shuffled by pass seeds from ``shuffle_generator`` (a DistributedSampler's shard under
    DDP), resumable mid-epoch."""
    sampler = train_sampler(dataset, trainer)
    return ResumableDataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                               num_workers=num_workers, pin_memory=pin_memory and torch.accelerator.is_available(),
                               persistent_workers=persistent_workers and num_workers > 0,
                               shuffle_generator=shuffle_generator(trainer))


class StagedDataModule(LightningDataModule):
    """What every training data module shares (``PersonImageDataModule``, ``MixedDataModule``): the current stage
    (``resolution`` (H, W), ``batch_size``), the loader settings, and the training loader built once per stage from
    ``train_dataset()``. The stage is not in its checkpoint state: ``StageSchedule`` saves it, once, and sets it on
    resume (a checkpoint written before carries ``{resolution, batch_size}`` under the data module's class name,
    which ``LightningDataModule.load_state_dict`` ignores)."""

    def __init__(self, resolution: tuple[int, int], batch_size: int, num_workers: int, pin_memory: bool,
                 persistent_workers: bool):
        super().__init__()
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self._train_loaders = TrainLoaderCache()
        self.set_stage(resolution, batch_size)

    def set_stage(self, resolution: tuple[int, int], batch_size: int) -> None:
        """Use ``resolution`` (H, W) and ``batch_size`` from the next ``*_dataloader()`` call on."""
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.batch_size = int(batch_size)

    def train_dataset(self) -> Dataset:
        """The training samples at the current resolution."""
        raise NotImplementedError

    def train_dataloader(self) -> ResumableDataLoader:
        """Built once per stage: while the resolution and batch size stay, every call (Lightning asks at each
        epoch under the stage schedule) returns the same loader, so persistent workers live through the stage.
        Shuffled and augmented by pass seeds from ``shuffle_generator``, so a resumed run repeats the
        uninterrupted one; under DDP a DistributedSampler shards it (``train_sampler``). Resumable mid-epoch
        (``ResumableDataLoader``)."""
        return self._train_loaders.get(self.trainer, (self.resolution, self.batch_size), lambda: build_train_loader(
            self.train_dataset(), self.trainer, self.batch_size, self.num_workers, self.pin_memory,
            self.persistent_workers))

    def teardown(self, stage: str) -> None:
        self._train_loaders.clear()  # the workers end with the fit


class PersonImageDataModule(StagedDataModule):
    """Shared base of the datasets' modules; subclasses set ``name``, ``val_splits``, ``test_split`` and implement
    ``_read_pairs`` and ``_dataset``."""

    name = "dataset"
    task = ""  # "tryon" or "pose": recorded in checkpoints and exports (model/provenance.py)
    splits: tuple[str, ...] = ()  # every split, walked by the checker
    train_split = "train"
    val_splits: tuple[str, ...] = ()

    def __init__(self, root: str, resolution: tuple[int, int] = (512, 384), batch_size: int = 8,
                 num_workers: int = 4, pin_memory: bool = True, persistent_workers: bool = True,
                 val_size: int = 8, augment: bool = True, flip_p: float = 0.5, affine_p: float = 0.5,
                 color_p: float = 0.5, file_check: CheckLevel = "open", check_workers: int = 8):
        super().__init__(resolution, batch_size, num_workers, pin_memory, persistent_workers)
        self.root = Path(root)
        self.val_size = val_size
        self.augment_config = AugmentConfig(flip_p=flip_p, affine_p=affine_p, color_p=color_p) if augment else None
        self.file_check = file_check
        self.check_workers = check_workers
        self._pairs: dict[str, tuple[list, list[FileProblem]]] = {}
        self._checked: set[str] = set()
        self._announced = False
        self._resize_logged = False

    # -- what a dataset provides ------------------------------------------------------------------
    @property
    def val_names(self) -> list[str]:
        """Names of the validation loaders (TensorBoard tags): ``test_paired`` -> ``paired``."""
        return [split.removeprefix("test_") for split in self.val_splits]

    @property
    def test_split(self) -> str:
        """The split served by ``test_dataloader``/``predict_dataloader``."""
        raise NotImplementedError

    def _read_pairs(self, split: str) -> tuple[list, list[FileProblem]]:
        """Pairs of ``split`` and problems found while resolving them; may raise ``DataFileError``."""
        raise NotImplementedError

    def _dataset(self, split: str, pairs: list, resolution: tuple[int, int], augment: bool) -> PairDataset:
        """The dataset of ``pairs`` of ``split`` at ``resolution``, augmented or not."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line saying which data is used and how (logged once)."""
        return f"{self.name} at {self.root}"

    # -- pairs and files -------------------------------------------------------------------------
    def pairs(self, split: str) -> tuple[list, list[FileProblem]]:
        """Cached pairs of ``split``; a missing or malformed pair file becomes a problem, not an exception."""
        if split not in self._pairs:
            try:
                self._pairs[split] = self._read_pairs(split)
            except DataFileError as error:
                self._pairs[split] = ([], [FileProblem(error.path, error.problem)])
        return self._pairs[split]

    def _val_pairs(self, split: str) -> list:
        pairs = self.pairs(split)[0]
        if len(pairs) <= self.val_size:
            return pairs
        return [pairs[i] for i in np.unique(np.linspace(0, len(pairs) - 1, self.val_size).round().astype(int))]

    def _walk(self, selection: dict[str, list], level: CheckLevel, workers: int) -> FileReport:
        """Walk the files of the selected pairs. In a process group (DDP) every rank walks every world-size-th
        pair and all ranks get the merged report, so they all pass or all raise; every rank must call this."""
        files, problems = [], []
        for split, pairs in selection.items():
            problems += self.pairs(split)[1]
            files += self._dataset(split, pairs, self.resolution, augment=False).pair_files()
        grouped = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if grouped else (0, 1)
        report = walk_files(self.name, self.root, files[rank::world], level=level,
                            problems=list(dict.fromkeys(problems)), workers=workers)
        if world == 1:
            return report
        shares: list[FileReport | None] = [None] * world
        torch.distributed.all_gather_object(shares, report)
        return FileReport.merged(shares)

    def check_files(self, splits: Sequence[str], level: CheckLevel = "decode", workers: int = 8) -> FileReport:
        """Walk every file the pairs of ``splits`` need (the ``leffa-pl-check-data`` command)."""
        return self._walk({split: self.pairs(split)[0] for split in splits}, level, workers)

    # -- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Check the files of the splits this stage uses; raise ``DatasetFilesError`` listing every problem."""
        if not self.root.is_dir():
            raise NotADirectoryError(no_such_folder(self.root, f"{self.name} dataset folder (root)"))
        selection: dict[str, list] = {}
        if stage in (None, "fit"):
            selection[self.train_split] = self.pairs(self.train_split)[0]
        if stage in (None, "fit", "validate"):
            selection.update({split: self._val_pairs(split) for split in self.val_splits})
        if stage in (None, "test", "predict"):
            selection[self.test_split] = self.pairs(self.test_split)[0]
        selection = {split: pairs for split, pairs in selection.items() if split not in self._checked}
        if selection:
            report = self._walk(selection, self.file_check, self.check_workers)
            empty = [split for split, pairs in selection.items() if not pairs and not self.pairs(split)[1]]
            if not report.ok:
                raise DatasetFilesError(report)
            if empty:
                raise ValueError(f"{self.name} at {self.root}: no pairs in split(s) {empty}")
            if report.resized and not self._resize_logged:
                rank_zero_info(f"[leffa_pl.data] {self.name}: {report.resize_note()}")
                self._resize_logged = True
            self._checked.update(selection)
        if not self._announced:
            rank_zero_info(f"[leffa_pl.data] {self.describe()}")
            self._announced = True

    def _loader(self, dataset: Dataset) -> DataLoader:
        return build_loader(dataset, self.batch_size, self.num_workers, self.pin_memory)

    def train_dataset(self) -> PairDataset:
        """The training split at the current resolution, augmented as configured."""
        pairs = self.pairs(self.train_split)[0]
        return self._dataset(self.train_split, pairs, self.resolution, augment=self.augment_config is not None)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._dataset(split, self._val_pairs(split), self.resolution, augment=False))
                for split in self.val_splits]

    def test_dataloader(self) -> DataLoader:
        pairs = self.pairs(self.test_split)[0]
        return self._loader(self._dataset(self.test_split, pairs, self.resolution, augment=False))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class TryOnDataModule(PersonImageDataModule):
    """Try-on data (VITON-HD, DressCode): train, test paired and test unpaired; validation on both test
    pairings; ``test_pairing`` chooses the split of ``test_dataloader``/``predict_dataloader``."""

    task = "tryon"
    splits = ("train", "test_paired", "test_unpaired")
    val_splits = ("test_paired", "test_unpaired")

    def __init__(self, root: str, test_pairing: Literal["paired", "unpaired"] = "paired", **settings: Any):
        """``settings``: those of ``PersonImageDataModule`` (resolution, batch size, loaders, augmentation,
        file check)."""
        super().__init__(root=root, **settings)
        self.test_pairing = test_pairing

    @property
    def test_split(self) -> str:
        return f"test_{self.test_pairing}"


class VitonHDDataModule(TryOnDataModule):
    """VITON-HD (``zalando-hd-resized``). ``mask_source``: ``auto`` uses ``agnostic-mask/`` when the split
    has it, else computes masks from parsing + OpenPose with ``mask_recipe`` (``mask_recipes``: ``leffa-hd``,
    the Leffa app's, by default); ``precomputed``/``computed`` force one."""

    name = "VITON-HD"

    def __init__(self, root: str = "data/zalando-hd-resized",
                 mask_source: Literal["auto", "precomputed", "computed"] = "auto",
                 mask_recipe: str = vitonhd.DEFAULT_MASK_RECIPE, **settings: Any):
        """``settings``: those of ``TryOnDataModule`` and ``PersonImageDataModule``."""
        super().__init__(root=root, **settings)
        self.save_hyperparameters()
        self.mask_source = mask_source
        self.mask_recipe = mask_recipes.get(mask_recipe)

    def _read_pairs(self, split: str) -> tuple[list, list[FileProblem]]:
        return vitonhd.read_pairs(self.root, split), []

    def _dataset(self, split: str, pairs: list, resolution: tuple[int, int], augment: bool) -> PairDataset:
        mask_source = vitonhd.resolve_mask_source(self.root, split, self.mask_source)
        return vitonhd.VitonHDDataset(
            self.root, pairs, resolution, mask_source=mask_source, with_flow=vitonhd.has_flow(self.root, split),
            augment=vitonhd.vitonhd_augment(self.augment_config) if augment and self.augment_config else None,
            mask_recipe=self.mask_recipe.name)

    def describe(self) -> str:
        sources = {split: vitonhd.resolve_mask_source(self.root, split, self.mask_source)
                   for split in ("train", "test_paired")}
        masks = ", ".join(f"{'train' if s == 'train' else 'test'}: {src}" for s, src in sources.items())
        flow = " ground-truth flow: yes." if vitonhd.has_flow(self.root, "train") else ""
        return (f"VITON-HD at {self.root}; inpaint masks ({masks}; precomputed = {vitonhd.FILES['mask'][0]}/, "
                f"computed = mask recipe {self.mask_recipe.describe()}).{flow}")


class DressCodeDataModule(TryOnDataModule):
    """DressCode for one category or ``all`` (root pair files, category found per id). Masks are computed with
    ``mask_recipe`` (``mask_recipes``) for the garment's category."""

    name = "DressCode"

    def __init__(self, root: str = "data/DressCode", category: dresscode.Category = "all",
                 mask_recipe: str = dresscode.DEFAULT_MASK_RECIPE, **settings: Any):
        """``settings``: those of ``TryOnDataModule`` and ``PersonImageDataModule``."""
        super().__init__(root=root, **settings)
        self.save_hyperparameters()
        if category not in dresscode.CATEGORIES + ("all",):
            raise ValueError(f"category must be one of {dresscode.CATEGORIES + ('all',)}, got {category!r}")
        self.category = category
        self.mask_recipe = mask_recipes.get(mask_recipe)

    def _read_pairs(self, split: str) -> tuple[list, list[FileProblem]]:
        return dresscode.read_pairs(self.root, split, self.category)

    def _dataset(self, split: str, pairs: list, resolution: tuple[int, int], augment: bool) -> PairDataset:
        return dresscode.DressCodeDataset(
            self.root, pairs, resolution, with_flow=dresscode.has_flow(self.root, split, self.category),
            augment=dresscode.dresscode_augment(self.augment_config) if augment and self.augment_config else None,
            mask_recipe=self.mask_recipe.name)

    def describe(self) -> str:
        flow = " ground-truth flow: yes." if dresscode.has_flow(self.root, "train", self.category) else ""
        return (f"DressCode ({self.category}) at {self.root}; inpaint masks computed from label maps + keypoints "
                f"with mask recipe {self.mask_recipe.describe()} (no precomputed masks in DressCode).{flow}")


DENSEPOSE_REMEDY = ("missing DensePose maps are computed by the data module with `compute_densepose: true` "
                    "(`--data.init_args.compute_densepose=true`; DensePose R50-FPN TorchScript from "
                    "`densepose_model` or the Hugging Face cache), or offline with detectron2 DensePose "
                    "R_50_FPN_s1x in the encoding of deepfashion.py")


class DeepFashionDataModule(PersonImageDataModule):
    """DeepFashion In-shop pose transfer (``deepfashion.py``): reference = ``from``, person = ``to``, DensePose
    IUV of ``to``, inpaint mask all ones, loss region = dilated DensePose foreground.

    Splits ``train`` and ``test`` (one test pairing: validation is one loader over ``val_size`` evenly spaced
    test pairs). Pairs whose images or target DensePose map are missing are skipped, and the count is logged
    as a warning when the split's pairs are first read; ``leffa-pl-check-data ROOT --dataset deepfashion``
    lists those files and exits 1. No horizontal flips (see ``deepfashion.py``).
    """

    name = "DeepFashion"
    task = "pose"
    splits = deepfashion.SPLITS
    val_splits = ("test",)

    def __init__(self, root: str = "data/deepfashion", resolution: tuple[int, int] = (256, 176),
                 compute_densepose: bool = False, densepose_model: str | None = None, densepose_device: str = "auto",
                 densepose_iuv_scaling: str = "scale", **settings: Any):
        """``compute_densepose``: ``prepare_data`` computes the missing DensePose maps (off by default: on the
        whole dataset that is hours of DensePose); ``densepose_model``: the TorchScript DensePose R50-FPN export
        (default: the Hugging Face cache, else a download); ``densepose_device``: ``auto`` = CUDA when present;
        ``densepose_iuv_scaling``: U, V of computed maps as ``scale`` (U*255, the dataset encoding) or ``minmax``
        (the Leffa app's ``predict_iuv``; docs/parsing_densepose.md). ``settings``: those of
        ``PersonImageDataModule`` except ``flip_p`` (no flips, see above)."""
        super().__init__(root=root, resolution=resolution, flip_p=0.0, **settings)
        self.save_hyperparameters()
        self.compute_densepose = compute_densepose
        self.densepose_model = densepose_model
        self.densepose_device = densepose_device
        self.densepose_iuv_scaling = densepose_iuv_scaling
        self._split_pairs: dict[str, deepfashion.SplitPairs] = {}

    @property
    def test_split(self) -> str:
        return "test"

    def _read_pairs(self, split: str) -> tuple[list, list[FileProblem]]:
        read = deepfashion.read_pairs(self.root, split)
        self._split_pairs[split] = read
        if read.skipped_pairs:
            rank_zero_warn(f"[leffa_pl.data] DeepFashion {split}: {read.skip_summary()}; "
                           f"`leffa-pl-check-data {self.root} --dataset deepfashion` lists them"
                           + (f"; {DENSEPOSE_REMEDY}" if read.missing_densepose else ""))
        return read.pairs, read.problems

    def prepare_data(self) -> None:
        """With ``compute_densepose``, compute the DensePose maps that are missing, resumably (maps that exist are
        kept; each is written atomically). Lightning calls this on local rank 0 only, while the other ranks wait,
        before any ``setup``; the network is loaded only when a map is missing."""
        if not self.compute_densepose:
            return
        if not self.root.is_dir():
            raise NotADirectoryError(no_such_folder(self.root, f"{self.name} dataset folder (root)"))
        from leffa_pl.datasets.deepfashion import densepose_fill  # torchvision and the network only when asked for

        report = densepose_fill.fill_missing_maps(self.root, self.densepose_estimator,
                                                  scaling=self.densepose_iuv_scaling)
        rank_zero_info(f"[leffa_pl.data] DeepFashion at {self.root}: {report.summary()}")
        for error in report.unreadable:
            rank_zero_warn(f"[leffa_pl.data] DeepFashion DensePose not computed: {error}")
        # pairs read before now skipped the targets whose maps were missing
        self._pairs.clear()
        self._split_pairs.clear()
        self._checked.clear()

    def densepose_estimator(self) -> DensePoseEstimator:
        """The DensePose network ``prepare_data`` runs (weights looked up as ``leffa-pl-prepare`` does)."""
        from leffa_pl.datasets.deepfashion import densepose_fill

        return densepose_fill.estimator(self.densepose_model, self.densepose_device)

    def split_pairs(self, split: str) -> deepfashion.SplitPairs:
        """Everything read for ``split``: usable pairs, problems, skipped pairs and missing files, keypoints."""
        self.pairs(split)
        return self._split_pairs.get(split, deepfashion.SplitPairs(pairs=[]))

    def _dataset(self, split: str, pairs: list, resolution: tuple[int, int], augment: bool) -> PairDataset:
        augment_with = self.augment_config if augment else None
        return deepfashion.DeepFashionDataset(
            self.root, pairs, resolution, layout=deepfashion.image_layout(self.root, split),
            keypoints=self.split_pairs(split).keypoints,
            augment=deepfashion.deepfashion_augment(augment_with) if augment_with else None)

    def check_files(self, splits: Sequence[str], level: CheckLevel = "decode", workers: int = 8) -> FileReport:
        """The base walk plus the files whose absence made pairs be skipped (so the command exits 1)."""
        report = super().check_files(splits, level, workers)
        for split in splits:
            read = self.split_pairs(split)
            report.problems += read.missing
            if read.skipped_pairs:
                report.notes.append(f"{split}: {read.skip_summary()}")
        if any(self.split_pairs(split).missing_densepose for split in splits):
            report.notes.append(DENSEPOSE_REMEDY)
        return report

    def describe(self) -> str:
        layout = deepfashion.image_layout(self.root, "train")
        images = (", ".join(f"{deepfashion.split_folder(split)}/" for split in deepfashion.SPLITS) if layout == "flat"
                  else f"{deepfashion.NESTED_FOLDER}/ (nested)")
        return (f"DeepFashion at {self.root}; images from {images}, DensePose IUV from "
                f"{deepfashion.DENSEPOSE_FOLDER}/; inpaint mask all ones, loss region = dilated DensePose "
                "foreground; no horizontal flips.")
