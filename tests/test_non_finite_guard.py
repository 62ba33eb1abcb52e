"""The non-finite guard: a NaN loss or gradient skips the step (weights and optimizer state kept), N in a row stop
the run with last.ckpt saved; 8-bit AdamW's epsilon and betas."""

import sys
import types

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.testing.training import RandomTryOnDataModule
from leffa_pl.training.leffa_module import LeffaModule, NonFiniteLossError
from leffa_pl.training.optimizers import DEFAULT_EPS, build_optimizer

NAN_STEP = 1


class NaNAt(LeffaModule):
    """A NaN loss term (``where="loss"``) or a NaN gradient of one weight (``"gradient"``) at optimizer step 1."""

    def __init__(self, where: str, **kwargs):
        super().__init__(learning_rate=1e-3, **kwargs)
        self.where = where
        self.model.unet.conv_out.weight.register_hook(self._gradient)

    def training_losses(self, batch, inputs, log_images):
        losses, leffa = super().training_losses(batch, inputs, log_images)
        nan = self.where == "loss" and self.global_step == NAN_STEP
        return losses | {"probe": torch.tensor(float("nan") if nan else 0.0)}, leffa

    def _gradient(self, gradient):
        return gradient * float("nan") if self.where == "gradient" and self.global_step == NAN_STEP else gradient


class Snapshots(pl.Callback):
    def __init__(self):
        self.weights, self.adam_steps = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append({k: v.clone() for k, v in pl_module.model.unet.state_dict().items()})
        state = trainer.optimizers[0].state[pl_module.model.unet.conv_out.weight]
        self.adam_steps.append(int(state["step"]))


def _trainer(tmp_path, callbacks, steps, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                      default_root_dir=tmp_path, callbacks=[StageSchedule([Stage("only", steps, (32, 24), 2)]),
                                                            *callbacks], **kwargs)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_nan_step_is_skipped_counted_and_training_goes_on(tmp_path, where):
    torch.manual_seed(0)
    module, snapshots = NaNAt(where, trainable="generative"), Snapshots()
    trainer = _trainer(tmp_path, [snapshots], 3, enable_checkpointing=False)
    with pytest.warns(UserWarning, match=f"skipped optimizer step {NAN_STEP}: non-finite "
                                         f"{'loss' if where == 'loss' else 'gradient norm'}"):
        trainer.fit(module, RandomTryOnDataModule())
    before, skipped, after = snapshots.weights
    assert all(torch.equal(before[k], skipped[k]) for k in before)  # no update at the skipped step
    assert any(not torch.equal(skipped[k], after[k]) for k in before)  # the next one trains
    assert snapshots.adam_steps == [1, 1, 2]  # AdamW's moments untouched by the skipped step
    assert all(torch.isfinite(v).all() for v in after.values())
    assert trainer.callback_metrics["train/skipped_steps"] == 1 and module.non_finite_guard.in_a_row == 0


def test_n_skipped_steps_in_a_row_stop_the_run_with_last_ckpt_saved(tmp_path):
    torch.manual_seed(0)
    module = LeffaModule(max_non_finite_steps=2)
    with torch.no_grad():
        module.model.unet.conv_out.bias.fill_(float("nan"))  # every step's loss is NaN from here on
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"at step 1 \(rank 0: loss \(total nan.*2 optimizer steps in a row "
                                                 r"skipped \(steps 0-1\).*last.ckpt.*learning rate.*epsilon"):
        _trainer(tmp_path, [checkpoint], 6).fit(module, RandomTryOnDataModule())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 and saved["non_finite_skipped_steps"] == 2
    assert all(torch.allclose(saved["state_dict"][f"model.{k}"], v, rtol=0, atol=0, equal_nan=True)  # the NaN bias
               for k, v in initial.items())


def test_8bit_adamw_takes_epsilon_and_betas_with_the_documented_default(monkeypatch):
    made = []

    class AdamW8bit:  # bitsandbytes stand-in (CUDA only, not installed here): records its arguments
        def __init__(self, parameters, **kwargs):
            made.append(kwargs)

    monkeypatch.setitem(sys.modules, "bitsandbytes", types.SimpleNamespace(optim=types.SimpleNamespace(
        AdamW8bit=AdamW8bit)))
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    cuda = torch.device("cuda")
    build_optimizer("adamw8bit", parameters, cuda, 1e-5, (0.9, 0.999), 1e-2)
    build_optimizer("adamw8bit", parameters, cuda, 1e-5, (0.8, 0.99), 1e-2, eps=1e-6)
    assert made == [dict(lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-4),
                    dict(lr=1e-5, betas=(0.8, 0.99), weight_decay=1e-2, eps=1e-6)]
    assert DEFAULT_EPS == {"adamw": 1e-8, "adamw8bit": 1e-4}
    assert build_optimizer("adamw", parameters, torch.device("cpu"), 1e-5, (0.9, 0.999), 0.0).defaults["eps"] == 1e-8
