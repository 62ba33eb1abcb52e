"""MixedDataModule over generated VITON-HD + DressCode: the configured shares, one contract, stage resolutions,
mid-epoch resume to the same sample order, validation per dataset."""

import shutil
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.data.contract import check_sample
from leffa_pl.data.datamodule import DressCodeDataModule, VitonHDDataModule
from leffa_pl.data.layout import FLOW_FOLDER
from leffa_pl.data.mixed import MixedDataModule, shares
from leffa_pl.datasets.dresscode import synthetic as dresscode_synthetic
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

NATIVE = (64, 48)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("mixed")
    return (vitonhd_synthetic.make_vitonhd(base / "zalando-hd-resized", n_train=6, n_test=2, size=NATIVE, seed=5),
            dresscode_synthetic.make_dresscode(base / "DressCode", n_train=1, n_test=1, size=NATIVE, seed=5))


def mixed(roots, **kwargs) -> MixedDataModule:
    loaders = {"num_workers": 0, "val_size": 1}
    vitonhd, dresscode = (VitonHDDataModule(str(roots[0]), **loaders), DressCodeDataModule(str(roots[1]), **loaders))
    settings = {"weights": [3, 1], "resolution": (32, 24), "batch_size": 4, "num_workers": 0} | kwargs
    return MixedDataModule([vitonhd, dresscode], **settings)


def dataset_of(person_id: str) -> str:
    # VITON-HD ids are NNNNN_00.jpg, DressCode's NNNNNN_0.jpg
    return "vitonhd" if person_id.endswith("_00.jpg") else "dresscode"


def test_shares_are_whole_numbers_in_proportion():
    assert shares([3, 1], 16) == [12, 4]
    assert shares([1, 1, 1], 10) == [4, 3, 3]
    assert sum(shares([0.2, 0.5, 0.3], 7)) == 7 and shares([1, 0], 5) == [5, 0]


def test_an_epoch_holds_both_datasets_in_the_configured_ratio_and_follows_the_contract(roots):
    data = mixed(roots, epoch_size=16)
    data.setup("fit")
    batches = list(data.train_dataloader())
    ids = [person_id for batch in batches for person_id in batch["person_id"]]
    counts = Counter(dataset_of(person_id) for person_id in ids)
    assert counts == {"vitonhd": 12, "dresscode": 4}
    # each of the 6 VITON-HD training pairs twice (permutation after permutation), the 3 DressCode ones at least once
    assert set(Counter(i for i in ids if dataset_of(i) == "vitonhd").values()) == {2}
    assert len({i for i in ids if dataset_of(i) == "dresscode"}) == 3
    assert any(len({dataset_of(i) for i in batch["person_id"]}) == 2 for batch in batches)  # batches mix them
    assert all(tuple(batch["person"].shape) == (4, 3, 32, 24) for batch in batches)
    plan = data.train_dataset()
    for position in range(len(plan)):
        check_sample(plan[position], where=f"mixed[{position}]")  # ground-truth flow: both synthetic sets have it


def test_flow_is_kept_only_when_every_dataset_has_it(roots, tmp_path):
    without_flow = shutil.copytree(roots[1], tmp_path / "DressCode")  # as the real DressCode beside synthetic data
    for folder in without_flow.glob(f"*/{FLOW_FOLDER}"):
        shutil.rmtree(folder)
    data = MixedDataModule([VitonHDDataModule(str(roots[0]), num_workers=0), DressCodeDataModule(str(without_flow))],
                           epoch_size=6, resolution=(32, 24), batch_size=6, num_workers=0)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert "flow" not in batch and {dataset_of(i) for i in batch["person_id"]} == {"vitonhd", "dresscode"}


