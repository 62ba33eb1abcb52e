"""VITON-HD data: the contract, mask semantics and sources, pairing, resolution switches, flips, seeds."""

import shutil

import lightning
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leffa_pl.data.contract import check_sample
from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.data.files import DataFileError
from leffa_pl.data.io import read_label
from leffa_pl.data.transforms import AugmentConfig
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

NATIVE = (128, 96)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return vitonhd_synthetic.make_vitonhd(tmp_path_factory.mktemp("vitonhd") / "zalando-hd-resized", n_train=6,
                                          n_test=4, size=NATIVE, seed=1)


def module(root, **kwargs):
    kwargs = {"resolution": NATIVE, "batch_size": 3, "num_workers": 0, "val_size": 2, **kwargs}
    return VitonHDDataModule(str(root), **kwargs)


def dataset(root, split, resolution=NATIVE, mask_source="computed", augment=None):
    pairs = vitonhd.read_pairs(root, split)
    return vitonhd.VitonHDDataset(root, pairs, resolution, mask_source, with_flow=vitonhd.has_flow(root, split),
                                  augment=augment)


def iou(a, b):
    a, b = a.bool(), b.bool()
    return ((a & b).sum() / (a | b).sum()).item()


@pytest.mark.parametrize("split", ["train", "test_paired", "test_unpaired"])
def test_every_sample_follows_the_contract(root, split):
    data = dataset(root, split, resolution=(64, 48))
    for index in range(len(data)):
        sample = data[index]
        check_sample(sample, where=f"{split}[{index}]")
        assert sample["person"].shape == (3, 64, 48)
        assert ("flow" in sample) == (split != "test_unpaired")
        assert sample["inpaint_mask"].sum() > 0 and sample["loss_region"].sum() > 0


def test_mask_semantics(root):
    data = dataset(root, "test_paired")
    for index, pair in enumerate(data.pairs):
        sample = data[index]
        mask = sample["inpaint_mask"][0].bool()
        parse = torch.from_numpy(read_label(root / "test/image-parse-v3" / f"{pair.stem}.png").astype(np.int64))
        assert torch.equal(sample["agnostic"][:, mask], torch.zeros_like(sample["agnostic"][:, mask]))
        assert torch.equal(sample["agnostic"][:, ~mask], sample["person"][:, ~mask])
        assert torch.equal(sample["loss_region"][0].bool(), torch.isin(parse, torch.tensor([5, 6, 7])))
        assert mask[torch.isin(parse, torch.tensor([5, 6, 7, 10]))].all()  # garment and neck are repainted
        assert not mask[parse == 13].any()  # the face (leffa-hd repaints hair the dilated garment reaches)
        assert mask[parse == 0].any()  # dilation reaches into the background around the garment


def test_precomputed_masks_are_preferred_and_agree_with_computed(root, tmp_path):
    assert vitonhd.resolve_mask_source(root, "train", "auto") == "precomputed"
    precomputed = dataset(root, "test_paired", (64, 48), "precomputed")
    computed = dataset(root, "test_paired", (64, 48))
    for index in range(len(precomputed)):
        a, b = precomputed[index]["inpaint_mask"], computed[index]["inpaint_mask"]
        assert iou(a, b) > 0.85  # same recipe (leffa-hd at 512x384), one resized to 128x96 and again to 64x48
    # Newer archives only: without agnostic-mask/ the module computes masks and says so.
    copy = tmp_path / "old"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "train" / "agnostic-mask")
    shutil.rmtree(copy / "test" / "agnostic-mask")
    dm = module(copy)
    assert "train: computed" in dm.describe() and "test: computed" in dm.describe()
    assert "mask recipe leffa-hd (franciszzj/Leffa@7848bedf leffa_utils/utils.py get_agnostic_mask_hd)" in dm.describe()
    with pytest.raises(ValueError, match="unknown mask recipe 'old'"):
        module(copy, mask_recipe="old")
    assert "train: precomputed" in module(root).describe()
    (copy / "train/openpose_json/00000_00_keypoints.json").unlink()
    with pytest.raises(DataFileError, match="openpose_json/00000_00_keypoints.json: file not found"):
        dataset(copy, "train")[0]


