"""Training on several data modules at once (e.g. VITON-HD + DressCode) with sampling weights.

``MixedDataModule`` holds data modules (``PersonImageDataModule``s, configured as usual) and trains on an epoch
of ``epoch_size`` samples of which dataset i contributes exactly its share ``weights[i] / sum(weights)``
(largest remainder rounding). Which samples of a dataset a pass uses is the pass's *plan* (``MixedDataset``):
random permutations of the dataset one after another, so each sample is used once before any is used twice,
drawn from the pass seed. The training loader shuffles the plan's positions like any data module's
(``ResumableDataLoader``: one pass seed orders the positions, plans them and seeds the augmentations), so a
batch mixes the datasets, a run resumed mid-epoch goes on with the same samples in the same order, and under
DDP a DistributedSampler shards the positions (every rank draws the same plan under ``seed_everything``), which
keeps the shares. The loader is built once per stage, as a single module's.

Every sample follows the one contract (``contract.py``); the optional ``flow`` is kept only when every
dataset has it (a batch's samples must have the same keys). ``set_stage`` switches every module's resolution
and batch size. Validation runs each module's own loaders one after another, named ``<name>/<loader>``
(e.g. ``vitonhd/paired``); ``ValidationScores`` scores the first one. Test and prediction stay per dataset
(``leffa-pl-evaluate``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from leffa_pl.data.datamodule import PersonImageDataModule, StagedDataModule
from leffa_pl.data.pair_dataset import PairDataset
from leffa_pl.data.resumable_loader import SampleKey
from leffa_pl.datasets import registry


def shares(weights: Sequence[float], total: int) -> list[int]:
    """``total`` split in proportion to ``weights``: whole numbers summing to ``total`` (largest remainder)."""
    exact = [total * weight / sum(weights) for weight in weights]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


class MixedDataset(Dataset):
    """A pass's plan over several datasets: position -> (dataset, index), ``counts[i]`` positions of dataset i,
    each dataset's indices drawn as consecutive random permutations. The plan is drawn from the pass seed of
    the ``SampleKey`` it is indexed with (workers draw it once per pass; every DDP rank draws the same), so it
    changes every pass while the dataset object, which persistent workers hold, stays the same."""

    def __init__(self, datasets: Sequence[PairDataset], counts: Sequence[int]):
        empty = [i for i, (dataset, count) in enumerate(zip(datasets, counts)) if count and not len(dataset)]
        if empty:
            raise ValueError(f"mixed datasets {empty} have no samples")
        self.datasets, self.counts = list(datasets), list(counts)
        self.with_flow = all(dataset.with_flow for dataset in self.datasets)
        self._plan: tuple[int, list[tuple[int, int]]] | None = None  # (pass seed, plan)

    def plan(self, seed: int) -> list[tuple[int, int]]:
        """The plan of the pass with seed ``seed``."""
        if self._plan is None or self._plan[0] != seed:
            generator = torch.Generator().manual_seed(seed)
            plan = []
            for which, (dataset, count) in enumerate(zip(self.datasets, self.counts)):
                passes = math.ceil(count / len(dataset)) if count else 0
                order = [torch.randperm(len(dataset), generator=generator) for _ in range(passes)]
                plan += [(which, index) for index in (torch.cat(order)[:count].tolist() if order else [])]
            self._plan = seed, plan
        return self._plan[1]

    def __len__(self) -> int:
        return sum(self.counts)

    def __getitem__(self, position: int) -> dict:
        """``position`` of the pass of ``position.seed`` (a ``SampleKey``; a plain index: the plan of seed 0)."""
        seed = getattr(position, "seed", 0)
        which, index = self.plan(seed)[position]
        # The sample's own key: its augmentation differs where a pass uses an index twice.
        sample = self.datasets[which][SampleKey(index, (seed + 1_000_003 * int(position)) % 2**63)]
        if not self.with_flow:
            sample.pop("flow", None)
        return sample


class MixedDataModule(StagedDataModule):
    """Several data modules trained on at once (see the module docstring).

    ``datamodules``: the modules (their roots, categories, masks, augmentation and validation settings apply);
    ``weights``: sampling weights, one per module (default: equal); ``names``: the validation loaders' prefixes
    (default: the registry's dataset names, e.g. ``vitonhd``); ``epoch_size``: samples per epoch (default: the
    modules' training samples together). ``resolution`` and ``batch_size`` are the first stage's (the stage
    schedule switches them); the loader settings are those of the mixed training loader (validation loaders
    use each module's own). The training loader, built once per stage, is ``StagedDataModule``'s.
    """

    def __init__(self, datamodules: list[PersonImageDataModule], weights: list[float] | None = None,
                 names: list[str] | None = None, epoch_size: int | None = None,
                 resolution: tuple[int, int] = (512, 384), batch_size: int = 8, num_workers: int = 4,
                 pin_memory: bool = True, persistent_workers: bool = True):
        if not datamodules:
            raise ValueError("MixedDataModule needs at least one data module")
        tasks = sorted({module.task for module in datamodules})
        if len(tasks) != 1:
            raise ValueError(f"MixedDataModule mixes tasks {tasks}: one model learns one task")
        self.task = tasks[0]
        weights = [1.0] * len(datamodules) if weights is None else [float(weight) for weight in weights]
        if len(weights) != len(datamodules) or not all(math.isfinite(w) and w >= 0 for w in weights) or \
                not sum(weights) > 0:
            raise ValueError(f"weights must be {len(datamodules)} finite numbers >= 0, not all 0; got {weights}")
        names = names or [self._registry_name(module) for module in datamodules]
        if len(names) != len(datamodules) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(datamodules)} distinct names (one per data module), got {names}; "
                             "give `names` when two modules are of the same dataset")
        if epoch_size is not None and epoch_size <= 0:
            raise ValueError(f"epoch_size must be > 0, got {epoch_size}")
        self.datamodules, self.weights, self.names, self.epoch_size = list(datamodules), weights, names, epoch_size
        # after the modules are known: the base's set_stage passes the stage on to them
        super().__init__(resolution, batch_size, num_workers, pin_memory, persistent_workers)

    @staticmethod
    def _registry_name(module: PersonImageDataModule) -> str:
        spec = registry.of_module(module)
        return spec.name if spec is not None else type(module).__name__

    @property
    def val_names(self) -> list[str]:
        """Names of the validation loaders (TensorBoard tags), ``<module name>/<its loader's name>``."""
        return [f"{name}/{loader}" for name, module in zip(self.names, self.datamodules) for loader in module.val_names]

    def set_stage(self, resolution: tuple[int, int], batch_size: int) -> None:
        """Use ``resolution`` (H, W) and ``batch_size`` in every module from the next ``*_dataloader()`` call on."""
        super().set_stage(resolution, batch_size)
        for module in self.datamodules:
            module.set_stage(self.resolution, self.batch_size)

    def prepare_data(self) -> None:
        for module in self.datamodules:
            module.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Each module's setup (its file check), then one line saying how the training data is mixed."""
        for module in self.datamodules:
            module.setup(stage)
        if stage in (None, "fit"):
            sizes = ", ".join(f"{name} {weight / sum(self.weights):.3g} (of {self._train_pairs(module)} pairs)"
                              for name, weight, module in zip(self.names, self.weights, self.datamodules))
            rank_zero_info(f"[leffa_pl.data] mixed training data: {sizes}; {self._epoch_size()} samples per epoch")

    def _epoch_size(self) -> int:
        if self.epoch_size is not None:
            return self.epoch_size
        return sum(self._train_pairs(module) for module in self.datamodules)

    @staticmethod
    def _train_pairs(module: PersonImageDataModule) -> int:
        return len(module.pairs(module.train_split)[0])

    def train_dataset(self) -> MixedDataset:
        """The modules' training sets at the current resolution, planned per pass (``MixedDataset``)."""
        datasets = [module.train_dataset() for module in self.datamodules]
        return MixedDataset(datasets, shares(self.weights, self._epoch_size()))

    def val_dataloader(self) -> list[DataLoader]:
        return [loader for module in self.datamodules for loader in module.val_dataloader()]