def test_validation_runs_each_dataset_s_loaders_under_its_name(roots):
    data = mixed(roots)
    data.setup("fit")
    assert data.val_names == ["vitonhd/paired", "vitonhd/unpaired", "dresscode/paired", "dresscode/unpaired"]
    loaders = data.val_dataloader()
    assert [{dataset_of(i) for batch in loader for i in batch["person_id"]} for loader in loaders] == [
        {"vitonhd"}, {"vitonhd"}, {"dresscode"}, {"dresscode"}]


def test_bad_settings_are_refused(roots):
    with pytest.raises(ValueError, match="weights must be 2"):
        mixed(roots, weights=[1])
    with pytest.raises(ValueError, match="distinct names"):
        MixedDataModule([VitonHDDataModule(str(roots[0])), VitonHDDataModule(str(roots[0]))])


class Recorder(pl.LightningModule):
    """Trains one scalar on nothing; records what each optimizer step got. Has the stage schedule's seam."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.leffa_loss_enabled, self.stage_end_step, self.rows = False, None, []

    def set_stage(self, leffa_loss, end_step):  # StageSchedule's seam, as LeffaModule has it
        self.leffa_loss_enabled, self.stage_end_step = leffa_loss, end_step

    def on_train_batch_start(self, batch, batch_idx):
        over = self.stage_end_step is not None and self.global_step >= self.stage_end_step
        return -1 if over else None

    def training_step(self, batch, batch_idx):
        self.rows.append((self.global_step, tuple(batch["person"].shape), tuple(batch["person_id"])))
        return (self.weight - batch["person"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(roots, root: Path, max_steps=-1, ckpt_path=None, callbacks=()) -> list:
    pl.seed_everything(0)
    module = Recorder()
    stages = StageSchedule([Stage("low", 2, (32, 24), 2), Stage("high", 4, (48, 32), 3)])
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         default_root_dir=root, callbacks=[stages, *callbacks],
                         enable_checkpointing=bool(callbacks))
    trainer.fit(module, mixed(roots, batch_size=1), ckpt_path=ckpt_path)
    return module.rows


def test_stages_switch_the_resolution_and_a_mid_epoch_resume_keeps_the_sample_order(roots, tmp_path):
    full = _fit(roots, tmp_path / "full")
    # 6 + 3 training pairs = 9 samples per epoch: stage "high" (3 per batch) runs 3 batches, then a new epoch
    assert [(step, shape) for step, shape, _ in full] == [(0, (2, 3, 32, 24)), (1, (2, 3, 32, 24))] + [
        (step, (3, 3, 48, 32)) for step in range(2, 6)]
    assert {dataset_of(i) for _, _, ids in full for i in ids} == {"vitonhd", "dresscode"}

    # killed after step 4: the checkpoint at step 4 is written after 2 of the 3 batches of the stage's epoch
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", save_last=True, every_n_train_steps=4)
    killed = _fit(roots, tmp_path / "run", max_steps=5, callbacks=[checkpoint])
    resumed = _fit(roots, tmp_path / "run", ckpt_path=Path(checkpoint.dirpath) / "last.ckpt")
    assert killed == full[:5]
    assert resumed == full[4:]


def test_the_config_example_builds_the_mixed_data_module():
    from leffa_pl.cli import LeffaCLI
    from leffa_pl.training.leffa_module import LeffaModule

    configs = Path(__file__).resolve().parents[1] / "configs"
    cli = LeffaCLI(LeffaModule, subclass_mode_data=True, run=False, auto_configure_optimizers=False,
                   args=["--config", str(configs / "data/vitonhd_dresscode.yaml"), "--config",
                         str(configs / "stages/vton_demo.yaml"), "--data.init_args.weights=[2, 1]",
                         "--trainer.logger=false"])
    data = cli.datamodule
    assert isinstance(data, MixedDataModule) and data.weights == [2.0, 1.0] and data.num_workers == 8
    assert [type(m) for m in data.datamodules] == [VitonHDDataModule, DressCodeDataModule]
    assert data.datamodules[1].category == "all" and data.names == ["vitonhd", "dresscode"]
