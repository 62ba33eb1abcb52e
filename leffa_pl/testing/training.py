"""A contract-conforming in-memory data module for fast training tests (no files, no augmentation), a plain-SGD
module (tests and benchmarks) and callbacks that CLI configs of the tests name."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from leffa_pl.data.resumable_loader import ResumableDataLoader
from leffa_pl.training.leffa_module import LeffaModule


class RandomTryOnDataset(Dataset):
    """Random persons; the reference is the person shifted by 1/8 of the image (``with_flow``: that shift as
    the ground-truth flow)."""

    def __init__(self, size: int, resolution: tuple[int, int], with_flow: bool = False):
        self.size, self.resolution, self.with_flow = size, resolution, with_flow

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        height, width = self.resolution
        person = torch.rand(3, height, width, generator=generator) * 2 - 1
        mask = torch.zeros(1, height, width)
        mask[:, height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
        reference = torch.roll(person, shifts=(height // 8, width // 8), dims=(1, 2))
        sample = {} if not self.with_flow else {"flow": self._shift_flow(height, width)}
        return sample | {"person": person, "reference": reference, "inpaint_mask": mask,
                         "agnostic": person * (1 - mask),
                "densepose": F.avg_pool2d(person, 3, 1, 1), "loss_region": mask.clone(),
                "person_id": f"{index:05d}_00.jpg", "reference_id": f"{index:05d}_00.jpg"}

    @staticmethod
    def _shift_flow(height: int, width: int) -> torch.Tensor:
        """[2, H, W] grid_sample positions (x, y) in the reference of each person pixel."""
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        positions = torch.stack([(xs + width // 8) % width, (ys + height // 8) % height]).float()
        return (positions + 0.5) / torch.tensor([width, height]).view(2, 1, 1) * 2 - 1


class RandomTryOnDataModule(pl.LightningDataModule):
    """In index order, or ``shuffle``d like ``PersonImageDataModule``: by (seed, step the loader is built at)."""

    def __init__(self, size: int = 8, resolution: tuple[int, int] = (64, 48), batch_size: int = 2,
                 with_flow: bool = False, shuffle: bool = False):
        super().__init__()
        self.size, self.resolution, self.batch_size, self.with_flow = size, tuple(resolution), batch_size, with_flow
        self.shuffle = shuffle
        self.stages_seen: list[tuple[tuple[int, int], int]] = []

    def set_stage(self, resolution: tuple[int, int], batch_size: int) -> None:
        self.resolution, self.batch_size = tuple(resolution), batch_size

    def train_dataloader(self) -> DataLoader:
        self.stages_seen.append((self.resolution, self.batch_size))
        step = self.trainer.global_step if self.trainer is not None else 0
        generator = torch.Generator().manual_seed((torch.initial_seed() + 1_000_003 * step) % 2**63)
        return ResumableDataLoader(RandomTryOnDataset(self.size, self.resolution, self.with_flow),
                                   batch_size=self.batch_size, shuffle=self.shuffle, shuffle_generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RandomTryOnDataset(2, self.resolution, self.with_flow), batch_size=2)


class SGDLeffaModule(LeffaModule):
    """Plain SGD (no momentum, no weight decay). Tests: its update is proportional to the gradient, so two runs
    agree to float precision (Adam's first step is ~lr * sign(gradient), which flips on rounding noise where
    gradients are ~0). Benchmarks: no optimizer state and no temporaries the size of the parameters, so both
    SD1.5-size UNets and their gradients fit a 24 GiB CPU machine. Not a way to train Leffa, so it is not in
    ``training/optimizers.py``."""

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=self.hparams.learning_rate)


class LossLog(pl.Callback):
    """Appends ``step loss`` lines to ``path`` (a callback that CLI configs can name)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(self.path, "a") as log:
            log.write(f"{trainer.global_step} {outputs['loss'].item()!r}\n")


class SigtermAtStep(pl.Callback):
    """Sends this process SIGTERM once optimizer step ``step`` is done (a preemption)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            # Lightning's handler (installed in the main thread only) must be there, or this ends the test run
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
            os.kill(os.getpid(), signal.SIGTERM)
