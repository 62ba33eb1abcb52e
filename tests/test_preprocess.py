"""Preprocessing networks behind their interfaces (random-weight stand-ins of the real signatures, see
leffa_pl/testing/preprocess_standins.py), weight lookup, and the round trip: what the layout writers store is read
back by the data readers with the same values, for VITON-HD and DressCode."""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from leffa_pl.annotators import weight_files as weights
from leffa_pl.annotators.annotation import PersonAnnotation, inpaint_mask
from leffa_pl.annotators.densepose import DensePoseModelError, TorchScriptDensePose
from leffa_pl.annotators.keypoints import BodyKeypoints, VitPoseEstimator, layout_xy
from leffa_pl.data.io import read_gray, read_label, read_npz, read_rgb
from leffa_pl.datasets import registry
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.dresscode.writer import DressCodeLayout
from leffa_pl.datasets.synthetic_people import PANTS, UPPER, draw_person
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.datasets.vitonhd.writer import VitonHDLayout
from leffa_pl.datasets.writing import Item
from leffa_pl.preprocess.annotate import NoPersonError, Preprocessor, PreprocessWeights
from leffa_pl.preprocess.parsing import ParsingModelError, SchpParser, cihp_labels
from leffa_pl.testing.preprocess_standins import build_all, schp_onnx

SIZE = (128, 96)
VITONHD = registry.get("vitonhd")


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    return build_all(tmp_path_factory.mktemp("standins"))


@pytest.fixture(scope="module")
def preprocessor(standins) -> Preprocessor:
    w = PreprocessWeights(parser_atr=str(standins["parser_atr"]), parser_lip=str(standins["parser_lip"]),
                          densepose=str(standins["densepose_model"]), pose_model=str(standins["pose_model"]),
                          detector=str(standins["detector"]), box_threshold=0.0, offline=True)
    return Preprocessor(w)


def _person(seed: int = 0):
    return draw_person(np.random.default_rng(seed), *SIZE, {UPPER: True, PANTS: False})


