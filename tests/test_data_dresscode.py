"""DressCode data: categories, root pair files, per-category masks, keypoint frame, DensePose encoding."""

import json

import numpy as np
import pytest
import torch

from leffa_pl.data.contract import check_sample
from leffa_pl.data.datamodule import DressCodeDataModule
from leffa_pl.data.files import DatasetFilesError
from leffa_pl.data.io import read_label
from leffa_pl.data.transforms import AugmentConfig
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.dresscode import synthetic as dresscode_synthetic

NATIVE = (128, 96)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return dresscode_synthetic.make_dresscode(tmp_path_factory.mktemp("dresscode") / "DressCode", n_train=2, n_test=2,
                                      size=NATIVE, seed=2)


def dataset(root, split, category, resolution=NATIVE, augment=None):
    pairs, problems = dresscode.read_pairs(root, split, category)
    assert not problems
    return dresscode.DressCodeDataset(root, pairs, resolution, with_flow=dresscode.has_flow(root, split, category),
                                      augment=augment)


def labels_of(root, pair):
    return torch.from_numpy(read_label(root / pair.person_category / "label_maps" / f"{pair.person}_4.png")
                            .astype(np.int64))


@pytest.mark.parametrize("split", ["train", "test_paired", "test_unpaired"])
def test_contract_for_all_categories(root, split):
    data = dataset(root, split, "all", resolution=(64, 48))
    assert {p.person_category for p in data.pairs} == set(dresscode.CATEGORIES)
    for index in range(len(data)):
        sample = data[index]
        check_sample(sample, where=f"{split}[{index}]")
        assert sample["person_id"].endswith("_0.jpg") and sample["reference_id"].endswith("_1.jpg")
        assert ("flow" in sample) == (split != "test_unpaired")


def test_category_selection_uses_the_category_pair_files(root):
    for category, first in (("upper_body", "000"), ("lower_body", "013"), ("dresses", "020")):
        pairs, _ = dresscode.read_pairs(root, "train", category)
        assert pairs and all(p.person.startswith(first) and p.person_category == category for p in pairs)
    everything, _ = dresscode.read_pairs(root, "test_unpaired", "all")
    assert len(everything) == 6
    assert all(p.person != p.garment and p.person_category == p.garment_category for p in everything)


def test_masks_follow_the_category(root):
    expectations = {  # label: must be repainted (True) / kept (False) by the default recipe (dresscode)
        "upper_body": {4: True, 6: False, 9: False, 10: False, 2: False},  # legs: the dilation may reach
        "lower_body": {6: True, 12: True, 13: True, 4: False, 14: False, 15: False, 2: False, 5: False},
        "dresses": {7: True, 12: True, 13: True, 9: False, 10: False, 2: False},
    }
    for category, expected in expectations.items():
        data = dataset(root, "test_paired", category)
        for index, pair in enumerate(data.pairs):
            sample, labels = data[index], labels_of(root, pair)
            mask = sample["inpaint_mask"][0].bool()
            region = torch.isin(labels, torch.tensor(dresscode.masks.ATR_REGION[category]))
            assert torch.equal(sample["loss_region"][0].bool(), region) and region.any()
            for label, repainted in expected.items():
                if (labels == label).any():
                    covered = mask[labels == label].float().mean().item()
                    assert covered == (1.0 if repainted else 0.0), (category, pair.person, label, covered)
            head = labels == 11
            if category != "lower_body":  # the neck (head label below the shoulders) is repainted, the face kept
                assert mask[head].any() and not mask[head].all()
            else:
                assert not mask[head].any()


def test_keypoints_are_scaled_from_the_384x512_frame(tmp_path):
    path = tmp_path / "000000_2.json"
    points = [[192.0, 256.0, 0.9, 0], [384.0, 512.0, 0.8, 1], [100.0, 0.0, 0.7, 2], [0.0, 0.0, 0.0, 3],
              [0.5, 1.0, 0.1, 4]]
    path.write_text(json.dumps({"keypoints": points}))
    xy = dresscode.read_keypoints(path, (1024, 768))
    assert np.allclose(xy[0], [384, 512]) and np.allclose(xy[1], [768, 1024])
    assert np.allclose(xy[2], [200, 0])  # on the top edge: missing only when x <= 1 and y <= 1 (official rule)
    assert np.isnan(xy[3]).all() and np.isnan(xy[4]).all()


def test_densepose_is_the_part_index_on_three_channels(root):
    data = dataset(root, "train", "upper_body")
    pair, sample = data.pairs[0], data[0]
    parts = read_label(root / "upper_body" / "dense" / f"{pair.person}_5.png")
    expected = torch.from_numpy(parts.astype(np.float32) / 127.5 - 1)
    assert all(torch.equal(sample["densepose"][c], expected) for c in range(3))
    flipped = dataset(root, "train", "upper_body",
                      augment=dresscode.dresscode_augment(AugmentConfig(flip_p=1, affine_p=0, color_p=0)))[0]
    mirrored = torch.from_numpy(dresscode.DENSEPOSE_FLIP_LUT[parts[:, ::-1]].astype(np.float32) / 127.5 - 1)
    assert torch.equal(flipped["densepose"][0], mirrored)


def test_data_module_all_categories_and_missing_ids(root, tmp_path):
    dm = DressCodeDataModule(str(root), category="all", resolution=(64, 48), batch_size=4, num_workers=0, val_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["person"].shape == (4, 3, 64, 48)
    assert [len(loader.dataset) for loader in dm.val_dataloader()] == [2, 2]
    broken = tmp_path / "DressCode"
    broken.mkdir()
    (broken / "train_pairs.txt").write_text("999999_0.jpg\t999999_1.jpg\n")
    dm = DressCodeDataModule(str(broken), category="all", num_workers=0)
    with pytest.raises(DatasetFilesError, match=r"\{upper_body,lower_body,dresses\}/images/999999_0.jpg"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="category"):
        DressCodeDataModule(str(root), category="shoes")
