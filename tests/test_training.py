"""Training mechanics on the tiny model and in-memory data: updates, stages, resume, non-finite losses."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.callbacks.tensorboard_images import LeffaImageLogger
from leffa_pl.losses.leffa_loss import LeffaLossSettings
from leffa_pl.testing.training import RandomTryOnDataModule
from leffa_pl.training.atomic_checkpoint import AtomicCheckpointIO
from leffa_pl.training.leffa_module import LeffaModule, NonFiniteLossError


class Recorder(pl.Callback):
    """What each optimizer step trained on."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append(dict(step=trainer.global_step, shape=tuple(batch["person"].shape),
                              ids=tuple(batch["person_id"]), leffa=pl_module.leffa_loss_enabled,
                              accumulate=trainer.accumulate_grad_batches,
                              loss=outputs["loss"].item()))


def _trainer(tmp_path, callbacks, max_steps=-1, **kwargs):
    settings = dict(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                    default_root_dir=tmp_path, callbacks=callbacks)
    return pl.Trainer(**settings | kwargs)


def _module(**kwargs):
    torch.manual_seed(0)
    return LeffaModule(learning_rate=1e-3, **kwargs)


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


def _fit(root, callbacks, data_kwargs, max_steps=-1, ckpt_path=None, **kwargs):
    _trainer(root, [_two_stages(), *callbacks], max_steps=max_steps, **kwargs).fit(
        _module(), RandomTryOnDataModule(**data_kwargs), ckpt_path=ckpt_path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    # shuffled, so that a resumed run must also restore the epoch's order
    recorder, data_kwargs = Recorder(), {"shuffle": True, "size": 16}
    _fit(tmp_path_factory.mktemp("full"), [recorder], data_kwargs, enable_checkpointing=False)
    return data_kwargs, recorder.rows


def _kill_and_resume(tmp_path, data_kwargs, checkpoint: ModelCheckpoint, kill_at: int, **trainer_kwargs
                     ) -> tuple[list, list]:
    killed, resumed = Recorder(), Recorder()
    _fit(tmp_path, [killed, checkpoint], data_kwargs, max_steps=kill_at, plugins=[AtomicCheckpointIO()],
         **trainer_kwargs)
    _fit(tmp_path, [resumed], data_kwargs, ckpt_path=Path(checkpoint.dirpath) / "last.ckpt",
         plugins=[AtomicCheckpointIO()], **trainer_kwargs)
    return killed.rows, resumed.rows


@pytest.mark.parametrize("written", ["at_epoch_end", "at_the_stage_last_batch_end"])
def test_resume_lands_in_the_right_stage_and_reproduces_the_losses(tmp_path, uninterrupted, written):
    # killed at the end of stage "a": the checkpoint is written by on_train_epoch_end, or by
    # on_train_batch_end of its last batch (every_n_train_steps), before the epoch ends
    data_kwargs, full = uninterrupted
    every = {"every_n_epochs": 1} if written == "at_epoch_end" else {"every_n_train_steps": 2}
    killed, resumed = _kill_and_resume(tmp_path, data_kwargs,
                                       ModelCheckpoint(tmp_path / "ckpt", save_last=True, **every), 2)

    assert [r["step"] for r in resumed] == [3, 4, 5, 6]
    assert all(r["leffa"] and r["shape"][2] == 64 for r in resumed)
    assert [(r["ids"], r["loss"]) for r in killed + resumed] == [(r["ids"], r["loss"]) for r in full]


# (checkpoint's step, step killed at, ModelCheckpoint and Trainer settings that write it there)
MID_STAGE = {"mid_stage_a": (1, 1, {"every_n_train_steps": 1}, {}),
             "mid_leffa_stage_b": (4, 5, {"every_n_train_steps": 4}, {}),
             # as configs/trainer/gpu.yaml: checkpoints after a validation every N steps
             "after_validation": (4, 5, {"every_n_epochs": 1},
                                  {"val_check_interval": 4, "check_val_every_n_epoch": None, "limit_val_batches": 1})}


@pytest.mark.parametrize("case", MID_STAGE)
def test_resume_mid_stage_continues_the_epoch_data_and_reproduces_the_losses(tmp_path, uninterrupted, case):
    # The loaders are resumable: Lightning saves how many batches of the epoch were trained on, and the
    # resumed epoch goes on with the next batch of the same order instead of starting again.
    checkpoint_step, kill_at, every, trainer_kwargs = MID_STAGE[case]
    data_kwargs, full = uninterrupted
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", save_last=True, **every)
    killed, resumed = _kill_and_resume(tmp_path, data_kwargs, checkpoint, kill_at, **trainer_kwargs)

    assert [r["step"] for r in resumed] == list(range(checkpoint_step + 1, 7))  # from the checkpoint's step
    assert [(r["leffa"], r["shape"]) for r in resumed] == [(r["leffa"], r["shape"]) for r in full[checkpoint_step:]]
    assert [(r["ids"], r["loss"]) for r in killed[:checkpoint_step] + resumed] == [
        (r["ids"], r["loss"]) for r in full]


def test_a_non_finite_loss_stops_training_naming_the_step(tmp_path):
    module = _module(max_non_finite_steps=1)
    with torch.no_grad():
        module.model.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss or gradient at step 0 .*mse nan"):
        _trainer(tmp_path, [StageSchedule([Stage("only", 2, (32, 24), 2)])], enable_checkpointing=False).fit(
            module, RandomTryOnDataModule())
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


class OutputsRecorder(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.global_step - 1, outputs["log_images"], outputs["leffa"] is not None))


