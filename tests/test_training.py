"""Training mechanics on the tiny model and in-memory data: updates, stages, resume, non-finite losses."""

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


@pytest.mark.xfail(strict=True, reason="open (issue 5): Lightning restores the finished epoch's batch count, "
                   "so the first resumed epoch ends early and the next stage epoch replays data")
def test_resume_lands_in_the_right_stage_and_reproduces_the_losses(tmp_path):
    def stages():
        return StageSchedule([Stage("a", 2, (32, 24), 2), Stage("b", 4, (64, 48), 2, leffa_loss=True)])

    uninterrupted = Recorder()
    _trainer(tmp_path / "full", [stages(), uninterrupted], enable_checkpointing=False).fit(
        _module(), RandomTryOnDataModule())

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    killed = Recorder()
    # stopped at the end of stage "a": an epoch end, where the checkpoint is written
    _trainer(tmp_path / "run", [stages(), killed, checkpoint], max_steps=2, plugins=[AtomicCheckpointIO()]).fit(
        _module(), RandomTryOnDataModule())
    resumed = Recorder()
    _trainer(tmp_path / "run", [stages(), resumed], plugins=[AtomicCheckpointIO()]).fit(
        _module(), RandomTryOnDataModule(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")

    assert [r["step"] for r in resumed.rows] == [3, 4, 5, 6]
    assert all(r["leffa"] and r["shape"][2] == 64 for r in resumed.rows)
    assert [r["loss"] for r in killed.rows + resumed.rows] == [r["loss"] for r in uninterrupted.rows]


def test_a_non_finite_loss_stops_training_naming_the_step(tmp_path):
    module = _module()
    with torch.no_grad():
        module.model.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 0 .*mse nan"):
        _trainer(tmp_path, [StageSchedule([Stage("only", 2, (32, 24), 2)])], enable_checkpointing=False).fit(
            module, RandomTryOnDataModule())
