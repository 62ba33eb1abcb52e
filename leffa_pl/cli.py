"""``leffa-pl``: LightningCLI entry point (fit / validate / test / predict) configured by YAML in configs/."""

from __future__ import annotations

import sys

import torch
from lightning.pytorch.cli import LightningCLI

from leffa_pl.callbacks.export_checkpoint import ExportReleasedCheckpoint
from leffa_pl.callbacks.stage_schedule import StageSchedule
from leffa_pl.callbacks.tensorboard_images import LeffaImageLogger
from leffa_pl.evaluation.in_training import ValidationScores
from leffa_pl.training.leffa_module import LeffaModule

OUT_OF_MEMORY_ADVICE = """
Out of memory. Lower the per-device batch size of the stages (stages.stages[i].batch_size) and raise
their accumulate_grad_batches to keep the global batch, set model.gradient_checkpointing=true,
and use trainer.precision=bf16-mixed on GPUs that support it."""


class LeffaCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Our callbacks get their own config sections; LightningCLI appends them to trainer.callbacks.
        parser.add_lightning_class_args(StageSchedule, "stages")
        parser.add_lightning_class_args(LeffaImageLogger, "images")
        parser.add_lightning_class_args(ExportReleasedCheckpoint, "export")
        parser.add_lightning_class_args(ValidationScores, "scores")


def main(args: list[str] | None = None) -> None:
    try:
        LeffaCLI(LeffaModule, subclass_mode_data=True, save_config_kwargs={"overwrite": True}, args=args,
                 auto_configure_optimizers=False)
    except torch.OutOfMemoryError:
        print(OUT_OF_MEMORY_ADVICE, file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
