"""The paper's try-on schedule scaled down 1000x (gpu.yaml's validation and checkpoint rhythm scaled the same way):
the checkpoints kept stay within keep + stages + 1, and a retained mid-stage checkpoint resumes exactly.

The module is a stand-in with LeffaModule's stage seam (``set_stage``, the epoch ended past the stage's last step)
and one linear layer: the schedule's 56 steps, validations every 2 and a resume take seconds, where the tiny Leffa
model takes about 30 s a step on the shared 2-core machine under load. LeffaModule's own resume is exact in every
case of tests/test_training.py."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from leffa_pl.callbacks.checkpoints import RetainedCheckpoints
from leffa_pl.callbacks.ema import EMA_KEY, LeffaEMA
from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.config import TRAINER_BASE, callbacks_of, read_config
from leffa_pl.testing.training import RandomTryOnDataModule
from leffa_pl.training.atomic_checkpoint import AtomicCheckpointIO

SCALE = 1000
# as leffa-pl fit --config base.yaml --config gpu.yaml --config vton_paper.yaml parses them
GPU = read_config([TRAINER_BASE, "configs/trainer/gpu.yaml", "configs/stages/vton_paper.yaml"]).as_dict()
PAPER = GPU["stages"]["stages"]
STAGES = [Stage(s["name"], s["steps"] // SCALE, (32, 24), 2, leffa_loss=s.get("leffa_loss", False)) for s in PAPER]
[CHECKPOINTS] = callbacks_of(GPU, RetainedCheckpoints)
EVERY, KEEP = CHECKPOINTS["every_n_train_steps"] // SCALE, CHECKPOINTS["keep"]
VALIDATE_EVERY = GPU["trainer"]["val_check_interval"] // SCALE


class StageModule(pl.LightningModule):
    """A linear map from the person's mean colour to the reference's, trained with AdamW."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 3)
        self.frozen = torch.nn.Linear(3, 3).requires_grad_(False)  # as the VAE: not in the EMA
        self.end_step = None

    def set_stage(self, leffa_loss: bool, end_step: int | None) -> None:
        self.end_step = end_step

    def on_train_batch_start(self, batch, batch_idx):
        return -1 if self.end_step is not None and self.global_step >= self.end_step else None

    def training_step(self, batch, batch_idx):
        person, reference = (batch[key].mean(dim=(2, 3)) for key in ("person", "reference"))
        return torch.nn.functional.mse_loss(self.layer(self.frozen(person)), reference)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.training_step(batch, batch_idx))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.layer.parameters(), lr=1e-2)


class Losses(pl.Callback):
    def __init__(self):
        self.by_step: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.by_step[trainer.global_step] = outputs["loss"].item()


def fit(folder: Path, max_steps: int = -1, ckpt_path: Path | None = None) -> tuple[Losses, LeffaEMA]:
    torch.manual_seed(0)
    module = StageModule()
    losses, ema = Losses(), LeffaEMA(decay=0.9)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1, check_val_every_n_epoch=None,
        val_check_interval=VALIDATE_EVERY, plugins=[AtomicCheckpointIO()], default_root_dir=folder,
        callbacks=[StageSchedule(STAGES), losses, ema, RetainedCheckpoints(str(folder / "checkpoints"), EVERY, KEEP)])
    trainer.fit(module, RandomTryOnDataModule(size=16, shuffle=True), ckpt_path=ckpt_path)
    return losses, ema


def kept(folder: Path) -> dict[str, int | str]:
    """Checkpoint name -> its step (last.ckpt -> the name it links to)."""
    files = sorted((folder / "checkpoints").iterdir())
    return {path.name: path.readlink().name if path.is_symlink() else
            torch.load(path, weights_only=True, mmap=True)["global_step"] for path in files}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    return folder, *fit(folder)


def test_the_scaled_schedule_keeps_the_k_most_recent_one_per_stage_end_and_a_link(full):
    folder, losses, _ = full
    ends = [10, 46, 56]
    assert (EVERY, KEEP, VALIDATE_EVERY, [s.steps for s in STAGES]) == (2, 2, 2, [10, 36, 10])
    assert sorted(losses.by_step) == list(range(1, 57))
    files = kept(folder)
    assert len(files) <= KEEP + len(STAGES) + 1
    assert files == {"last.ckpt": "stage3-leffa-finetune-end.ckpt", "stage1-low-res-end.ckpt": ends[0],
                     "stage2-high-res-end.ckpt": ends[1], "stage3-leffa-finetune-end.ckpt": ends[2],
                     "step=54.ckpt": 54, "step=56.ckpt": 56}
    # the stage end that is also a step checkpoint is the same file, not a second write
    inode = {name: (folder / "checkpoints" / name).stat().st_ino for name in files}
    assert inode["step=56.ckpt"] == inode["stage3-leffa-finetune-end.ckpt"]


def test_a_retained_mid_stage_checkpoint_resumes_the_losses_and_the_ema(full, tmp_path):
    _, full_losses, full_ema = full
    killed, _ = fit(tmp_path, max_steps=21)  # interrupted mid stage 2
    assert kept(tmp_path) == {"last.ckpt": "step=20.ckpt", "stage1-low-res-end.ckpt": 10, "step=18.ckpt": 18,
                              "step=20.ckpt": 20}
    shadow = torch.load(tmp_path / "checkpoints" / "step=18.ckpt", weights_only=True)[EMA_KEY]["shadow"]
    assert set(shadow) == set(full_ema.shadow)  # the trainable weights only: no VAE
    assert set(shadow) == {"layer.weight", "layer.bias"}

    resumed, resumed_ema = fit(tmp_path, ckpt_path=tmp_path / "checkpoints" / "step=18.ckpt")  # not the newest
    assert sorted(resumed.by_step) == list(range(19, 57))
    assert {s: killed.by_step[s] for s in range(1, 19)} | resumed.by_step == full_losses.by_step
    for name, average in full_ema.shadow.items():
        assert torch.equal(resumed_ema.shadow[name], average), name
    # Lightning never removes the file a run resumed from (here chosen by name; resuming last.ckpt keeps none)
    assert set(kept(tmp_path)) == set(kept(full[0])) | {"step=18.ckpt"}
