"""The synthetic-data generator: exact layouts and formats, determinism, and a correct ground-truth flow."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from leffa_pl.data import make_synthetic
from leffa_pl.data.io import read_label, read_rgb
from leffa_pl.datasets import synthetic_people
from leffa_pl.datasets.dresscode import synthetic as dresscode_synthetic
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

SIZE = (96, 72)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("sample")
    return (vitonhd_synthetic.make_vitonhd(base / "zalando-hd-resized", n_train=3, n_test=2, size=SIZE, seed=3),
            dresscode_synthetic.make_dresscode(base / "DressCode", n_train=1, n_test=2, size=SIZE, seed=3))


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _image(path):
    return torch.from_numpy(np.array(read_rgb(path))).permute(2, 0, 1).float() / 255


def test_vitonhd_layout_and_formats(roots):
    root = roots[0]
    assert (root / "train_pairs.txt").read_text().splitlines()[0] == "00000_00.jpg 00000_00.jpg"
    assert (root / "test_pairs.txt").read_text().splitlines() == ["00003_00.jpg 00004_00.jpg",
                                                                   "00004_00.jpg 00003_00.jpg"]
    expected = ["image/00003_00.jpg", "cloth/00003_00.jpg", "cloth-mask/00003_00.jpg", "image-parse-v3/00003_00.png",
                "image-parse-agnostic-v3.2/00003_00.png", "agnostic-v3.2/00003_00.jpg",
                "agnostic-mask/00003_00_mask.png", "openpose_img/00003_00_rendered.png",
                "openpose_json/00003_00_keypoints.json", "image-densepose/00003_00.jpg",
                "ground-truth-flow/00003_00.npz"]
    for name in expected:
        assert (root / "test" / name).is_file(), name
    with Image.open(root / "test/image-parse-v3/00003_00.png") as parse:
        assert parse.mode == "P" and parse.size == (SIZE[1], SIZE[0])
    labels = read_label(root / "test/image-parse-v3/00003_00.png")
    assert {0, 2, 5, 13, 14, 15}.issubset(set(np.unique(labels).tolist())) and labels.max() <= 19
    pose = json.loads((root / "test/openpose_json/00003_00_keypoints.json").read_text())
    assert pose["version"] == 1.3 and len(pose["people"][0]["pose_keypoints_2d"]) == 75
    with Image.open(root / "test/image-densepose/00003_00.jpg") as dense:
        assert dense.format == "JPEG" and dense.mode == "RGB"


def test_dresscode_layout_and_formats(roots):
    root = roots[1]
    for category, first in (("upper_body", 0), ("lower_body", 13000), ("dresses", 20000)):
        ident = f"{first + 1:06d}"
        for name in (f"images/{ident}_0.jpg", f"images/{ident}_1.jpg", f"keypoints/{ident}_2.json",
                     f"label_maps/{ident}_4.png", f"skeletons/{ident}_5.jpg", f"dense/{ident}_5.png",
                     f"dense/{ident}_5_uv.npz", "train_pairs.txt", "test_pairs_paired.txt",
                     "test_pairs_unpaired.txt"):
            assert (root / category / name).is_file(), (category, name)
        keypoints = json.loads((root / category / f"keypoints/{ident}_2.json").read_text())["keypoints"]
        assert len(keypoints) == 18 and all(len(k) == 4 for k in keypoints)
        assert all(0 <= k[0] <= 384 and 0 <= k[1] <= 512 for k in keypoints)  # the 384x512 keypoint frame
        assert read_label(root / category / f"dense/{ident}_5.png").max() <= 24
        with np.load(root / category / f"dense/{ident}_5_uv.npz") as uv:
            assert uv["uv"].shape[0] == 2
    root_pairs = (root / "test_pairs_unpaired.txt").read_text().splitlines()
    assert len(root_pairs) == 6 and root_pairs[0].split() == ["000001_0.jpg", "000002_1.jpg"]


def test_generation_is_deterministic(roots, tmp_path):
    again = vitonhd_synthetic.make_vitonhd(tmp_path / "again", n_train=3, n_test=2, size=SIZE, seed=3)
    assert _tree(again) == _tree(roots[0])
    other = vitonhd_synthetic.make_vitonhd(tmp_path / "other", n_train=3, n_test=2, size=SIZE, seed=4)
    assert _tree(other)["train/image/00000_00.jpg"] != _tree(roots[0])["train/image/00000_00.jpg"]


def test_ground_truth_flow_warps_the_garment_onto_the_person(roots):
    root = roots[0]
    for split, stem in (("train", "00001_00"), ("test", "00004_00")):
        person, cloth = (_image(root / split / folder / f"{stem}.jpg") for folder in ("image", "cloth"))
        with np.load(root / split / "ground-truth-flow" / f"{stem}.npz") as archive:
            flow = torch.from_numpy(archive["flow"])
        parse = read_label(root / split / "image-parse-v3" / f"{stem}.png")
        defined = ~torch.isnan(flow[0])
        assert torch.equal(defined, torch.isnan(flow[1]).logical_not())
        assert torch.equal(defined, torch.from_numpy(parse == 5))  # exactly the visible garment
        assert flow[:, defined].abs().max() <= 1
        # Away from the garment edge, where JPEG and bilinear blending mix in the background.
        inner = torch.from_numpy(ndimage.binary_erosion(parse == 5, iterations=1))
        grid = torch.nan_to_num(flow, nan=-2.0).permute(1, 2, 0)[None]
        warped = F.grid_sample(cloth[None], grid, mode="bilinear", align_corners=False)[0]
        error = (warped - person).abs().mean(0)[inner].mean()
        shifted = F.grid_sample(cloth[None], grid + torch.tensor([0.15, 0.0]), align_corners=False)[0]
        assert error < 0.08, error
        assert (shifted - person).abs().mean(0)[inner].mean() > 2 * error


def test_densepose_rendering_decodes_to_the_part_index():
    parts = np.arange(25, dtype=np.uint8).repeat(4)[None].repeat(3, 0)
    assert np.array_equal(vitonhd.decode_densepose(vitonhd.encode_densepose(parts)), parts)
    assert np.array_equal(vitonhd.encode_densepose(np.zeros((1, 1), np.uint8)), np.zeros((1, 1, 3), np.uint8))


def test_jpeg_densepose_decodes_to_the_drawn_parts(tmp_path):
    rng = np.random.default_rng(0)
    person = synthetic_people.draw_person(rng, 128, 96, {synthetic_people.UPPER: True, synthetic_people.PANTS: False})
    path = tmp_path / "dense.jpg"
    Image.fromarray(vitonhd.encode_densepose(person.densepose)).save(path, quality=95)
    decoded = vitonhd.decode_densepose(read_rgb(path))
    # Chroma subsampling blends colours across part borders; inside the parts decoding is exact.
    inside = ndimage.morphological_gradient(person.densepose, size=3) == 0
    assert (decoded == person.densepose)[inside].mean() > 0.98


def test_command_writes_only_missing_datasets(tmp_path, capsys):
    out = tmp_path / "data"
    (out / "DressCode").mkdir(parents=True)
    (out / "DressCode" / "mine.txt").write_text("a real dataset")
    assert make_synthetic.main(["--out", str(out), "--size", "64x48", "--train", "2", "--test", "2",
                                "--deepfashion-size", "44x30", "--train-people", "1", "--test-people", "1",
                                "--views", "2"]) == 0
    assert (out / "zalando-hd-resized" / "train_pairs.txt").is_file()
    assert (out / "deepfashion" / "train.lst").is_file()
    assert sorted(p.name for p in (out / "DressCode").iterdir()) == ["mine.txt"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert "exists, left as it is" in capsys.readouterr().out
