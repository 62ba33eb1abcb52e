"""``leffa-pl``: LightningCLI entry point (fit / validate / test / predict) configured by YAML in configs/.

Configs are parsed in jsonargparse's ``omegaconf+`` mode: ``${run.dir}`` in a config is the run folder of the
merged configuration and command line, so ``--run.dir=...`` moves every path of a run at once.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from jsonargparse import set_parsing_settings
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from leffa_pl.callbacks.export_checkpoint import ExportError, ExportReleasedCheckpoint
from leffa_pl.callbacks.preemption import EXIT_SIGTERM, CheckpointOnSigterm
from leffa_pl.callbacks.stage_schedule import StageProgressBar, StageSchedule
from leffa_pl.callbacks.tensorboard_images import LeffaImageLogger
from leffa_pl.evaluation.in_training import ValidationScores
from leffa_pl.planning.disk import model_for_check, plan_disk
from leffa_pl.planning.plan import GIB
from leffa_pl.training.leffa_module import LeffaModule
from leffa_pl.training.module_settings import FLAT_SETTINGS, flat_settings_refusal, new_key
from leffa_pl.training.run_folder import (
    RunFolderError,
    check_free_space,
    check_resume_checkpoint,
    check_writable,
    prepare_run_folder,
    remove_stale_checkpoint_temporaries,
)

CHECKPOINT_CALLBACKS = ("ModelCheckpoint", "RetainedCheckpoints")
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
        # The flat settings that moved into config sections (leffa_pl/training/module_settings.py): refused in a
        # config or on the command line (parse_arguments), moved into their sections from a --ckpt_path checkpoint
        # written before (before_instantiate_classes). Shown in --help: a suppressed option is lost when a config
        # has ${...} (jsonargparse's omegaconf+ mode re-reads the config without it).
        for name in FLAT_SETTINGS:
            parser.add_argument(f"--model.{name}", default=argparse.SUPPRESS, help=f"moved to --{new_key(name)} "
                                "(refused)")
        parser.add_argument("--run.dir", type=str | None, default=None,
                            help="the run's folder; the trainer configs put checkpoints/, export/ and "
                                 "tensorboard/ in it as ${run.dir}/...")
        parser.add_argument("--run.overwrite", type=bool, default=False,
                            help="delete what a previous run left in run.dir (otherwise a non-empty run.dir "
                                 "is refused unless --ckpt_path resumes it)")
        parser.add_argument("--run.resume", type=bool, default=False,
                            help="resume the run in run.dir from its last checkpoint (the checkpoint callback's "
                                 "last.ckpt), as --ckpt_path=<that file>")
        parser.add_argument("--run.ignore_free_space", type=bool, default=False,
                            help="start even when run.dir's disk has less free space than the run needs "
                                 "(checkpoints kept, exports, images: make plan)")
        # Our callbacks get their own config sections; LightningCLI appends them to trainer.callbacks.
        parser.add_lightning_class_args(StageSchedule, "stages")
        parser.add_lightning_class_args(LeffaImageLogger, "images")
        parser.add_lightning_class_args(ExportReleasedCheckpoint, "export")
        parser.add_lightning_class_args(ValidationScores, "scores")
        parser.add_lightning_class_args(CheckpointOnSigterm, "preemption")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        refusal = flat_settings_refusal((self.config[subcommand] if subcommand else self.config).model)
        if refusal:  # before --ckpt_path's hyper_parameters join the config: what the user gave
            parser.error(refusal)
        # LightningCLI reads --ckpt_path next (for its hyperparameters): say first what a wrong file is.
        if subcommand == "fit" and self.config.fit.run.resume:
            self.config.fit.ckpt_path = last_checkpoint(self.config.fit.as_dict())
        if subcommand and self.config[subcommand].get("ckpt_path"):
            settings = [*inspect.signature(LeffaModule).parameters, *RETIRED_MODEL_SETTINGS, *FLAT_SETTINGS]
            data = self.config[subcommand].get("data")
            check_resume_checkpoint(self.config[subcommand].ckpt_path, settings,
                                    data.get("class_path") if data is not None and subcommand == "fit" else None)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> pl.Trainer:
        # The bar shows stage and step (StageProgressBar) unless the config turns it off or brings its own.
        given = config.get("callbacks") or []
        if config.get("enable_progress_bar", True) is not False and not any(
                isinstance(c, ProgressBar) for c in [*callbacks, *(given if isinstance(given, list) else [given])]):
            callbacks = [*callbacks, StageProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")  # None with run=False: the config's top level
        config = self.config[subcommand] if subcommand else self.config
        model = config.model
        for name, replacement in RETIRED_MODEL_SETTINGS.items():
            value = model.pop(name, None)
            if value is not None:
                rank_zero_warn(f"model.{name}={value!r} (from the --ckpt_path checkpoint's hyper_parameters or the "
                               f"config) is a retired setting, dropped: LeffaModule no longer takes it; "
                               f"{replacement} sets it now")
        for name, (section, key) in FLAT_SETTINGS.items():  # only a checkpoint's, parse_arguments refused the rest
            value = model.pop(name, None)
            if value is not None:
                model[f"{section}.{key}"] = value
                rank_zero_info(f"model.{name}={value!r} (the --ckpt_path checkpoint's, written before the config "
                               f"sections) -> model.{section}.{key}")
        # The stage schedule counts optimizer steps and ends epochs at stage boundaries: epochs set no limit (this
        # spares Lightning's "max_epochs was not set ... 1000" warning).
        if config.get("trainer") is not None and config.trainer.get("max_epochs") is None:
            config.trainer.max_epochs = -1
        # Before the model is built (a base model takes minutes to load): in the launching process only (DDP's
        # other ranks run this script again).
        if subcommand == "fit" and rank_zero_only.rank == 0:
            check_outputs(config.as_dict())


def checkpoint_folders(config: dict) -> list[str]:
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    return [(c.get("init_args") or {}).get("dirpath") for c in callbacks
            if isinstance(c, dict) and str(c.get("class_path", "")).endswith(CHECKPOINT_CALLBACKS)]


def last_checkpoint(config: dict) -> str:
    """``--run.resume``: the first checkpoint callback's last.ckpt."""
    folder = next((folder for folder in checkpoint_folders(config) if folder), None)
    if folder is None:
        raise RunFolderError("--run.resume: no checkpoint callback with a dirpath in trainer.callbacks; give "
                             "--ckpt_path=<checkpoint> instead")
    path = Path(folder) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
    if not path.exists():
        raise RunFolderError(f"--run.resume: {path} does not exist (no checkpoint of this run yet); start the run "
                             "without RESUME / --run.resume")
    return str(path)


def check_outputs(config: dict) -> None:
    """The run folder (refused when another run's, emptied with overwrite), its output folders writable, its disk
    free enough for the run (``leffa_pl.planning.disk``)."""
    run = config.get("run") or {}
    if run.get("dir") is not None:
        prepare_run_folder(run["dir"], resuming=config.get("ckpt_path") is not None,
                           overwrite=bool(run.get("overwrite")))
    outputs = [("run", run.get("dir")), ("export", (config.get("export") or {}).get("dirpath")),
               *(("checkpoint", folder) for folder in checkpoint_folders(config))]
    for what, folder in outputs:
        if folder is not None:
            if what == "checkpoint":
                remove_stale_checkpoint_temporaries(folder)
            check_writable(folder, what)
    if run.get("dir") is not None and not run.get("ignore_free_space"):
        settings = config.get("model") or {}
        disk = plan_disk(config, model_for_check(settings.get("base_model"), settings.get("trainable", "both")))
        check_free_space(run["dir"], disk.total, f"{disk.checkpoints_at_once} checkpoints of "
                         f"{disk.checkpoint / GIB:.1f} GiB ({disk.retention}), exports {disk.export / GIB:.1f} GiB, "
                         f"images up to {disk.images / GIB:.1f} GiB")


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
