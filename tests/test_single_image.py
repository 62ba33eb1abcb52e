"""leffa-pl-tryon / leffa-pl-pose on generated photos with the tiny model and random-weight stand-ins of the
preprocessing networks: an image of the person's (target's) size and a settings JSON; the same seed gives the
same image."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leffa_pl.annotators import weight_files as weights
from leffa_pl.datasets.synthetic_people import PANTS, UPPER, draw_person
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.inference.single_image import pose_main, tryon_main
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.testing.preprocess_standins import build_all, cli_options

PERSON = (100, 70)  # not the model's 4:3: fitted, generated, and put back at this size
FAST = ["--resolution", "64x48", "--steps", "2", "--guidance-scale", "1.0", "--device", "cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("single")
    standins = build_all(root / "standins")
    model = LeffaModel.tiny()
    model.export(root / "tiny.safetensors")
    person = draw_person(np.random.default_rng(3), *PERSON, {UPPER: True, PANTS: False})
    Image.fromarray(person.image).save(root / "anna.jpg")
    Image.fromarray(person.garment.flat).save(root / "shirt.jpg")
    (root / "garments").mkdir()
    Image.fromarray(person.garment.flat).save(root / "garments" / "tee.png")
    Image.fromarray((person.densepose > 0).astype(np.uint8) * 255).save(root / "anna_mask.png")
    Image.fromarray(vitonhd.encode_densepose(person.densepose)).save(root / "anna_densepose.png")
    return {"root": root, "standins": cli_options(standins), "checkpoint": str(root / "tiny.safetensors")}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_tryon_writes_person_size_and_seed_reproduces(setup):
    root = setup["root"]
    common = ["--person", str(root / "anna.jpg"), "--garment", str(root / "shirt.jpg"),
              "--checkpoint", setup["checkpoint"], *FAST, *setup["standins"]]
    assert tryon_main(common + ["--out", str(root / "a"), "--seed", "7"]) == 0
    assert tryon_main(common + ["--out", str(root / "b"), "--seed", "7"]) == 0
    name = "shirt.jpg__to__anna.jpg.png"
    first = _pixels(root / "a" / name)
    assert first.shape == PERSON + (3,)
    assert np.array_equal(first, _pixels(root / "b" / name))
    settings = json.loads((root / "a" / name).with_suffix(".json").read_text())
    assert settings["seed"] == 7 and settings["resolution"] == [64, 48] and settings["size"] == list(PERSON)
    assert settings["sampler"]["num_inference_steps"] == 2 and settings["mask_recipe"] == "leffa-hd"
    assert settings["mask"].startswith("computed: mask recipe leffa-hd (franciszzj/Leffa@7848bedf")
    assert "tiny.safetensors" in settings["model"]


def test_tryon_with_given_mask_and_densepose_needs_no_networks(setup):
    root = setup["root"]
    argv = ["--person", str(root / "anna.jpg"), "--garment", str(root / "garments"),
            "--checkpoint", setup["checkpoint"],
            "--mask", str(root / "anna_mask.png"), "--densepose", str(root / "anna_densepose.png"),
            "--out", str(root / "given"), "--repaint", *FAST, "--offline",
            "--parser-atr", str(root / "absent.onnx")]  # would fail if the parser were loaded
    assert tryon_main(argv) == 0
    assert _pixels(root / "given" / "tee.png__to__anna.jpg.png").shape == PERSON + (3,)  # each photo of the folder
    settings = json.loads((root / "given" / "tee.png__to__anna.jpg.json").read_text())
    assert settings["mask"].endswith("anna_mask.png") and settings["sampler"]["repaint"]


def test_pose_transfer_writes_target_size(setup):
    root = setup["root"]
    argv = ["--reference", str(root / "anna.jpg"), "--target-pose", str(root / "anna.jpg"),
            "--checkpoint", setup["checkpoint"], "--out", str(root / "pose"), *FAST, *setup["standins"]]
    assert pose_main(argv) == 0
    assert _pixels(root / "pose" / "anna.jpg__to__anna.jpg.png").shape == PERSON + (3,)


def test_missing_weights_are_a_clear_error(setup, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(weights.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    root = setup["root"]
    argv = ["--person", str(root / "anna.jpg"), "--garment", str(root / "shirt.jpg"), "--out", str(root / "x"),
            *FAST, "--random-weights", "--offline", "--parser-atr", str(root / "absent.onnx")]
    assert tryon_main(argv) == 2
    error = capsys.readouterr().err  # the LIP network is looked up first: not given, not cached, offline
    assert "parsing_lip.onnx (SCHP human parsing, LIP labels (ONNX)) is not in the Hugging Face cache" in error
    assert f"huggingface.co/franciszzj/Leffa/blob/{weights.SCHP_LIP.revision}/humanparsing/parsing_lip.onnx" in error
