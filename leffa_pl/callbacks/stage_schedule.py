"""Training stages (resolution, batch size, accumulation, Leffa loss on/off) switched by optimizer step.

Each stage lasts ``steps`` optimizer steps. The callback makes every epoch end at a stage boundary
(``trainer.limit_train_batches``) and has Lightning ask for the dataloaders every epoch
(``reload_dataloaders_every_n_epochs = 1``, which also recomputes the epoch's batch limit). The data modules
return the same training loader while the stage's resolution and batch size stay, so its persistent workers
live through the stage, and build a new one (DistributedSampler included) when a stage changes them.

Resuming: Lightning restores the batch counters of the epoch the checkpoint was written in and
carries on with *that* epoch (at an epoch-end checkpoint it only finishes it; mid-epoch it runs its
remaining batches). So the callback restores that epoch's stage and batch limit (it keeps the step
the epoch started at), and ends the epoch without training when its stage has no steps left: then
``on_train_epoch_end`` moves on to the next stage as in an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


@dataclass
class Stage:
    name: str
    steps: int  # optimizer steps
    resolution: tuple[int, int]  # (height, width) of the images
    batch_size: int  # per device
    accumulate_grad_batches: int = 1
    leffa_loss: bool = False

    def __post_init__(self):
        self.resolution = tuple(self.resolution)
        if self.steps <= 0 or self.batch_size <= 0 or self.accumulate_grad_batches <= 0:
            raise ValueError(f"stage {self.name!r}: steps, batch_size and accumulate_grad_batches must be > 0")
        if len(self.resolution) != 2 or any(side % 8 for side in self.resolution):
            raise ValueError(f"stage {self.name!r}: resolution {self.resolution} must be (height, width), "
                             "multiples of 8 (the VAE's downsampling)")


class StageSchedule(pl.Callback):
    """Applies ``stages`` in order. The data module must offer ``set_stage(resolution, batch_size)``, the
    LightningModule ``set_stage(leffa_loss, end_step)`` (its ``on_train_batch_start`` returns -1 from
    ``end_step`` on, ending the epoch of a resumed run whose stage is over; see ``LeffaModule``)."""

    def __init__(self, stages: list[Stage]):
        if not stages:
            raise ValueError("StageSchedule needs at least one stage")
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in stages]
        self.ends = [sum(s.steps for s in self.stages[: i + 1]) for i in range(len(self.stages))]
        self.current: int | None = None
        self._trainer: pl.Trainer | None = None
        self._epoch_start_step = 0  # the optimizer step the running epoch started at

    @property
    def total_steps(self) -> int:
        return self.ends[-1]

    def index_at(self, step: int) -> int:
        """The stage that optimizer step ``step`` (0-based) belongs to; the last stage goes on past its end."""
        return next((i for i, end in enumerate(self.ends) if step < end), len(self.stages) - 1)

    def warn_unused_leffa_settings(self, pl_module: pl.LightningModule) -> None:
        """Leffa loss settings given while no stage trains with the loss have no effect: say which."""
        if any(stage.leffa_loss for stage in self.stages) or not callable(
                getattr(pl_module, "leffa_settings_changed", None)):
            return
        changed = pl_module.leffa_settings_changed()
        if changed:
            rank_zero_warn(f"{', '.join(changed)}: no effect, no stage trains with the Leffa loss "
                           "(stages.stages[i].leffa_loss)")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for part, name in ((trainer.datamodule, "data module"), (pl_module, "LightningModule")):
            if not callable(getattr(part, "set_stage", None)):
                raise TypeError(f"StageSchedule needs a {name} with set_stage(); got {type(part).__name__}")
        for stage_ in self.stages:  # fail now, not when the Leffa stage begins
            if stage_.leffa_loss and callable(getattr(pl_module, "check_leffa_resolution", None)):
                try:
                    pl_module.check_leffa_resolution(stage_.resolution)
                except ValueError as error:
                    raise ValueError(f"stage {stage_.name!r}: {error}") from None
        self.warn_unused_leffa_settings(pl_module)
        self._trainer = trainer
        trainer.reload_dataloaders_every_n_epochs = 1
        # Stages count optimizer steps; epochs end at every stage boundary, so they must not limit training.
        trainer.fit_loop.max_epochs = -1
        if trainer.max_steps == -1:
            trainer.fit_loop.epoch_loop.max_steps = self.total_steps
        elif trainer.max_steps > self.total_steps:
            rank_zero_info(f"max_steps {trainer.max_steps} > the stages' {self.total_steps}: "
                           f"the last stage ({self.stages[-1].name}) continues")
        self._enter(trainer, pl_module, step=0)

    def load_state_dict(self, state_dict: dict) -> None:
        # Called while resuming, after setup() and before the first dataloader is built: restore the
        # checkpoint's epoch (Lightning resumes its batch counters against this epoch's limit).
        if self._trainer is not None:
            self._epoch_start_step = state_dict["epoch_start_step"]
            rank_zero_info(f"resuming at step {state_dict['global_step']}: first the checkpoint's epoch, "
                           f"which started at step {self._epoch_start_step}")
            self._enter(self._trainer, self._trainer.lightning_module, step=self._epoch_start_step)

    def state_dict(self) -> dict:
        trainer = self._trainer
        return {"global_step": trainer.global_step if trainer else 0, "stage": self.current,
                "epoch_start_step": self._epoch_start_step}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter(trainer, pl_module, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stage = self.stages[self.current]
        pl_module.log_dict({"stage": float(self.current), "resolution/height": float(stage.resolution[0]),
                            "resolution/width": float(stage.resolution[1])}, on_step=True, on_epoch=False)

    def _enter(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        index = self.index_at(step)
        stage = self.stages[index]
        if index != self.current:
            rank_zero_info(f"[stage {index + 1}/{len(self.stages)}] {stage.name} from step {step}: "
                           f"{asdict(stage)}")
        self.current = index
        trainer.datamodule.set_stage(stage.resolution, stage.batch_size)
        trainer.accumulate_grad_batches = stage.accumulate_grad_batches
        open_ended = index == len(self.stages) - 1
        pl_module.set_stage(stage.leffa_loss, end_step=None if open_ended else self.ends[index])
        # End the coming epoch at this stage's last step (or run whole epochs in an open-ended last stage).
        remaining = self.ends[index] - step
        last_stage_overrun = open_ended and remaining <= 0
        trainer.limit_train_batches = 1.0 if last_stage_overrun else remaining * stage.accumulate_grad_batches


class StageProgressBar(TQDMProgressBar):
    """The progress bar names the stage and the optimizer step instead of the epoch (epochs end at stage boundaries
    and when the data runs out, and the schedule sets no epoch limit)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        schedule = next((c for c in trainer.callbacks if isinstance(c, StageSchedule)), None)
        if schedule is not None and schedule.current is not None:
            index = schedule.current
            self.train_progress_bar.set_description(
                f"[stage {index + 1}/{len(schedule.stages)}] {schedule.stages[index].name}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        total = trainer.max_steps if trainer.max_steps != -1 else "?"
        return {"step": f"{trainer.global_step}/{total}", **super().get_metrics(trainer, pl_module)}
