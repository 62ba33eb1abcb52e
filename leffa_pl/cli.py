"""``leffa-pl``: LightningCLI entry point (fit / validate / test / predict) configured by YAML in configs/; its
arguments and how configs are parsed: ``leffa_pl.config``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from leffa_pl.callbacks.export_checkpoint import ExportError
from leffa_pl.callbacks.preemption import EXIT_SIGTERM
from leffa_pl.callbacks.stage_schedule import StageProgressBar
from leffa_pl.config import (
    CLI_SETTINGS,
    RETIRED_MODEL_SETTINGS,
    ConfigError,
    LeffaArguments,
    callbacks_of,
    check_trainer_base,
    config_files,
    set_leffa_parsing,
)
from leffa_pl.planning.disk import model_for_check, plan_disk
from leffa_pl.planning.plan import GIB
from leffa_pl.training.leffa_module import LeffaModule
from leffa_pl.training.module_settings import FLAT_SETTINGS, flat_settings_refusal
from leffa_pl.training.run_folder import (
    RunFolderError,
    check_free_space,
    check_resume_checkpoint,
    check_writable,
    prepare_run_folder,
    remove_stale_checkpoint_temporaries,
)

OUT_OF_MEMORY_ADVICE = """
Out of memory. Lower the per-device batch size of the stages (stages.stages[i].batch_size) and raise
their accumulate_grad_batches to keep the global batch, set model.gradient_checkpointing=true,
and use trainer.precision=bf16-mixed on GPUs that support it."""


class LeffaCLI(LeffaArguments):
    def parse_arguments(self, parser, args) -> None:
        check_trainer_base(config_files(sys.argv[1:] if args is None else args))
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
    return [settings.get("dirpath") for settings in callbacks_of(config, ModelCheckpoint)]


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
    set_leffa_parsing()
    return LeffaCLI(**CLI_SETTINGS, save_config_kwargs={"overwrite": True}, args=args, run=run)


def main(args: list[str] | None = None) -> None:
    try:
        build_cli(args)
    except torch.OutOfMemoryError:
        print(OUT_OF_MEMORY_ADVICE, file=sys.stderr)
        raise
    except (RunFolderError, ExportError, ConfigError) as error:
        sys.exit(f"leffa-pl: error: {error}")
    except SIGTERMException:
        sys.exit(EXIT_SIGTERM)


if __name__ == "__main__":
    main()
