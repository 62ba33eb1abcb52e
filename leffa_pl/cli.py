"""``leffa-pl``: LightningCLI entry point (fit / validate / test / predict) configured by YAML in configs/.

Configs are parsed in jsonargparse's ``omegaconf+`` mode: ``${run.dir}`` in a config is the run folder of the
merged configuration and command line, so ``--run.dir=...`` moves every path of a run at once.
"""

from __future__ import annotations

import argparse
import inspect
import sys

import torch
from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from leffa_pl.callbacks.export_checkpoint import ExportError, ExportReleasedCheckpoint
from leffa_pl.callbacks.preemption import EXIT_SIGTERM, CheckpointOnSigterm
from leffa_pl.callbacks.stage_schedule import StageSchedule
from leffa_pl.callbacks.tensorboard_images import LeffaImageLogger
from leffa_pl.evaluation.in_training import ValidationScores
from leffa_pl.training.leffa_module import LeffaModule
from leffa_pl.training.run_folder import (
    RunFolderError,
    check_resume_checkpoint,
    check_writable,
    prepare_run_folder,
    remove_stale_checkpoint_temporaries,
)

OUT_OF_MEMORY_ADVICE = """
Out of memory. Lower the per-device batch size of the stages (stages.stages[i].batch_size) and raise
their accumulate_grad_batches to keep the global batch, set model.gradient_checkpointing=true,
and use trainer.precision=bf16-mixed on GPUs that support it."""


# Model settings LeffaModule took once -> what sets that now. Checkpoints of older runs carry them in their
# hyper_parameters, which LightningCLI applies as model settings on --ckpt_path: accepted, dropped with a warning.
RETIRED_MODEL_SETTINGS = {"log_images_every_n_steps": "images.every_n_steps (the LeffaImageLogger)"}


class LeffaCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for name in RETIRED_MODEL_SETTINGS:
            parser.add_argument(f"--model.{name}", default=None, help=argparse.SUPPRESS)
        parser.add_argument("--run.dir", type=str | None, default=None,
                            help="the run's folder; the trainer configs put checkpoints/, export/ and "
                                 "tensorboard/ in it as ${run.dir}/...")
        parser.add_argument("--run.overwrite", type=bool, default=False,
                            help="delete what a previous run left in run.dir (otherwise a non-empty run.dir "
                                 "is refused unless --ckpt_path resumes it)")
        # Our callbacks get their own config sections; LightningCLI appends them to trainer.callbacks.
        parser.add_lightning_class_args(StageSchedule, "stages")
        parser.add_lightning_class_args(LeffaImageLogger, "images")
        parser.add_lightning_class_args(ExportReleasedCheckpoint, "export")
        parser.add_lightning_class_args(ValidationScores, "scores")
        parser.add_lightning_class_args(CheckpointOnSigterm, "preemption")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads --ckpt_path next (for its hyperparameters): say first what a wrong file is.
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path"):
            settings = [*inspect.signature(LeffaModule).parameters, *RETIRED_MODEL_SETTINGS]
            data = self.config[subcommand].get("data")
            check_resume_checkpoint(self.config[subcommand].ckpt_path, settings,
                                    data.get("class_path") if data is not None and subcommand == "fit" else None)

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")  # None with run=False: the config's top level
        model = (self.config[subcommand] if subcommand else self.config).model
        for name, replacement in RETIRED_MODEL_SETTINGS.items():
            value = model.pop(name, None)
            if value is not None:
                rank_zero_warn(f"model.{name}={value!r} (from the --ckpt_path checkpoint's hyper_parameters or the "
                               f"config) is a retired setting, dropped: LeffaModule no longer takes it; "
                               f"{replacement} sets it now")

    def before_fit(self) -> None:
        # Before any work: in the launching process only (DDP's other ranks run this script again).
        if rank_zero_only.rank != 0:
            return
        config = self.config["fit"]
        if config.run.dir is not None:
            prepare_run_folder(config.run.dir, resuming=config.ckpt_path is not None,
                               overwrite=config.run.overwrite)
        outputs = {"run": config.run.dir, "export": self.trainer_export_dir()}
        if self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.dirpath:
            outputs["checkpoint"] = self.trainer.checkpoint_callback.dirpath
            remove_stale_checkpoint_temporaries(outputs["checkpoint"])
        for what, folder in outputs.items():
            if folder is not None:
                check_writable(folder, what)

    def trainer_export_dir(self) -> str | None:
        return next((callback.dirpath for callback in self.trainer.callbacks
                     if isinstance(callback, ExportReleasedCheckpoint)), None)


def build_cli(args: list[str] | None = None, run: bool = True) -> LeffaCLI:
    """``leffa-pl``'s CLI; ``run=False``: parse and instantiate only (no subcommand in ``args``)."""
    # ${run.dir} names the key from the config's top, which sits under the subcommand (fit.run.dir).
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    return LeffaCLI(LeffaModule, subclass_mode_data=True, save_config_kwargs={"overwrite": True}, args=args, run=run,
                    auto_configure_optimizers=False, parser_kwargs={"parser_mode": "omegaconf+"})


def main(args: list[str] | None = None) -> None:
    try:
        build_cli(args)
    except torch.OutOfMemoryError:
        print(OUT_OF_MEMORY_ADVICE, file=sys.stderr)
        raise
    except (RunFolderError, ExportError) as error:
        sys.exit(f"leffa-pl: error: {error}")
    except SIGTERMException:
        sys.exit(EXIT_SIGTERM)


if __name__ == "__main__":
    main()
