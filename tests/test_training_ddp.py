"""Two CPU processes under plain DDP (gloo) take the same optimisation steps as one process on the global batch.

Plain DDP (no ``find_unused_parameters``) raises at the second step's forward pass when a trainable parameter
got no gradient in the first: two steps show that the frozen set (``leffa_pl.training.trainable``) is right.
"""

import lightning.pytorch as pl
import torch
from torch.utils.data import DistributedSampler

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.data.resumable_loader import ResumableDataLoader, SkippingBatchSampler
from leffa_pl.model.lora import LoraSettings
from leffa_pl.testing.training import RandomTryOnDataModule, SGDLeffaModule

PER_DEVICE_BATCH = 2


class ShardsStayResumable(pl.Callback):
    """Lightning re-instantiates the training loader with a DistributedSampler: it must stay resumable."""

    def on_train_start(self, trainer, pl_module):
        loader = trainer.train_dataloader
        assert isinstance(loader, ResumableDataLoader) and isinstance(loader.batch_sampler, SkippingBatchSampler)
        assert isinstance(loader.batch_sampler.sampler, DistributedSampler) == (trainer.world_size > 1)


def _two_steps(devices: int, **module_kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = SGDLeffaModule(learning_rate=1.0, **module_kwargs)
    # Leffa on, so both losses and the per-sample reference dropout take part.
    stage = Stage("only", 2, (32, 24), batch_size=PER_DEVICE_BATCH * 2 // devices, leffa_loss=True)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy,
                         max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[StageSchedule([stage]), ShardsStayResumable()])
    # 4 samples, one batch per epoch: every step's global batch is all of them, whichever 2 of them the
    # (shuffling) DistributedSampler gives each rank.
    trainer.fit(module, RandomTryOnDataModule(size=2 * PER_DEVICE_BATCH))
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def test_two_process_plain_ddp_steps_equal_one_process_steps_on_the_global_batch():
    single = _two_steps(devices=1)
    ddp = _two_steps(devices=2)  # ddp_spawn hands rank 0's weights back to this process

    torch.manual_seed(0)
    before = SGDLeffaModule().model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], single[k])]
    assert any(k.startswith("unet.") for k in moved) and any(k.startswith("unet_encoder.") for k in moved)
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-5, msg=key)  # differences ~1e-6


def test_lora_under_plain_ddp_equals_one_process():
    # adapters on the projections the loss reaches only: plain DDP's second step would raise otherwise
    lora = {"trainable": "lora", "lora": LoraSettings(rank=2, reference_unet=True)}
    single, ddp = _two_steps(devices=1, **lora), _two_steps(devices=2, **lora)
    assert any(".lora_B." in k and k.startswith("unet_encoder.") and single[k].abs().max() > 0 for k in single)
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-5, msg=key)