def test_weight_lookup_order_and_offline_error(tmp_path, monkeypatch):
    monkeypatch.setattr(weights.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(weights.WeightsNotFoundError, match="nowhere.onnx: no such file.*huggingface.co/franciszzj"):
        weights.resolve_file(weights.SCHP_ATR, tmp_path / "nowhere.onnx")
    with pytest.raises(weights.WeightsNotFoundError, match="parsing_atr.onnx.*not in the Hugging Face cache.*"
                                                         "huggingface-cli download franciszzj/Leffa"):
        weights.resolve_file(weights.SCHP_ATR, offline=True)
    # A file in the cache's layout is found without any download: at the pinned revision, or cached from `main`
    # (as the Leffa app downloads it) when its SHA-256 is the recorded one.
    repo = tmp_path / "hub" / "models--franciszzj--Leffa"
    snapshot = repo / "snapshots" / "abc123" / "humanparsing"
    snapshot.mkdir(parents=True)
    (snapshot / "parsing_atr.onnx").write_bytes(b"onnx")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    with pytest.raises(weights.WeightsChecksumError, match=f"SHA-256 {hashlib.sha256(b'onnx').hexdigest()}, "
                                                           f"expected {weights.SCHP_ATR.sha256}"):
        weights.resolve_file(weights.SCHP_ATR, offline=True)
    same_digest = dataclasses.replace(weights.SCHP_ATR, sha256=hashlib.sha256(b"onnx").hexdigest())
    assert weights.resolve_file(same_digest, offline=True) == snapshot / "parsing_atr.onnx"
    pinned = repo / "snapshots" / weights.LEFFA_WEIGHTS_REVISION / "humanparsing"
    pinned.mkdir(parents=True)
    (pinned / "parsing_atr.onnx").write_bytes(b"onnx")
    assert weights.resolve_file(same_digest, offline=True) == pinned / "parsing_atr.onnx"
    explicit = tmp_path / "mine.onnx"
    explicit.write_bytes(b"onnx")
    assert weights.resolve_file(weights.SCHP_ATR, explicit, offline=True) == explicit


def test_parser_label_sets_and_bad_files(standins, tmp_path):
    parser = SchpParser(standins["parser_atr"], standins["parser_lip"])
    image = _person().image
    atr, cihp = parser(image, "atr"), parser(image, "cihp")
    assert atr.shape == cihp.shape == SIZE and atr.dtype == np.uint8
    assert atr.max() < 18 and cihp.max() < 20
    wrong = schp_onnx(tmp_path / "five_labels.onnx", 5, 512)
    with pytest.raises(ParsingModelError, match="five_labels.onnx: fusion output.*18"):
        SchpParser(wrong)(image, "atr")
    (tmp_path / "garbage.onnx").write_bytes(b"not onnx")
    with pytest.raises(ParsingModelError, match="garbage.onnx: not a loadable ONNX model"):
        SchpParser(tmp_path / "garbage.onnx")


def test_cihp_from_lip_and_atr():
    lip = np.array([[0, 10, 13, 2, 5, 0]], np.uint8)
    atr = np.array([[11, 0, 11, 11, 4, 0]], np.uint8)
    # jumpsuit -> dress; ATR head that LIP calls neither face nor hair -> neck; the rest as LIP says.
    assert cihp_labels(lip, atr).tolist() == [[10, 6, 13, 2, 5, 0]]


def test_densepose_nobody_and_bad_file(standins, tmp_path):
    model = TorchScriptDensePose(standins["densepose_model"])
    found = model(_person().image)
    assert found.parts.shape == SIZE and found.parts.max() <= 24 and found.parts.any()
    assert np.all(found.u[found.parts == 0] == 0) and 0 <= found.u.min() and found.u.max() <= 1
    assert model(np.full(SIZE + (3,), 200, np.uint8)) is None
    (tmp_path / "bad.torchscript").write_bytes(b"not torchscript")
    with pytest.raises(DensePoseModelError, match="bad.torchscript: not a loadable TorchScript file"):
        TorchScriptDensePose(tmp_path / "bad.torchscript")


def _annotation(preprocessor: Preprocessor, layout: str, seed: int = 0) -> tuple[np.ndarray, PersonAnnotation]:
    """Stand-in labels and DensePose, and keypoints at the drawn person's joints (the stand-in ViTPose's random
    scores are below the threshold), the left ankle missing."""
    person = _person(seed)
    found = preprocessor.annotate(person.image, registry.get(layout))
    coco17 = ["nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
              "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"]
    xy = np.array([person.pose[name] for name in coco17], np.float32)
    scores = np.full(17, 0.9, np.float32)
    scores[15] = 0.0
    return person.image, PersonAnnotation(found.labels, BodyKeypoints(xy, scores), found.densepose)


def test_vitonhd_round_trip(preprocessor, tmp_path):
    image, annotation = _annotation(preprocessor, "vitonhd")
    layout = VitonHDLayout(tmp_path)
    item = Item("00000_00", "train", "upper_body", "p.jpg", "g.jpg", "leffa-hd")
    layout.write(item, image, np.full_like(image, 255), annotation)
    files = layout.outputs(item)
    assert np.array_equal(read_label(files["labels"]), annotation.labels)
    assert np.array_equal(vitonhd.decode_densepose(read_rgb(files["densepose"])), annotation.densepose.parts)
    keypoints = vitonhd.read_openpose(files["keypoints"])
    np.testing.assert_allclose(keypoints, layout_xy(annotation.keypoints, "body25"), atol=1e-3)
    assert np.isnan(keypoints[14]).all() and np.isnan(keypoints[19:]).all()  # left ankle, feet
    np.testing.assert_allclose(keypoints[1], (keypoints[2] + keypoints[5]) / 2, atol=1e-3)  # neck
    assert np.array_equal(read_gray(files["mask"]) >= 128, inpaint_mask("leffa-hd", VITONHD, annotation.labels,
                                                                        annotation.keypoints))


def test_leffa_app_recipes_read_the_app_parsing(preprocessor, tmp_path):
    """leffa-hd / leffa-dc masks come from the app's own ATR + neck parsing (at 384x512), not from the layout's
    labels converted; the dataset recipes read the layout's labels."""
    image, annotation = _annotation(preprocessor, "vitonhd")
    app_labels = preprocessor.parse(image, "atr-neck")
    for layout_name, recipe in (("vitonhd", "leffa-hd"), ("dresscode", "leffa-dc")):
        labels, label_set = preprocessor.mask_labels(image, registry.get(layout_name), recipe)
        assert label_set == "atr-neck" and np.array_equal(labels, app_labels)
    assert preprocessor.mask_labels(image, registry.get("dresscode"), "dresscode")[1] == "atr"
    assert preprocessor.annotate(image, VITONHD, "hrviton").mask_labels is None
    found = preprocessor.annotate(image, VITONHD, "leffa-hd")
    assert found.mask_labels[1] == "atr-neck" and np.array_equal(found.mask_labels[0], app_labels)
    layout = VitonHDLayout(tmp_path)
    item = Item("00000_00", "train", "upper_body", "p.jpg", "g.jpg", "leffa-hd")
    layout.write(item, image, np.full_like(image, 255), dataclasses.replace(annotation, mask_labels=found.mask_labels))
    expected = inpaint_mask("leffa-hd", VITONHD, app_labels, annotation.keypoints, label_set="atr-neck")
    assert np.array_equal(read_gray(layout.outputs(item)["mask"]) >= 128, expected)


def test_dresscode_round_trip(preprocessor, tmp_path):
    image, annotation = _annotation(preprocessor, "dresscode")
    layout = DressCodeLayout(tmp_path)
    item = Item("000000", "train", "dresses", "p.jpg", "g.jpg")
    layout.write(item, image, np.full_like(image, 255), annotation)
    files = layout.outputs(item)
    assert files["labels"].parent == tmp_path / "dresses" / "label_maps"
    assert np.array_equal(read_label(files["labels"]), annotation.labels)
    assert np.array_equal(read_label(files["densepose"]), annotation.densepose.parts)
    np.testing.assert_array_equal(read_npz(files["densepose_uv"], "uv"), annotation.densepose.dresscode_uv())
    keypoints = dresscode.read_keypoints(files["keypoints"], SIZE)
    np.testing.assert_allclose(keypoints, layout_xy(annotation.keypoints, "coco18"), atol=1e-2)
    assert np.isnan(keypoints[13]).all() and not np.isnan(keypoints[:13]).any()


def test_no_person_is_an_error_not_a_crash(preprocessor):
    with pytest.raises(NoPersonError, match="DensePose found nobody"):
        preprocessor.annotate(np.full(SIZE + (3,), 200, np.uint8), VITONHD)


def test_hub_models_offline_without_cache_name_the_repository(tmp_path):
    with pytest.raises(weights.WeightsNotFoundError, match="PekingU/rtdetr_r50vd_coco_o365 .person detector.*"
                                                         "huggingface-cli download PekingU/rtdetr_r50vd_coco_o365"):
        VitPoseEstimator(offline=True)
    with pytest.raises(weights.WeightsNotFoundError, match="nothing-here: no such folder .ViTPose"):
        VitPoseEstimator(pose_model=tmp_path / "nothing-here", offline=True)