def test_paired_and_unpaired_pairs(root):
    lines = [line.split() for line in (root / "train_pairs.txt").read_text().splitlines()]
    assert any(person != garment for person, garment in lines)  # the file's second column sometimes differs ...
    assert all(p.person == p.garment for p in vitonhd.read_pairs(root, "train"))  # ... training uses its own
    unpaired = vitonhd.read_pairs(root, "test_unpaired")
    assert [(p.person, p.garment) for p in unpaired] == [tuple(line.split()) for line in
                                                         (root / "test_pairs.txt").read_text().splitlines()]
    assert all(p.person == p.garment for p in vitonhd.read_pairs(root, "test_paired"))
    sample = dataset(root, "test_unpaired")[0]
    own = dataset(root, "test_paired")[1]  # person 00007 wears the garment paired with 00006 in test_pairs.txt
    assert sample["reference_id"] == own["person_id"] == unpaired[0].garment
    assert torch.equal(sample["reference"], own["reference"])


def test_resolution_switch_resizes_everything_consistently(root):
    dm = module(root, augment=False)
    dm.setup("fit")
    small = next(iter(dm.train_dataloader()))
    dm.set_stage((256, 192), 2)
    assert (dm.resolution, dm.batch_size) == ((256, 192), 2)
    large = next(iter(dm.train_dataloader()))
    assert small["person"].shape == (3, 3, 128, 96) and large["person"].shape == (2, 3, 256, 192)
    for key in ("inpaint_mask", "loss_region", "densepose", "flow"):
        assert large[key].shape[-2:] == (256, 192)
    data_small, data_large = dataset(root, "train", (64, 48), "precomputed"), dataset(root, "train", (256, 192),
                                                                                         "precomputed")
    a, b = data_small[0], data_large[0]
    down = {k: F.interpolate(b[k][None], size=(64, 48), mode="nearest")[0] for k in ("inpaint_mask", "loss_region")}
    assert iou(a["inpaint_mask"], down["inpaint_mask"]) > 0.95 and iou(a["loss_region"], down["loss_region"]) > 0.9
    densepose = F.interpolate(b["densepose"][None], size=(64, 48), mode="nearest")[0]
    assert (a["densepose"] == densepose).float().mean() > 0.9


