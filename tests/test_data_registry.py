"""The data-module registry, and constructors whose settings LightningCLI sees through ``**settings``."""

import pytest
from jsonargparse import ArgumentParser

from leffa_pl.data.datamodule import DeepFashionDataModule, VitonHDDataModule
from leffa_pl.data.registry import build_data_module
from leffa_pl.datasets import registry

BASE_SETTINGS = {"resolution", "batch_size", "num_workers", "pin_memory", "persistent_workers", "val_size",
                 "augment", "flip_p", "affine_p", "color_p", "file_check", "check_workers"}


def cli_settings(cls) -> set[str]:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    return {action.dest.removeprefix("data.") for action in parser._actions if action.dest.startswith("data.")}


def test_cli_sees_every_setting_through_the_constructor_chain():
    assert cli_settings(VitonHDDataModule) >= BASE_SETTINGS | {"root", "test_pairing", "mask_source"}
    deepfashion = cli_settings(DeepFashionDataModule)
    assert deepfashion >= BASE_SETTINGS - {"flip_p"} | {"root"} and "flip_p" not in deepfashion  # fixed at 0


def test_settings_reach_the_module_and_its_hyperparameters():
    dm = build_data_module("dresscode", "somewhere", category="dresses", batch_size=3, test_pairing="unpaired",
                           file_check="exists", mask_source=None)
    assert (dm.category, dm.batch_size, dm.test_split, dm.file_check) == ("dresses", 3, "test_unpaired", "exists")
    assert dm.hparams["batch_size"] == 3 and dm.hparams["category"] == "dresses"
    assert DeepFashionDataModule("somewhere").augment_config.flip_p == 0.0


def test_registry_refuses_unknown_datasets_and_foreign_settings():
    assert sorted(registry.names()) == ["deepfashion", "dresscode", "vitonhd"]
    with pytest.raises(ValueError, match="category does not apply"):
        build_data_module("vitonhd", "somewhere", category="dresses")
    with pytest.raises(ValueError, match="unknown dataset 'viton'"):
        build_data_module("viton", "somewhere")
