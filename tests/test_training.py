"""Training mechanics on the tiny model and in-memory data: updates, stages, resume, non-finite losses."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from training_helpers import RandomTryOnDataModule

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.training.atomic_checkpoint import AtomicCheckpointIO
from leffa_pl.training.leffa_module import LeffaModule, NonFiniteLossError


class Recorder(pl.Callback):
    """What each optimizer step trained on."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append(dict(step=trainer.global_step, shape=tuple(batch["person"].shape),
                              ids=tuple(batch["person_id"]), leffa=pl_module.leffa_loss_enabled, accumulate=trainer.accumulate_grad_batches,
                              loss=outputs["loss"].item()))


def _trainer(tmp_path, callbacks, max_steps=-1, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                      default_root_dir=tmp_path, callbacks=callbacks, **kwargs)


def _module(**kwargs):
    torch.manual_seed(0)
    return LeffaModule(learning_rate=1e-3, log_images_every_n_steps=0, **kwargs)


def test_one_step_changes_both_unets_and_not_the_vae(tmp_path):
    module = _module()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    _trainer(tmp_path, [StageSchedule([Stage("only", 1, (64, 48), 2)])], enable_checkpointing=False).fit(
        module, RandomTryOnDataModule())
    after = module.model.state_dict()
    changed = {prefix: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))
               for prefix in ("vae.", "unet_encoder.", "unet.")}
    assert changed == {"vae.": False, "unet_encoder.": True, "unet.": True}


def test_stages_switch_resolution_batch_and_leffa_at_the_configured_steps(tmp_path):
    stages = [Stage("low", 2, (32, 24), 2), Stage("high", 2, (64, 48), 1, accumulate_grad_batches=2),
              Stage("leffa", 1, (64, 48), 2, leffa_loss=True)]
    recorder, data = Recorder(), RandomTryOnDataModule(size=16)
    _trainer(tmp_path, [StageSchedule(stages), recorder], enable_checkpointing=False).fit(_module(), data)
    rows = recorder.rows
    assert [(r["step"], r["shape"][0], r["shape"][2], r["accumulate"], r["leffa"]) for r in rows] == [
        (1, 2, 32, 1, False), (2, 2, 32, 1, False),  # step counted after the optimizer step
        (2, 1, 64, 2, False), (3, 1, 64, 2, False), (3, 1, 64, 2, False), (4, 1, 64, 2, False),
        (5, 2, 64, 1, True)]
    assert data.stages_seen == [((32, 24), 2), ((64, 48), 1), ((64, 48), 2)]


def _two_stages():
    return StageSchedule([Stage("a", 2, (32, 24), 2), Stage("b", 4, (64, 48), 2, leffa_loss=True)])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    recorder = Recorder()
    _trainer(tmp_path_factory.mktemp("full"), [_two_stages(), recorder], enable_checkpointing=False).fit(
        _module(), RandomTryOnDataModule())
    return recorder.rows


def _kill_and_resume(tmp_path, checkpoint: ModelCheckpoint, kill_at: int) -> tuple[list, list]:
    killed, resumed = Recorder(), Recorder()
    _trainer(tmp_path, [_two_stages(), killed, checkpoint], max_steps=kill_at, plugins=[AtomicCheckpointIO()]).fit(
        _module(), RandomTryOnDataModule())
    _trainer(tmp_path, [_two_stages(), resumed], plugins=[AtomicCheckpointIO()]).fit(
        _module(), RandomTryOnDataModule(), ckpt_path=Path(checkpoint.dirpath) / "last.ckpt")
    return killed.rows, resumed.rows


@pytest.mark.parametrize("written", ["at_epoch_end", "at_the_stage_last_batch_end"])
def test_resume_lands_in_the_right_stage_and_reproduces_the_losses(tmp_path, uninterrupted, written):
    # killed at the end of stage "a": the checkpoint is written by on_train_epoch_end, or by
    # on_train_batch_end of its last batch (every_n_train_steps), before the epoch ends
    every = {"every_n_epochs": 1} if written == "at_epoch_end" else {"every_n_train_steps": 2}
    killed, resumed = _kill_and_resume(tmp_path, ModelCheckpoint(tmp_path / "ckpt", save_last=True, **every), 2)

    assert [r["step"] for r in resumed] == [3, 4, 5, 6]
    assert all(r["leffa"] and r["shape"][2] == 64 for r in resumed)
    assert [r["loss"] for r in killed + resumed] == [r["loss"] for r in uninterrupted]


def test_resume_mid_stage_lands_in_the_right_stage_and_restarts_its_epoch_data(tmp_path, uninterrupted):
    killed, resumed = _kill_and_resume(
        tmp_path, ModelCheckpoint(tmp_path / "ckpt", save_last=True, every_n_train_steps=3), kill_at=4)

    assert [r["step"] for r in resumed] == [4, 5, 6]  # from the checkpoint's step 3, not the kill at 4
    assert all(r["leffa"] and r["shape"][2] == 64 and r["shape"][0] == 2 for r in resumed)
    # Lightning cannot fast-forward a plain DataLoader: the resumed epoch's data starts again from the
    # stage's first batch (deterministically), so losses match the uninterrupted run up to the checkpoint only.
    stage_b = [r["ids"] for r in uninterrupted if r["leffa"]]
    assert [r["ids"] for r in resumed] == stage_b[:3]
    assert [r["loss"] for r in killed[:3]] == [r["loss"] for r in uninterrupted[:3]]


def test_a_non_finite_loss_stops_training_naming_the_step(tmp_path):
    module = _module()
    with torch.no_grad():
        module.model.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 0 .*mse nan"):
        _trainer(tmp_path, [StageSchedule([Stage("only", 2, (32, 24), 2)])], enable_checkpointing=False).fit(
            module, RandomTryOnDataModule())
