"""Two CPU processes under DDP (gloo) take the same optimisation step as one process on the global batch."""

import lightning.pytorch as pl
import torch
from torch.utils.data import DistributedSampler
from training_helpers import RandomTryOnDataModule, SGDLeffaModule

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.data.resumable_loader import ResumableDataLoader, SkippingBatchSampler

PER_DEVICE_BATCH = 2


class ShardsStayResumable(pl.Callback):
    """Lightning re-instantiates the training loader with a DistributedSampler: it must stay resumable."""

    def on_train_start(self, trainer, pl_module):
        loader = trainer.train_dataloader
        assert isinstance(loader, ResumableDataLoader) and isinstance(loader.batch_sampler, SkippingBatchSampler)
        assert isinstance(loader.batch_sampler.sampler, DistributedSampler) == (trainer.world_size > 1)


def _one_step(devices: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = SGDLeffaModule(learning_rate=10.0)
    # Leffa on, so both losses and the per-sample reference dropout take part.
    stage = Stage("only", 1, (32, 24), batch_size=PER_DEVICE_BATCH * 2 // devices, leffa_loss=True)
    # find_unused_parameters: cross-attention (no text) and the reference UNet's tail never get gradients.
    strategy = "ddp_spawn_find_unused_parameters_true" if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy,
                         max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[StageSchedule([stage]), ShardsStayResumable()])
    # 4 samples: one batch of 4 in one process; the DistributedSampler gives each rank 2 of them.
    trainer.fit(module, RandomTryOnDataModule(size=2 * PER_DEVICE_BATCH))
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def test_two_process_ddp_step_equals_one_process_step_on_the_global_batch():
    single = _one_step(devices=1)
    ddp = _one_step(devices=2)  # ddp_spawn hands rank 0's weights back to this process

    torch.manual_seed(0)
    before = SGDLeffaModule().model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], single[k])]
    assert any(k.startswith("unet.") for k in moved) and any(k.startswith("unet_encoder.") for k in moved)
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-5, msg=key)  # updates are up to ~1
