"""DeepFashion pose-transfer data: the real layout and file formats, the contract, DensePose IUV, skipped pairs."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from leffa_pl.data import check_data
from leffa_pl.data.contract import check_sample
from leffa_pl.data.datamodule import DeepFashionDataModule
from leffa_pl.data.files import DataFileError, DatasetFilesError
from leffa_pl.data.io import read_rgb
from leffa_pl.data.transforms import AugmentConfig
from leffa_pl.datasets import registry, synthetic_people
from leffa_pl.datasets.deepfashion import reader as deepfashion
from leffa_pl.datasets.deepfashion import synthetic as synthetic_deepfashion

NATIVE = (88, 60)  # the 1101x750 aspect, small
BLOUSE = ["fashionWOMENBlouses_Shirtsid0000635004_1front.jpg", "fashionWOMENBlouses_Shirtsid0000635004_2side.jpg"]
DENIM = ["fashionMENDenimid0000008001_1front.jpg", "fashionMENDenimid0000008001_7additional.jpg"]
ANNOTATIONS = {  # as in the real files: "name: [y]: [x]", 18 COCO points, -1 = missing, 256x176 frame
    BLOUSE[0]: ("[25, 53, 53, 95, 128, 53, 96, 131, 134, 189, 240, 134, 188, 240, 20, 20, 22, 22]",
                "[86, 85, 62, 57, 58, 108, 111, 112, 70, 71, 72, 100, 99, 98, 81, 91, 75, 97]"),
    BLOUSE[1]: ("[24, 52, 54, 97, 130, -1, -1, -1, 135, 190, 241, -1, -1, -1, 19, -1, 21, -1]",
                "[90, 88, 80, 78, 80, -1, -1, -1, 84, 86, 85, -1, -1, -1, 93, -1, 84, -1]"),
    DENIM[0]: ("[30, 60, 60, 100, 140, 60, 100, 140, 140, 195, 245, 140, 195, 245, 26, 26, 28, 28]",
               "[88, 88, 60, 55, 50, 116, 121, 126, 72, 72, 72, 104, 104, 104, 84, 92, 78, 98]"),
}


def _person(height, width, seed):
    """A plain figure on a light background and its IUV map (torso I=2, head I=23)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 230, np.uint8)
    parts = np.zeros((height, width), np.uint8)
    top, left = int(rng.integers(height // 4, height // 3)), int(rng.integers(width // 4, width // 3))
    parts[top:top + height // 2, left:left + width // 3] = 2
    parts[top - height // 8:top, left + 2:left + width // 3 - 2] = 23
    image[parts == 2] = rng.integers(0, 200, 3)
    image[parts == 23] = (224, 172, 138)
    u = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    v = np.tile(np.linspace(0, 1, height, dtype=np.float32)[:, None], (1, width))
    return image, deepfashion.encode_iuv(parts, u, v)


def write_real_layout(root, layout="flat"):
    """A DeepFashion copy written by hand in the distributed formats (not by the synthetic-data generator)."""
    root.mkdir(parents=True)
    splits = {"train": BLOUSE, "test": DENIM}
    (root / "densepose").mkdir()
    for number, (split, names) in enumerate(splits.items()):
        (root / f"{split}.lst").write_text("\n".join(names) + "\n")
        pair_rows = f"from,to\n{names[0]},{names[1]}\n{names[1]},{names[0]}\n"
        (root / f"fasion-resize-pairs-{split}.csv").write_text(pair_rows)
        rows = [f"{name}: {ys}: {xs}" for name, (ys, xs) in ANNOTATIONS.items() if name in names]
        (root / f"fasion-resize-annotation-{split}.csv").write_text("name:keypoints_y:keypoints_x\n"
                                                                    + "\n".join(rows))
        for index, name in enumerate(names):
            image, iuv = _person(*NATIVE, seed=10 * number + index)
            path = (root / f"{split}_highres" / name if layout == "flat"
                    else root / "img_highres" / deepfashion.unflatten_name(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, quality=95)
            Image.fromarray(iuv, mode="RGB").save(root / "densepose" / f"{name[:-4]}.png")
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_deepfashion.make_deepfashion(tmp_path_factory.mktemp("df") / "deepfashion", train_people=3,
                                               test_people=2, views=3, size=NATIVE, seed=1)


def module(root, **kwargs):
    kwargs = {"resolution": (64, 44), "batch_size": 4, "num_workers": 0, "val_size": 2, "augment": False, **kwargs}
    return DeepFashionDataModule(str(root), **kwargs)


def _resized(path, size):
    image = np.array(read_rgb(path))
    return F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=size, mode="area")[0]


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_reader_on_the_real_layout(tmp_path, layout):
    root = write_real_layout(tmp_path / "deepfashion", layout)
    assert deepfashion.image_layout(root, "train") == layout
    read = deepfashion.read_pairs(root, "train")
    assert not read.problems and not read.skipped_pairs
    assert [(p.reference, p.person) for p in read.pairs] == [(BLOUSE[0], BLOUSE[1]), (BLOUSE[1], BLOUSE[0])]
    side = read.keypoints[BLOUSE[1]]
    assert side.shape == (18, 2) and np.allclose(side[0], [90, 24]) and np.allclose(side[4], [80, 130])  # (x, y)
    assert np.isnan(side[[5, 6, 7, 11, 12, 13, 15, 17]]).all() and not np.isnan(side[[0, 1, 14, 16]]).any()
    dm = module(root, resolution=(88, 60))
    dm.setup("fit")
    data = dm.train_dataloader().dataset
    sample = data[0]
    check_sample(sample)
    assert (sample["reference_id"], sample["person_id"]) == (BLOUSE[0], BLOUSE[1])  # reference = from, person = to
    to_path = root / ("train_highres/" + BLOUSE[1] if layout == "flat"
                      else "img_highres/WOMEN/Blouses_Shirts/id_00006350/04_2_side.jpg")
    expected = _resized(to_path, (88, 60)) / 127.5 - 1
    assert torch.allclose(sample["person"], expected, atol=1e-5)
    iuv = deepfashion.read_iuv(root / "densepose" / f"{BLOUSE[1][:-4]}.png")  # the target's DensePose
    assert torch.equal(sample["densepose"], deepfashion.iuv_to_tensor(iuv))
    keypoints = data.keypoints(0)
    assert np.allclose(keypoints["person"][0], [90 * 60 / 176, 24 * 88 / 256])
    test = DeepFashionDataModule(str(root), num_workers=0).pairs("test")[0]
    assert [p.person for p in test] == [DENIM[1], DENIM[0]]  # DENIM[1] has no annotation row: allowed


def test_flattened_names():
    original = "img_highres/WOMEN/Blouses_Shirts/id_00006350/04_1_front.jpg"
    assert deepfashion.flatten_name(original) == "fashionWOMENBlouses_Shirtsid0000635004_1front.jpg"
    assert deepfashion.unflatten_name(DENIM[1]) == "MEN/Denim/id_00000080/01_7_additional.jpg"
    for name in BLOUSE + DENIM:
        assert deepfashion.flatten_name(deepfashion.unflatten_name(name)) == name
    with pytest.raises(ValueError, match="not a flattened DeepFashion name"):
        deepfashion.unflatten_name("00006_00.jpg")


def test_contract_mask_agnostic_and_loss_region(synthetic):
    dm = module(synthetic, resolution=(88, 60))
    dm.setup("fit")
    data = dm.train_dataloader().dataset
    assert len(data) == 3 * 6  # all ordered pairs of 3 views of 3 train people
    for index in range(0, len(data), 4):
        sample_ = data[index]
        check_sample(sample_, where=f"train[{index}]")
        reference, person = (deepfashion.NAME_PATTERN.match(sample_[k]) for k in ("reference_id", "person_id"))
        assert reference["id"] == person["id"] and reference["view"] != person["view"]  # same person, other pose
        assert torch.equal(sample_["inpaint_mask"], torch.ones(1, 88, 60))
        assert torch.equal(sample_["agnostic"], torch.zeros(3, 88, 60))
        foreground = sample_["densepose"][2] > -1  # part index != 0
        region = sample_["loss_region"][0].bool()
        assert region[foreground].all() and region.sum() > 1.15 * foreground.sum()  # dilated
        assert region.float().mean() < 0.6


def test_densepose_encoding_round_trip(tmp_path):
    parts = np.array([[0, 1, 2], [12, 23, 24]], np.uint8)
    u = np.array([[0.7, 0.0, 0.5], [1.0, 0.25, 0.999]], np.float32)
    v = np.array([[0.3, 1.0, 0.5], [0.0, 0.75, 0.001]], np.float32)
    iuv = deepfashion.encode_iuv(parts, u, v)
    assert iuv[0, 0].tolist() == [0, 0, 0]  # background: U = V = 0 whatever was passed
    assert iuv[1, 2].tolist() == [255, 0, 24] and iuv[0, 2].tolist() == [128, 128, 2]
    path = tmp_path / "map.png"
    Image.fromarray(iuv, mode="RGB").save(path)
    stored = deepfashion.read_iuv(path)
    assert np.array_equal(stored, iuv)
    tensor = deepfashion.iuv_to_tensor(stored)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    assert torch.equal(tensor[:, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))
    assert torch.allclose(tensor[:, 1, 2], torch.tensor([1.0, -1.0, 1.0]))  # U = 1, V = 0, I = 24
    assert torch.allclose(tensor[2, 0, 2], torch.tensor(2 / 24 * 2 - 1))  # I / 24 in [-1, 1]
    assert np.array_equal(deepfashion.tensor_to_iuv(tensor), iuv)
    # Nearest resizing only repeats stored (U, V, I) triples: no blended parts or chart coordinates.
    from leffa_pl.data.transforms import resize_label
    big = resize_label(np.kron(iuv, np.ones((7, 5, 1), np.uint8)), (9, 11))
    assert {tuple(t) for t in big.reshape(-1, 3)} <= {tuple(t) for t in iuv.reshape(-1, 3)}
    Image.fromarray(parts, mode="L").save(tmp_path / "gray.png")
    with pytest.raises(DataFileError, match="gray.png: expected an 8-bit RGB"):
        deepfashion.read_iuv(tmp_path / "gray.png")
    bad = iuv.copy()
    bad[0, 0, 2] = 30
    Image.fromarray(bad, mode="RGB").save(tmp_path / "bad.png")
    with pytest.raises(DataFileError, match=r"bad.png: part index .* up to 30 > 24"):
        deepfashion.read_iuv(tmp_path / "bad.png")


def test_annotation_and_pair_files_are_validated(tmp_path):
    path = tmp_path / "fasion-resize-annotation-train.csv"
    path.write_text("name,keypoints_y,keypoints_x\n")
    with pytest.raises(DataFileError, match="expected the header 'name:keypoints_y:keypoints_x'"):
        deepfashion.read_annotations(path)
    ys, xs = ANNOTATIONS[BLOUSE[0]]
    path.write_text(f"name:keypoints_y:keypoints_x\n{BLOUSE[0]}: {ys}: {xs}\n{BLOUSE[1]}: [1, 2]: [3, 4]\n")
    with pytest.raises(DataFileError, match="line 3: expected 18 y and 18 x values, got 2 and 2"):
        deepfashion.read_annotations(path)
    path.write_text(f"name:keypoints_y:keypoints_x\n{BLOUSE[0]}, {ys}, {xs}\n")
    with pytest.raises(DataFileError, match="line 2: expected 3 ':'-separated fields"):
        deepfashion.read_annotations(path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"{BLOUSE[0]},{BLOUSE[1]}\n")
    with pytest.raises(DataFileError, match="expected a header with columns 'from' and 'to'"):
        deepfashion.read_pair_csv(pairs)
    root = write_real_layout(tmp_path / "unlisted")
    with open(root / "fasion-resize-pairs-train.csv", "a") as handle:
        handle.write(f"{BLOUSE[0]},{DENIM[0]}\n")  # a test image in the train pairs
    expected = rf"fasion-resize-pairs-train.csv  \(unreadable: line 4: {DENIM[0]} is not in train.lst\)"
    with pytest.raises(DatasetFilesError, match=expected):
        module(root).setup("fit")


def test_missing_files_skip_pairs_with_a_count_and_the_checker_lists_them(synthetic, tmp_path, capsys):
    root = tmp_path / "deepfashion"
    shutil.copytree(synthetic, root)
    names = (root / "train.lst").read_text().split()
    (root / "densepose" / f"{names[1][:-4]}.png").unlink()  # no detection: the 2 pairs with it as target go
    (root / "train_highres" / names[3]).unlink()  # an image: the 4 pairs using it (either side) go
    dm = module(root)
    with pytest.warns(UserWarning, match=r"DeepFashion train: skipped 6 of 18 pairs with missing files "
                                         r"\(1 DensePose maps, 1 images missing\)"):
        dm.setup("fit")
    kept = dm.train_dataloader().dataset.pairs
    assert len(kept) == 12 and all(p.person != names[1] and names[3] not in (p.person, p.reference) for p in kept)
    assert check_data.main([str(root), "--dataset", "deepfashion", "--level", "exists"]) == 1
    out = capsys.readouterr().out
    assert "train: skipped 6 of 18 pairs" in out and "2 missing, 0 unreadable" in out
    assert "  densepose/: 1 missing" in out and "  train_highres/: 1 missing" in out
    assert f"{root / 'densepose' / names[1][:-4]}.png  (missing)" in out
    assert f"{root / 'train_highres' / names[3]}  (missing)" in out


def test_checker_passes_the_synthetic_dataset_and_names_corrupt_files(synthetic, tmp_path, capsys):
    assert check_data.main([str(synthetic), "--dataset", "deepfashion"]) == 0
    assert "DeepFashion" in capsys.readouterr().out
    root = tmp_path / "deepfashion"
    shutil.copytree(synthetic, root)
    name = (root / "test.lst").read_text().split()[0]
    image = root / "test_highres" / name
    image.write_bytes(image.read_bytes()[:-300])
    (root / "densepose" / f"{name[:-4]}.png").write_bytes(b"not a png")
    assert check_data.main([str(root), "--dataset", "deepfashion"]) == 1
    out = capsys.readouterr().out
    assert "0 missing, 2 unreadable" in out and "  test_highres/: 1 unreadable" in out
    assert f"{image}  (unreadable: unreadable image (image file is truncated" in out
    with pytest.raises(DatasetFilesError, match=rf"densepose/{name[:-4]}.png  \(unreadable"):
        module(root).setup("test")


def test_resolution_switch(synthetic):
    dm = module(synthetic, resolution=(64, 44))
    dm.setup("fit")
    small = next(iter(dm.train_dataloader()))
    dm.set_stage((128, 88), 2)
    large = next(iter(dm.train_dataloader()))
    assert small["person"].shape == (4, 3, 64, 44) and large["person"].shape == (2, 3, 128, 88)
    for key in ("inpaint_mask", "loss_region", "densepose", "agnostic", "reference"):
        assert large[key].shape[-2:] == (128, 88), key
    data = dm.train_dataloader().dataset
    a = deepfashion.DeepFashionDataset(synthetic, data.pairs, (64, 44))[0]
    b = data[0]
    down = F.interpolate(b["loss_region"][None], size=(64, 44), mode="nearest")[0].bool()
    region = a["loss_region"].bool()
    assert (region & down).sum() / (region | down).sum() > 0.9  # the dilation scales with the height
    densepose = F.interpolate(b["densepose"][None], size=(64, 44), mode="nearest")[0]
    assert (densepose == a["densepose"]).float().mean() > 0.9


def test_no_flips_and_augmentation_keeps_region_on_densepose(synthetic):
    with pytest.raises(ValueError, match="horizontal flips are off for DeepFashion"):
        deepfashion.deepfashion_augment(AugmentConfig(flip_p=0.5))
    with pytest.raises(TypeError):
        DeepFashionDataModule(str(synthetic), flip_p=0.5)
    augment = deepfashion.deepfashion_augment(AugmentConfig(flip_p=0, affine_p=1.0, color_p=1.0))
    pairs = deepfashion.read_pairs(synthetic, "train").pairs
    plain = deepfashion.DeepFashionDataset(synthetic, pairs, (88, 60))
    moved = deepfashion.DeepFashionDataset(synthetic, pairs, (88, 60), augment=augment)
    torch.manual_seed(0)
    for index in (0, 7):
        a, b = plain[index], moved[index]
        check_sample(b)
        assert not torch.equal(a["densepose"], b["densepose"])  # shifted/scaled ...
        assert b["loss_region"][0].bool()[b["densepose"][2] > -1].all()  # ... and the region moved with it
        assert torch.equal(b["agnostic"], torch.zeros_like(b["agnostic"]))


def test_validation_and_test_loaders(synthetic):
    dm = module(synthetic, val_size=2)
    dm.setup("fit")
    loaders = dm.val_dataloader()
    assert len(loaders) == 1 and len(loaders[0].dataset) == 2 and dm.val_names == ["test"]
    dm.setup("test")
    assert len(dm.test_dataloader().dataset) == 2 * 6
    assert [p.person for p in dm.predict_dataloader().dataset.pairs] == [
        p.person for p in dm.test_dataloader().dataset.pairs]
    assert registry.get("deepfashion").data_module is DeepFashionDataModule


def test_sample_keeps_the_clothes_of_a_person_across_poses(synthetic):
    height, width = NATIVE
    outfit = {synthetic_people.UPPER: True, synthetic_people.PANTS: False}
    poses = [synthetic_people.random_pose(np.random.default_rng([1, 2, 0, view]), height, width) for view in (1, 2)]
    people = [synthetic_people.draw_person(np.random.default_rng([1, 2, 0]), height, width, outfit, pose)
              for pose in poses]
    assert np.array_equal(people[0].garment.flat, people[1].garment.flat)  # the same garment ...
    assert not np.array_equal(people[0].image, people[1].image)  # ... in another pose
    names = (synthetic / "train.lst").read_text().split()
    assert len(names) == 9 and all(deepfashion.NAME_PATTERN.match(n) for n in names)
    assert (synthetic / "fasion-resize-pairs-train.csv").read_text().startswith("from,to\n")
    with Image.open(synthetic / "train_highres" / names[0]) as image:
        assert image.format == "JPEG" and image.size == (width, height)
    with Image.open(synthetic / "densepose" / f"{names[0][:-4]}.png") as dense:
        assert dense.format == "PNG" and dense.mode == "RGB"
    iuv = deepfashion.read_iuv(synthetic / "densepose" / f"{names[0][:-4]}.png")
    assert set(np.unique(iuv[..., 2])) >= {0, 2, 23, 24} and iuv[iuv[..., 2] > 0, 0].std() > 20  # U varies

