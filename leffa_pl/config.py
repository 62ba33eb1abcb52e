"""What ``leffa-pl`` parses: its LightningCLI arguments, and ``read_config``, configs read through that same parser
without building anything (the planner plans from it exactly what ``leffa-pl fit`` would run).

Configs are parsed in jsonargparse's ``omegaconf+`` mode: ``${run.dir}`` in a config is the run folder of the
merged configuration and command line, so ``--run.dir=...`` moves every path of a run at once. The trainer configs
layer over ``configs/trainer/base.yaml`` (``check_trainer_base``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch.cli import LightningCLI

from leffa_pl.callbacks.checkpoints import RetainedCheckpoints
from leffa_pl.callbacks.export_checkpoint import ExportReleasedCheckpoint
from leffa_pl.callbacks.preemption import CheckpointOnSigterm
from leffa_pl.callbacks.stage_schedule import StageSchedule
from leffa_pl.callbacks.tensorboard_images import LeffaImageLogger
from leffa_pl.evaluation.in_training import ValidationScores
from leffa_pl.training.leffa_module import LeffaModule
from leffa_pl.training.module_settings import FLAT_SETTINGS, new_key

TRAINER_BASE = Path("configs/trainer/base.yaml")
# Model settings LeffaModule took once -> what sets that now. Checkpoints of older runs carry them in their
# hyper_parameters, which LightningCLI applies as model settings on --ckpt_path: accepted, dropped with a warning.
RETIRED_MODEL_SETTINGS = {"log_images_every_n_steps": "images.every_n_steps (the LeffaImageLogger)"}
CLI_SETTINGS = {"model_class": LeffaModule, "subclass_mode_data": True, "auto_configure_optimizers": False,
                "parser_kwargs": {"parser_mode": "omegaconf+"}}


class ConfigError(ValueError):
    """Configs that do not compose, with the fix in the message."""


class LeffaArguments(LightningCLI):
    """LightningCLI with ``leffa-pl``'s own arguments (``leffa_pl.cli.LeffaCLI`` runs it)."""

    def add_arguments_to_parser(self, parser) -> None:
        for name in RETIRED_MODEL_SETTINGS:
            parser.add_argument(f"--model.{name}", default=None, help=argparse.SUPPRESS)
        # The flat settings that moved into config sections (leffa_pl/training/module_settings.py): refused in a
        # config or on the command line (leffa_pl/cli.py), moved into their sections from a --ckpt_path checkpoint
        # written before. Shown in --help: a suppressed option is lost when a config has ${...} (jsonargparse's
        # omegaconf+ mode re-reads the config without it).
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
        parser.add_argument("--run.checkpoint_every_n_steps", type=int,
                            default=inspect.signature(RetainedCheckpoints).parameters["every_n_train_steps"].default,
                            help=f"optimizer steps between the step checkpoints of {TRAINER_BASE}'s "
                                 "RetainedCheckpoints (its every_n_train_steps)")
        # Our callbacks get their own config sections; LightningCLI appends them to trainer.callbacks.
        parser.add_lightning_class_args(StageSchedule, "stages")
        parser.add_lightning_class_args(LeffaImageLogger, "images")
        parser.add_lightning_class_args(ExportReleasedCheckpoint, "export")
        parser.add_lightning_class_args(ValidationScores, "scores")
        parser.add_lightning_class_args(CheckpointOnSigterm, "preemption")


def set_leffa_parsing() -> None:
    # ${run.dir} names the key from the config's top, which sits under the subcommand (fit.run.dir).
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)


def config_files(args: Sequence[str]) -> list[str]:
    """The ``--config`` files of a command line, in order."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.partition("=")[2])
    return files


def check_trainer_base(configs: Sequence[str | Path]) -> None:
    """A trainer config (``configs/trainer/``) layered without that folder's ``base.yaml`` before it would run
    without the checkpoints, logger, checkpoint IO, clipping and export folder it relies on: refused, naming the
    fix."""
    loaded = [Path(path).resolve() for path in configs]
    for i, path in enumerate(loaded):
        base = path.parent / TRAINER_BASE.name
        if path.parent.name == TRAINER_BASE.parent.name and path != base and base.is_file() \
                and base not in loaded[:i]:
            raise ConfigError(f"{configs[i]} layers over {os.path.relpath(base)} (checkpoints, logger, checkpoint IO,"
                              f" clipping, export folder): give --config {os.path.relpath(base)} before it")


def configured_class(spec) -> type:
    """The class a parsed ``{class_path, init_args}`` entry names (the parser has checked that it imports)."""
    module, _, name = str(spec["class_path"]).rpartition(".")
    return getattr(importlib.import_module(module), name)


def callbacks_of(config: dict, kind: type) -> list[dict]:
    """``init_args`` of each ``trainer.callbacks`` entry of a parsed configuration (``as_dict()``) that is a
    ``kind``, in order."""
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    return [spec.get("init_args") or {} for spec in callbacks
            if isinstance(spec, dict) and "class_path" in spec and issubclass(configured_class(spec), kind)]


class _ParseOnly(LeffaArguments):
    """Parses as ``leffa-pl`` does; builds and seeds nothing."""

    def parse_arguments(self, parser, args) -> None:
        self.config = parser.parse_args(args)  # LightningCLI's own warns when the process has arguments of its own

    def _set_seed(self) -> None:
        pass  # reading a configuration is no run: the process's random state stays as it is

    def instantiate_classes(self) -> None:
        pass


def read_config(configs: Sequence[str | Path], args: Sequence[str] = ()) -> Namespace:
    """The configuration ``leffa-pl fit --config <each of configs> <args>`` runs, parsed and validated (class
    paths resolved, defaults filled in, ``${...}`` resolved), nothing instantiated."""
    set_leffa_parsing()
    missing = [str(path) for path in configs if not Path(path).is_file()]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no such config file")
    check_trainer_base(configs)
    return _ParseOnly(**CLI_SETTINGS, args=[*(f"--config={path}" for path in configs), *args], run=False,
                      load_from_checkpoint_support=False).config
