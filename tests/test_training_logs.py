"""The TensorBoard event file of a Leffa-stage run: warped references with flow colours, and the scalars."""

import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.callbacks.tensorboard_images import LeffaImageLogger
from leffa_pl.losses.leffa_loss import LeffaLossSettings
from leffa_pl.testing.training import RandomTryOnDataModule
from leffa_pl.training.leffa_module import LeffaModule
from leffa_pl.training.module_settings import ValidationSamplerSettings

HEIGHT, WIDTH, PADDING, TILES_PER_ROW = 32, 24, 2, 11  # LeffaImageLogger: 3 + 2 x 4 tiles a row
SLOW_S = 1000.0


class SlowValidation(pl.Callback):
    """Validation that takes SLOW_S longer on the module's clock: a throughput that counted it would drop below
    2 / SLOW_S samples/s, whatever the machine's load."""

    def __init__(self):
        self.skipped = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() + self.skipped

    def on_validation_epoch_end(self, trainer, pl_module):
        self.skipped += SLOW_S


def test_event_file_has_warped_references_flow_colours_and_training_scalars_at_the_same_steps(tmp_path, monkeypatch):
    torch.manual_seed(0)
    slow = SlowValidation()
    monkeypatch.setattr("leffa_pl.training.leffa_module.time", slow)
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version="")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=logger, log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, limit_val_batches=1, val_check_interval=2,
                         callbacks=[StageSchedule([Stage("leffa", 3, (HEIGHT, WIDTH), 2, leffa_loss=True)]),
                                    LeffaImageLogger(every_n_steps=2), slow])
    trainer.fit(LeffaModule(learning_rate=1e-3, reference_dropout=0.0,
                            validation_sampler=ValidationSamplerSettings(steps=1),
                            leffa_loss=LeffaLossSettings(theta_timestep=1000)),  # every sample in the Leffa loss
                RandomTryOnDataModule(with_flow=True))

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    grids = events.Images("train/leffa_warped_references")
    # the steps the images were computed at, which the same batch's scalars carry
    assert [grid.step for grid in grids] == [0, 2]
    assert [e.step for e in events.Scalars("loss/total")] == [0, 1, 2]
    for grid in grids:
        # reference | target | region | per layer: warped reference, flow colour; tiles at image size
        columns, rows = (grid.width - PADDING) // (WIDTH + PADDING), (grid.height - PADDING) // (HEIGHT + PADDING)
        assert (grid.width - PADDING) % (WIDTH + PADDING) == 0 and (grid.height - PADDING) % (HEIGHT + PADDING) == 0
        assert columns == TILES_PER_ROW and rows >= 1  # >= 4 layers: 3 + 2 x 4 tiles fill the first row
    scalars = set(events.Tags()["scalars"])
    expected = {"loss/total", "loss/mse", "loss/leffa", "stage", "resolution/height", "resolution/width",
                "samples_per_second", "flow_epe/mean"}
    assert expected <= scalars
    layers = [tag for tag in scalars if tag.startswith("flow_epe/") and tag != "flow_epe/mean"]
    assert layers  # per layer
    for tag in layers + ["flow_epe/mean"]:  # once per computation, not again at the logging step between
        assert [e.step for e in events.Scalars(tag)] == [0, 2], tag
    assert [e.value for e in events.Scalars("resolution/height")] == [HEIGHT] * 3
    # validation after the second batch: its images and scalars at that batch's step
    assert [image.step for image in events.Images("val/paired")] == [1]
    assert [e.step for e in events.Scalars("val/flow_epe")] == [1]
    assert min(e.value for e in events.Scalars("samples_per_second")) > 2 / SLOW_S  # validation time left out


def test_validation_logs_the_attention_flow_error_when_the_data_has_ground_truth_flow(tmp_path):
    torch.manual_seed(0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    module = LeffaModule(validation_sampler=ValidationSamplerSettings(steps=1))
    data = RandomTryOnDataModule(resolution=(HEIGHT, WIDTH), with_flow=True)
    [metrics] = trainer.validate(module, data, verbose=False)
    assert 0 < metrics["val/flow_epe"] < (HEIGHT**2 + WIDTH**2) ** 0.5 * 2  # pixels, finite
    [metrics] = trainer.validate(module, RandomTryOnDataModule(resolution=(HEIGHT, WIDTH)), verbose=False)
    assert "val/flow_epe" not in metrics
