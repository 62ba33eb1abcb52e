"""Training loaders under the stage schedule: built once per stage, persistent workers kept through the stage, a
mid-stage resume with persistent workers repeats the uninterrupted run, augmentations independent of the workers."""

import os
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DistributedSampler

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.data import datamodule
from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.data.mixed import MixedDataModule
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

# 6 training pairs, 2 per batch: 3 batches per epoch, so each stage of 6 steps runs 2 epochs.
STAGES = [Stage("low", 6, (32, 24), 2), Stage("high", 6, (48, 32), 2)]
AUGMENTED = {"val_size": 1, "pin_memory": False, "flip_p": 0.5, "affine_p": 1.0, "color_p": 1.0}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return vitonhd_synthetic.make_vitonhd(tmp_path_factory.mktemp("stage_loaders") / "zalando-hd-resized", n_train=6,
                                       n_test=1, size=(64, 48), seed=3)


@pytest.fixture
def worker_pids(monkeypatch):
    """Samples carry the pid of the process that loaded them."""
    load = vitonhd.VitonHDDataset.__getitem__
    monkeypatch.setattr(vitonhd.VitonHDDataset, "__getitem__", lambda self, key: load(self, key) | {
        "pid": os.getpid()})


def single(root, **loaders):
    return VitonHDDataModule(str(root), **AUGMENTED, **loaders)


def two_halves(root, **loaders):
    """A mixed module of the same data twice (the rules are the single module's)."""
    return MixedDataModule([VitonHDDataModule(str(root), num_workers=0, **AUGMENTED) for _ in range(2)],
                           names=["a", "b"], epoch_size=6, **loaders)


