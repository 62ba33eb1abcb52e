"""Checkpoints by optimizer step with bounded disk use: the ``keep`` most recent, one per stage end, ``last.ckpt``.

Lightning's ``ModelCheckpoint`` with ``save_top_k=-1`` keeps every file (about 800 GB on rank 0 for the
paper's try-on run at SD1.5 size, ``make plan``). Here a run folder holds at most ``keep`` + stages + 1 names:

- ``step=<n>.ckpt`` every ``every_n_train_steps`` optimizer steps, the ``keep`` most recent kept (top-k on the
  step, Lightning's retention);
- ``stage<i>-<name>-end.ckpt`` at each ``StageSchedule`` stage end, never removed (a hard link when the step
  checkpoint of that step exists: no second write, no second copy on disk);
- ``last.ckpt``, a symbolic link to the newest of them (``--ckpt_path=<run>/checkpoints/last.ckpt`` resumes;
  the preemption callback replaces it by a file when SIGTERM stops a run between checkpoints).

A checkpoint of a step already on disk (a resume from an earlier one) is rewritten under the same name: the
same step holds the same state.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from leffa_pl.callbacks.stage_schedule import StageSchedule


class RetainedCheckpoints(ModelCheckpoint):
    def __init__(self, dirpath: str, every_n_train_steps: int = 2000, keep: int = 2):
        if keep < 1 or every_n_train_steps < 1:
            raise ValueError(f"RetainedCheckpoints: keep ({keep}) and every_n_train_steps ({every_n_train_steps}) "
                             "must be >= 1")
        super().__init__(dirpath=dirpath, filename="step={step}", auto_insert_metric_name=False, monitor="step",
                         mode="max", save_top_k=keep, every_n_train_steps=every_n_train_steps, save_last="link",
                         enable_version_counter=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Checkpoint callbacks run after the others: StageSchedule has entered the next stage already, and
        # restores this one from the checkpoint's epoch_start_step on resume.
        schedule = next((c for c in trainer.callbacks if isinstance(c, StageSchedule)), None)
        if schedule is None or trainer.global_step not in schedule.ends or trainer.sanity_checking:
            return
        index = schedule.ends.index(trainer.global_step)
        path = Path(self.dirpath) / f"stage{index + 1}-{schedule.stages[index].name}-end{self.FILE_EXTENSION}"
        if self.file_exists(path, trainer):  # a resumed run finishing the epoch it was saved at
            return
        if self._last_global_step_saved == trainer.global_step and self._last_checkpoint_saved:
            if trainer.is_global_zero:
                os.link(self._last_checkpoint_saved, path)
            trainer.strategy.barrier()
            self._last_checkpoint_saved = str(path)
        else:
            self._save_checkpoint(trainer, str(path))
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
