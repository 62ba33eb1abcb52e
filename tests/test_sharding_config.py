"""configs/trainer/gpu_fsdp.yaml layered over base.yaml and gpu.yaml builds LeffaFSDPStrategy with the expected units
(Lightning refuses FSDP on CPU, so nothing is fitted here: tests/test_training_fsdp.py runs the sharded step)."""

from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.distributed.fsdp import ShardingStrategy

from leffa_pl.callbacks.ema import LeffaEMA
from leffa_pl.cli import build_cli
from leffa_pl.data.datamodule import DeepFashionDataModule
from leffa_pl.training.sharding import LeffaFSDPStrategy, ShardedPrecision, unet_blocks

PAPER_POSE = [arg for config in ("trainer/base", "trainer/gpu", "trainer/gpu_fsdp", "data/deepfashion",
                                   "stages/pose_paper") for arg in ("--config", f"configs/{config}.yaml")]


def test_the_fsdp_config_with_the_paper_pose_configs_builds_the_sharded_strategy_and_its_policies():
    # accelerator=cpu: the config's GPUs are not here (instantiated only, never set up)
    cli = build_cli([*PAPER_POSE, "--trainer.accelerator=cpu"], run=False)
    trainer, strategy = cli.trainer, cli.trainer.strategy

    assert isinstance(strategy, LeffaFSDPStrategy) and isinstance(cli.datamodule, DeepFashionDataModule)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD and strategy.kwargs["use_orig_params"]
    assert strategy._state_dict_type == "full" and strategy.activation_checkpointing_blocks
    precision = strategy.precision_plugin
    assert isinstance(precision, ShardedPrecision) and precision.precision == "bf16-mixed"
    assert (trainer.gradient_clip_val, trainer.gradient_clip_algorithm) == (1.0, "norm")  # base.yaml's recipe kept
    assert isinstance(trainer.logger, TensorBoardLogger) and trainer.num_devices == 8
    assert any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)
    assert not any(isinstance(c, LeffaEMA) for c in trainer.callbacks)
    assert not cli.model.hparams.gradient_checkpointing  # the strategy checkpoints instead

    leffa = cli.model.model
    plan = strategy.sharding_plan(leffa)
    blocks = unet_blocks(leffa)
    names = {id(module): name for name, module in blocks.items()}
    # every UNet block is a unit but the reference UNet's last transformer block (reached through its norm1 only)
    assert sorted(set(blocks) - {names[id(m)] for m in plan.units}) == [
        "unet_encoder.up_blocks.3.attentions.2.transformer_blocks.0"]
    assert {id(m) for m in plan.checkpointed} == set(names) and plan.ignored == [leffa.vae]


def test_lightning_fsdp_strategy_settings_that_the_model_decides_are_refused():
    with pytest.raises(ValueError, match="sets auto_wrap_policy from the model itself"):
        LeffaFSDPStrategy(auto_wrap_policy={object})
    with pytest.raises(ValueError, match="sharding_strategy must be one of"):
        LeffaFSDPStrategy(sharding_strategy="NO_SHARD")


def test_ema_refuses_fsdp_naming_the_fix():
    with pytest.raises(ValueError, match="Remove LeffaEMA from trainer.callbacks"):
        LeffaEMA().setup(SimpleNamespace(strategy=LeffaFSDPStrategy()), None, "fit")