class Recorder(pl.LightningModule):
    """Records (step, loading pids, person ids, loss); the loss depends on the augmented pixels."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.rows, self.stage_end_step = [], None

    def set_stage(self, leffa_loss, end_step):  # StageSchedule's seam, as LeffaModule has it
        self.stage_end_step = end_step

    def on_train_batch_start(self, batch, batch_idx):
        return -1 if self.stage_end_step is not None and self.global_step >= self.stage_end_step else None

    def training_step(self, batch, batch_idx):
        loss = ((self.weight - batch["person"]) ** 2).mean()
        pids = set(batch["pid"].tolist()) if "pid" in batch else set()
        self.rows.append((self.global_step, pids, tuple(batch["person_id"]), loss.item()))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(data, root_dir: Path, max_steps=-1, ckpt_path=None, callbacks=()) -> list:
    pl.seed_everything(0, workers=True)
    module = Recorder()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         default_root_dir=root_dir, callbacks=[StageSchedule(STAGES), *callbacks],
                         enable_checkpointing=bool(callbacks))
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module.rows


@pytest.mark.parametrize("make", [single, two_halves])
def test_the_loader_is_built_once_per_stage_and_its_workers_persist_through_it(root, tmp_path, worker_pids,
                                                                            monkeypatch, make):
    builds, build = [], datamodule.build_train_loader

    def counted(*args, **kwargs):
        builds.append(args[2])  # batch size
        return build(*args, **kwargs)

    monkeypatch.setattr(datamodule, "build_train_loader", counted)  # the mixed module's loader is the base's
    rows = _fit(make(root, num_workers=1, persistent_workers=True, batch_size=2), tmp_path)
    assert [step for step, *_ in rows] == list(range(12))
    assert len(builds) == 2
    low, high = (set.union(*(pids for step, pids, *_ in rows if step // 6 == stage)) for stage in (0, 1))
    assert len(low) == len(high) == 1 and low != high and os.getpid() not in low | high


def test_a_mid_stage_resume_with_persistent_workers_repeats_the_uninterrupted_run(root, tmp_path, worker_pids):
    loaders = {"num_workers": 2, "persistent_workers": True, "batch_size": 2}
    full = _fit(single(root, **loaders), tmp_path / "full")
    # last.ckpt at step 10: in the second epoch of stage "high", after 1 of its 3 batches
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", save_last=True, every_n_train_steps=5)
    killed = _fit(single(root, **loaders), tmp_path / "run", max_steps=11, callbacks=[checkpoint])
    resumed = _fit(single(root, **loaders), tmp_path / "run", ckpt_path=Path(checkpoint.dirpath) / "last.ckpt")
    assert [step for step, *_ in resumed] == [10, 11]
    assert [(step, ids, loss) for step, _, ids, loss in killed[:10] + resumed] == [
        (step, ids, loss) for step, _, ids, loss in full]


@pytest.mark.parametrize("make", [single, two_halves])
def test_a_checkpoint_holding_the_stage_as_data_module_state_too_resumes_the_same(root, tmp_path, make):
    """Checkpoints written before the stage was saved once (as StageSchedule's state) carry it as the data module's
    state too, ``{resolution, batch_size}`` under its class name: they resume exactly as well."""
    loaders = {"num_workers": 0, "batch_size": 2}
    full = _fit(make(root, **loaders), tmp_path / "full")
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", save_last=True, every_n_train_steps=5)
    _fit(make(root, **loaders), tmp_path / "run", max_steps=11, callbacks=[checkpoint])
    state = torch.load(Path(checkpoint.dirpath) / "last.ckpt", weights_only=True)
    data = make(root, **loaders)
    assert state["global_step"] == 10 and type(data).__name__ not in state  # saved once: StageSchedule's
    state[type(data).__name__] = {"resolution": [48, 32], "batch_size": 2}  # what it held at step 10 (stage "high")
    torch.save(state, tmp_path / "old.ckpt")
    resumed = _fit(data, tmp_path / "resumed", ckpt_path=tmp_path / "old.ckpt")
    assert [step for step, *_ in resumed] == [10, 11]
    assert [(step, ids, loss) for step, _, ids, loss in resumed] == [
        (step, ids, loss) for step, _, ids, loss in full[10:]]


def test_augmentations_do_not_depend_on_the_workers(root):
    def two_passes(**loaders) -> list[dict]:
        data = single(root, resolution=(32, 24), batch_size=3, **loaders)
        data.setup("fit")
        pl.seed_everything(2)
        loader = data.train_dataloader()
        return [batch for _ in range(2) for batch in loader]

    none, persistent = two_passes(num_workers=0), two_passes(num_workers=2, persistent_workers=True)
    assert [b["person_id"] for b in none] == [b["person_id"] for b in persistent]
    assert all(torch.equal(x["person"], y["person"]) for x, y in zip(none, persistent))
    first, second = ({i: p for b in passed for i, p in zip(b["person_id"], b["person"])}
                     for passed in (none[:2], none[2:]))
    assert not any(torch.equal(first[i], second[i]) for i in first)  # a new pass, new augmentations


def test_under_ddp_the_data_module_shards_the_loader_itself(root):
    """Lightning re-instantiates a loader whose sampler is no DistributedSampler, which would end persistent
    workers at every epoch: the data module builds the shard."""
    shards = []
    for rank in (0, 1):
        data = single(root, batch_size=2, num_workers=0)
        data.setup("fit")
        data.trainer = SimpleNamespace(world_size=2, global_step=0,
                                       distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = data.train_dataloader()
        assert isinstance(loader.sampler, DistributedSampler) and loader.batch_sampler.sampler is loader.sampler
        shards.append([i for batch in loader for i in batch["person_id"]])
    assert len(shards[0]) == len(shards[1]) == 3 and not set(shards[0]) & set(shards[1])


class OneLoaderPerStage(pl.Callback):
    """Every epoch of the (one) stage trains on the same loader object: Lightning did not re-instantiate it."""

    def __init__(self):
        self.loaders = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.loaders.append(trainer.train_dataloader)

    def on_train_end(self, trainer, pl_module):
        assert len(self.loaders) == 2 and self.loaders[0] is self.loaders[1]
        assert isinstance(self.loaders[0].sampler, DistributedSampler) and self.loaders[0].persistent_workers


def test_two_ddp_processes_keep_their_loader_through_the_stage(root, tmp_path):
    # 6 pairs, 2 ranks, batch 1: 3 batches per rank and epoch, so the stage's 6 steps are 2 epochs
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         enable_checkpointing=False, default_root_dir=tmp_path,
                         callbacks=[StageSchedule([Stage("only", 6, (32, 24), 1)]), OneLoaderPerStage()])
    trainer.fit(Recorder(), single(root, num_workers=1, persistent_workers=True))  # asserts in each process