def test_flip_keeps_densepose_sides_and_flow_right(root):
    plain = dataset(root, "train")
    flip_only = vitonhd.vitonhd_augment(AugmentConfig(flip_p=1, affine_p=0, color_p=0))
    flipped = dataset(root, "train", augment=flip_only)
    a, b = plain[2], flipped[2]
    for key in ("person", "reference", "inpaint_mask", "loss_region", "agnostic"):
        assert torch.equal(b[key], a[key].flip(-1)), key
    parts_a = vitonhd.decode_densepose(((a["densepose"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    parts_b = vitonhd.decode_densepose(((b["densepose"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    centre = NATIVE[1] / 2
    for parts in (parts_a, parts_b):  # the person's right upper arm (16) is on the image's left, mirrored or not
        right_columns, left_columns = np.nonzero(parts == 16)[1], np.nonzero(parts == 15)[1]
        assert right_columns.mean() < centre < left_columns.mean()
    # The flipped flow still warps the (flipped) garment onto the (flipped) person.
    for sample in (a, b):
        defined = ~torch.isnan(sample["flow"][0])
        grid = torch.nan_to_num(sample["flow"], nan=-2.0).permute(1, 2, 0)[None]
        warped = F.grid_sample(sample["reference"][None], grid, align_corners=False)[0]
        assert (warped - sample["person"]).abs()[:, defined].mean() < 0.15


def test_augmentation_keeps_the_contract_and_alignment(root):
    augment = vitonhd.vitonhd_augment(AugmentConfig(flip_p=0.5, affine_p=1.0, color_p=1.0))
    data = dataset(root, "train", mask_source="precomputed", augment=augment)
    lightning.seed_everything(0)
    for index in range(len(data)):
        sample = data[index]
        check_sample(sample)
        mask = sample["inpaint_mask"][0].bool()
        assert torch.equal(sample["agnostic"][:, mask], torch.zeros_like(sample["agnostic"][:, mask]))
        region = sample["loss_region"][0].bool()
        assert (region & ~mask).sum() <= 0.01 * region.sum()  # mask and region moved together
        assert torch.isnan(sample["flow"][0][~region]).all()  # flow stays on the garment region


def _batches(dm, seed):
    lightning.seed_everything(seed, workers=True)
    dm.teardown("fit")  # a new loader (the data module keeps its loader while the stage stays)
    return [batch for batch in dm.train_dataloader()]


def test_training_batches_are_reproducible_under_a_seed(root):
    dm = module(root, flip_p=0.5, affine_p=0.5, color_p=0.5)
    dm.setup("fit")
    first, again, other = _batches(dm, 7), _batches(dm, 7), _batches(dm, 8)
    assert [b["person_id"] for b in first] == [b["person_id"] for b in again]
    assert all(torch.equal(x["person"], y["person"]) for x, y in zip(first, again))
    assert any(not torch.equal(x["person"], y["person"]) for x, y in zip(first, other))


def test_a_training_loader_resumed_mid_epoch_repeats_the_rest_of_the_epoch(root):
    dm = module(root, batch_size=2, num_workers=1, affine_p=1.0, color_p=1.0)
    dm.setup("fit")
    lightning.seed_everything(4, workers=True)
    loader = dm.train_dataloader()
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    rest = list(batches)
    lightning.seed_everything(5, workers=True)  # a loader built with another shuffle seed: the state restores it
    dm.teardown("fit")
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(rest) == 2 and [b["person_id"] for b in again] == [b["person_id"] for b in rest]
    assert all(torch.equal(x["person"], y["person"]) for x, y in zip(again, rest))  # same augmentations


def test_workers_give_the_same_batches_whatever_their_number(root):
    one, two = module(root, num_workers=1), module(root, num_workers=2)
    for dm in (one, two):
        dm.setup("fit")
    a, b = _batches(one, 3), _batches(two, 3)
    assert [x["person_id"] for x in a] == [x["person_id"] for x in b]
    assert all(torch.equal(x["person"], y["person"]) and torch.equal(x["densepose"], y["densepose"])
               for x, y in zip(a, b))


def test_validation_and_test_loaders(root):
    dm = module(root, val_size=2, test_pairing="unpaired")
    dm.setup("fit")
    paired, unpaired = dm.val_dataloader()
    assert len(paired.dataset) == len(unpaired.dataset) == 2
    assert all(p.person == p.garment for p in paired.dataset.pairs)
    assert all(p.person != p.garment for p in unpaired.dataset.pairs)
    dm.setup("test")
    test = dm.test_dataloader()
    assert len(test.dataset) == 4 and "flow" not in test.dataset[0]
    assert [p.person for p in dm.predict_dataloader().dataset.pairs] == [p.person for p in test.dataset.pairs]


class _Probe(lightning.LightningModule):
    """Records what the trainer feeds it: the contract, from both validation loaders."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(("train", tuple(batch["person"].shape)))
        return (batch["person"].mean() - self.weight) ** 2

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        paired = [r == p for r, p in zip(batch["reference_id"], batch["person_id"])]
        self.seen.append((f"val{dataloader_idx}", paired))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_uses_train_and_both_validation_loaders(root, tmp_path):
    dm, probe = module(root, resolution=(64, 48), batch_size=2, val_size=2), _Probe()
    trainer = lightning.Trainer(max_steps=2, limit_val_batches=1, accelerator="cpu", logger=False,
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(probe, datamodule=dm)
    assert ("train", (2, 3, 64, 48)) in probe.seen
    assert ("val0", [True, True]) in probe.seen and ("val1", [False, False]) in probe.seen
    checkpoint = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert "VitonHDDataModule" not in checkpoint  # the stage is StageSchedule's state, saved once


def test_persistent_workers_draw_new_augmentations_each_epoch(root):
    dm = module(root, num_workers=1, persistent_workers=True, batch_size=6, affine_p=1.0)
    dm.setup("fit")
    lightning.seed_everything(5, workers=True)
    loader = dm.train_dataloader()
    first, second = ({pid: person for batch in loader for pid, person in zip(batch["person_id"], batch["person"])}
                     for _epoch in range(2))
    assert first.keys() == second.keys()
    assert all(not torch.equal(first[pid], second[pid]) for pid in first)