@pytest.mark.parametrize("image_every", [None, 2])
def test_step_outputs_carry_flows_for_the_leffa_stage_and_the_image_logger_only(tmp_path, image_every):
    recorder = OutputsRecorder()
    callbacks = [StageSchedule([Stage("plain", 3, (32, 24), 2), Stage("leffa", 1, (32, 24), 2, leffa_loss=True)]),
                 recorder] + ([LeffaImageLogger(every_n_steps=image_every)] if image_every else [])
    _trainer(tmp_path, callbacks, enable_checkpointing=False).fit(_module(), RandomTryOnDataModule())
    # (step, an image step, flows computed)
    if image_every is None:  # without the image logger the module keeps no images
        assert recorder.rows == [(0, False, False), (1, False, False), (2, False, False), (3, False, True)]
    else:
        assert recorder.rows == [(0, True, True), (1, False, False), (2, True, True), (3, False, True)]


def test_stage_schedule_refuses_a_module_without_set_stage(tmp_path):
    class Plain(pl.LightningModule):  # trainable, but without the stage seam
        def training_step(self, batch, batch_idx):
            raise AssertionError("never reached")

        def configure_optimizers(self):
            raise AssertionError("never reached")

    with pytest.raises(TypeError, match="LightningModule with set_stage"):
        _trainer(tmp_path, [_two_stages()], enable_checkpointing=False).fit(Plain(), RandomTryOnDataModule())


def test_a_leffa_stage_whose_theta_resolution_selects_no_layer_fails_before_training(tmp_path):
    # the tiny UNet's finest attention grid at 32x24 is 4x3: 4/32 of the height, below 0.25
    recorder = Recorder()
    module = _module(leffa_loss=LeffaLossSettings(theta_resolution=0.25))
    with pytest.raises(ValueError, match="stage 'b': the Leffa loss selects no attention layer at 32x24"):
        _trainer(tmp_path, [StageSchedule([Stage("a", 1, (32, 24), 2), Stage("b", 1, (32, 24), 2, leffa_loss=True)]),
                            recorder], enable_checkpointing=False).fit(module, RandomTryOnDataModule())
    assert recorder.rows == []
