"""Preemption (SIGTERM from ``kill``, a scheduler or a spot instance): save ``last.ckpt`` and stop.

Lightning's own handling: on SIGTERM it sets ``trainer.received_sigterm``, finishes the batch in progress
(under DDP every rank stops at the same batch) and raises ``SIGTERMException``, calling the callbacks'
``on_exception``; it saves nothing, and ``SIGTERMException`` being a bare ``SystemExit`` the process would
exit 0. This callback saves the checkpoint there; ``leffa-pl`` then exits 143 (128 + SIGTERM).
"""

from __future__ import annotations

import signal
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_SIGTERM = 128 + signal.SIGTERM  # the shell's status of a process ended by SIGTERM


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM, writes ``last.ckpt`` into the ``ModelCheckpoint``'s folder (where docs/training.md's resume
    recipe looks), so that ``--ckpt_path=<run>/checkpoints/last.ckpt`` continues at the next batch."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        checkpoint = trainer.checkpoint_callback
        if not isinstance(checkpoint, ModelCheckpoint) or checkpoint.dirpath is None:
            rank_zero_warn("SIGTERM: no ModelCheckpoint with a folder, so no checkpoint was saved")
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        rank_zero_info(f"SIGTERM at step {trainer.global_step}: saved {path}; resume with --ckpt_path={path}")
