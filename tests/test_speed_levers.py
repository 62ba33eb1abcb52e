"""model.channels_last and model.torch_compile: the same training step as the default, the same names on disk.

The tests train a smaller UNet than the tiny preset (two levels, one layer per block: the same block and
processor classes, a quarter of them), since Dynamo's tracing time grows with the blocks. Compile tests use the
``aot_eager`` backend: Dynamo's capture of both UNets (the processors' side effects that carry reference
features and attention records) and AOTAutograd's joint forward/backward graph, as inductor gets them, without
inductor's C++ code generation, which takes many minutes for the tiny model on 2 shared cores (``make
bench-levers`` runs inductor and reports its compile time).
"""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch._inductor.config

from leffa_pl.callbacks.ema import LeffaEMA
from leffa_pl.callbacks.export_checkpoint import ExportReleasedCheckpoint
from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.losses.leffa_loss import LeffaLossSettings
from leffa_pl.model.checkpoint import read_state_dict
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.testing.training import RandomTryOnDataModule, SGDLeffaModule
from leffa_pl.training.leffa_module import LeffaModule


class StepLog(pl.Callback):
    """Loss terms of every step, and the memory format of what the generative UNet's first conv is fed."""

    def __init__(self):
        self.losses, self.unet_input_channels_last = [], []

    def on_fit_start(self, trainer, pl_module):
        def record(conv, inputs):
            self.unet_input_channels_last.append(inputs[0].is_contiguous(memory_format=torch.channels_last))

        if not pl_module.hparams.torch_compile:  # Dynamo would guard on the list and recompile
            pl_module.model.unet.conv_in.register_forward_pre_hook(record)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append((outputs["loss"].detach(), outputs["leffa"].loss.detach()))


SMALL_UNET = {"block_out_channels": [32, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1}


def _fit(tmp_path, steps=2, **module_kwargs):
    """``steps`` SGD steps with the Leffa loss on every sample, EMA, export to ``tmp_path``; returns the module,
    its ``StepLog`` and the trainer."""
    torch.manual_seed(0)
    module = SGDLeffaModule(learning_rate=1e-2, reference_dropout=0.0,
                            leffa_loss=LeffaLossSettings(theta_timestep=1000), **module_kwargs)
    module.use_model(LeffaModel.tiny(**SMALL_UNET))
    log = StepLog()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                         default_root_dir=tmp_path,
                         callbacks=[StageSchedule([Stage("only", steps, (32, 24), 2, leffa_loss=True)]), log,
                                    LeffaEMA(decay=0.5), ExportReleasedCheckpoint(str(tmp_path))])
    trainer.fit(module, RandomTryOnDataModule(size=2 * steps))
    return module, log, trainer


def _assert_same_training(run, reference, rtol):
    (module, log, _), (reference_module, reference_log, _) = run, reference
    for (loss, leffa), (reference_loss, reference_leffa) in zip(log.losses, reference_log.losses, strict=True):
        torch.testing.assert_close(loss, reference_loss, rtol=rtol, atol=0)
        torch.testing.assert_close(leffa, reference_leffa, rtol=rtol, atol=0)
    state, reference_state = module.model.state_dict(), reference_module.model.state_dict()
    assert list(state) == list(reference_state)
    for key, value in reference_state.items():
        torch.testing.assert_close(state[key], value, rtol=rtol, atol=rtol, msg=key)


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("eager"))


def test_channels_last_step_equals_the_default_step(tmp_path, eager):
    run = _fit(tmp_path, channels_last=True)
    module, log, _ = run
    conv_weights = [m.weight for m in module.model.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)
    assert log.unet_input_channels_last and all(log.unet_input_channels_last)
    assert not any(eager[1].unet_input_channels_last)
    # Channels-last convolutions sum in another order: float32 rounding, two SGD steps.
    _assert_same_training(run, eager, rtol=1e-5)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    run = _fit(tmp_path_factory.mktemp("compiled"), torch_compile=True, torch_compile_backend="aot_eager")
    return run, torch._dynamo.utils.counters["stats"]["unique_graphs"] - before


def test_compiled_step_equals_the_eager_step_with_the_leffa_loss(compiled, eager):
    run, graphs = compiled
    assert graphs >= 2  # both UNets went through Dynamo (the other ops stay eager)
    assert run[0].model.unet._compiled_call_impl is not None
    # aot_eager runs the same ATen ops as eager: equal up to float32 rounding (bit-identical when measured).
    _assert_same_training(run, eager, rtol=1e-6)


def test_compiled_module_keeps_the_eager_names_in_checkpoints_and_exports(tmp_path, compiled, eager):
    (module, _, trainer), _ = compiled
    eager_module, _, eager_trainer = eager
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    state = torch.load(tmp_path / "compiled.ckpt", weights_only=True)["state_dict"]
    assert list(state) == list(eager_module.state_dict())
    eager_module.load_state_dict(state)  # strict: a compiled run's checkpoint resumes eagerly, and back
    module.load_state_dict(eager_module.state_dict())
    exported = read_state_dict(Path(trainer.default_root_dir) / "leffa.safetensors")
    eager_exported = read_state_dict(Path(eager_trainer.default_root_dir) / "leffa.safetensors")
    assert sorted(exported) == sorted(eager_exported) == sorted(eager_module.model.state_dict())


def test_unknown_compile_backend_is_refused_at_construction():
    with pytest.raises(ValueError, match="model.torch_compile_backend 'no-such-backend' is not"):
        LeffaModule(torch_compile=True, torch_compile_backend="no-such-backend")


def test_compile_with_gradient_checkpointing_warns_that_the_checkpointed_blocks_stay_eager():
    # Measured on the small UNet (aot_eager, 2 steps): losses and weights as eager to 2e-7, Dynamo graph breaks at
    # ReferenceWriteProcessor's feature write in every checkpointed block.
    with pytest.warns(UserWarning, match="checkpointed transformer blocks run uncompiled"):
        LeffaModule(torch_compile=True, torch_compile_backend="aot_eager", gradient_checkpointing=True)


def test_inductor_on_cpu_without_a_cxx_compiler_fails_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("no-such-c++",))
    with pytest.raises(RuntimeError, match=r"needs a C\+\+ compiler.*no-such-c\+\+.*model.torch_compile=false"):
        _fit(tmp_path, torch_compile=True)
