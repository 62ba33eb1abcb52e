"""After training with frozen parts (AdamW with weight decay, EMA), the export holds them bit-identical."""

import lightning.pytorch as pl
import torch

from leffa_pl.callbacks.ema import LeffaEMA
from leffa_pl.callbacks.export_checkpoint import ExportReleasedCheckpoint
from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.model.checkpoint import read_state_dict
from leffa_pl.testing.training import RandomTryOnDataModule
from leffa_pl.training.leffa_module import LeffaModule


def test_export_after_training_keeps_frozen_weights_bit_identical(tmp_path):
    torch.manual_seed(0)
    # Reference UNet frozen by choice; cross-attention and SDXL-style leftovers frozen as never reached.
    module = LeffaModule(trainable="generative", learning_rate=1e-3, weight_decay=1e-2)
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    frozen = {n for n, p in module.model.named_parameters() if not p.requires_grad}
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                         callbacks=[StageSchedule([Stage("only", 2, (32, 24), 2, leffa_loss=True)]),
                                    LeffaEMA(decay=0.9), ExportReleasedCheckpoint(str(tmp_path))])
    trainer.fit(module, RandomTryOnDataModule(size=4))

    exported = read_state_dict(tmp_path / "leffa.safetensors")
    assert {k for k in frozen if k.startswith("unet.")} and {k for k in frozen if k.startswith("unet_encoder.")}
    for key in frozen:
        assert torch.equal(exported[key], initial[key]), key
    trained = [k for k in initial if k not in frozen and k in dict(module.model.named_parameters())]
    assert all(k.startswith("unet.") for k in trained)
    assert sum(not torch.equal(exported[k], initial[k]) for k in trained) > len(trained) // 2
