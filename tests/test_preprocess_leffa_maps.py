"""Parsing and DensePose maps as the Leffa app makes them, against golden fixtures written by the app's own code
(tests/golden/maps, README there): the SCHP pre/post-processing with hole filling and the neck label 18 on
painted people (through palette stand-in networks), DensePose's chart conversion, the app's rendering and its
min-max IUV on generated chart outputs."""

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from leffa_pl.annotators.densepose import ChartInstance, DensePoseResult, chart_instance
from leffa_pl.datasets.deepfashion.densepose_fill import iuv_map
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.preprocess.annotate import Preprocessor, add_weight_arguments, weights_from_args
from leffa_pl.preprocess.parsing import APP_FRAME, ATR_NECK, ParsingModelError, SchpParser
from leffa_pl.testing.preprocess_standins import schp_palette_onnx

GOLDEN = Path(__file__).parent / "golden" / "maps"
SETTINGS = json.loads((GOLDEN / "settings.json").read_text())
# The app's code itself gives a handful of different pixels under another OpenCV major version (README).
OPENCV_TOLERANCE = 0 if cv2.__version__ == SETTINGS["opencv"] else 1e-4


def _golden(name: str) -> np.ndarray:
    return np.array(Image.open(GOLDEN / name))


@pytest.fixture(scope="module")
def app_parser(tmp_path_factory) -> SchpParser:
    folder = tmp_path_factory.mktemp("palette")
    regions = {tuple(colour): labels for colour, labels in SETTINGS["regions"]}
    atr = schp_palette_onnx(folder / "atr.onnx", {c: a for c, (a, _) in regions.items()}, 18, 512)
    lip = schp_palette_onnx(folder / "lip.onnx", {c: b for c, (_, b) in regions.items()}, 20, 473)
    return SchpParser(atr, lip)


@pytest.mark.parametrize("case", SETTINGS["parsing_cases"])
def test_atr_neck_parsing_equals_the_apps(app_parser, case):
    person = _golden(f"person_{case}.png")  # 768x1024, the app parses it resized to 384x512
    labels = app_parser(person, "atr-neck")
    assert labels.shape == person.shape[:2]
    frame = np.asarray(Image.fromarray(labels).resize(APP_FRAME[::-1], Image.NEAREST))  # as the mask recipes
    golden = _golden(f"parsing_{case}.png")
    assert (frame != golden).mean() <= OPENCV_TOLERANCE


def test_the_golden_parsing_shows_the_apps_rules():
    """What the fixtures hold (frame pixels of the painted regions, make_golden.py), so that a regenerated
    fixture that lost a rule fails here."""
    standing, raised, cut = (_golden(f"parsing_{case}.png") for case in SETTINGS["parsing_cases"])
    assert standing[190, 185] == 4  # a small patch inside the garment becomes upper clothes
    assert standing[256, 190] == 16  # a large one (contour area > 2000) keeps its label
    assert standing[240, 267] == 4 and standing[240, 112] == 0  # small / large gap between arm and body
    assert standing[130, 192] == ATR_NECK and standing[85, 192] == 11  # ATR head: neck where LIP says no face
    assert raised[180, 233] == 4 and raised[250, 149] == 2  # enclosed hair strand filled; hair joined to the head not
    assert cut[500, 190] == 0  # a gap open to the photo's edge is no hole


def _instances(case: str) -> list[ChartInstance]:
    stored = np.load(GOLDEN / f"densepose_{case}.npz")
    tensors = {key: torch.from_numpy(stored[key].astype(np.float32) / 16) for key in ("coarse", "fine", "u", "v")}
    boxes = torch.from_numpy(stored["boxes"])
    return [chart_instance(boxes[i], *(tensors[key][i] for key in ("coarse", "fine", "u", "v")))
            for i in range(len(boxes))]


@pytest.mark.parametrize("case", SETTINGS["densepose_cases"])
def test_densepose_rendering_and_minmax_iuv_equal_the_apps(case):
    size = tuple(SETTINGS["densepose_size"])
    result = DensePoseResult.from_instances(_instances(case), size, "leffa-app")
    assert np.array_equal(vitonhd.encode_densepose(result.shown_parts), _golden(f"densepose_seg_{case}.png"))
    assert np.array_equal(iuv_map(result, "minmax"), _golden(f"densepose_iuv_{case}.png"))


def test_rendering_choices_with_two_people():
    """The app's visualizer clears the canvas before each person, so only the last (lowest score) is left;
    ``first`` keeps the best one, ``all`` draws both (the later over the earlier)."""
    instances = _instances("two_people")
    size = tuple(SETTINGS["densepose_size"])

    def rendering_of(instances, rendering="leffa-app"):
        return vitonhd.encode_densepose(DensePoseResult.from_instances(instances, size, rendering).shown_parts)

    app, first, both = (rendering_of(instances, rendering) for rendering in ("leffa-app", "first", "all"))
    alone = [rendering_of([instance]) for instance in instances]
    assert np.array_equal(app, alone[1]) and np.array_equal(first, alone[0])
    second = alone[1].any(-1)
    assert np.array_equal(both[second], alone[1][second])
    assert np.array_equal(both[~second], alone[0][~second])
    # the maps of the first person (DressCode I, DeepFashion IUV) are the app's predict_iuv whatever the rendering
    assert np.array_equal(DensePoseResult.from_instances(instances, size, "first").parts,
                          DensePoseResult.from_instances(instances, size, "leffa-app").parts)


def test_iuv_scalings_differ_only_in_u_v():
    result = DensePoseResult.from_instances(_instances("one_person"), tuple(SETTINGS["densepose_size"]))
    scaled, stretched = iuv_map(result, "scale"), iuv_map(result, "minmax")
    assert np.array_equal(scaled[..., 2], stretched[..., 2])
    assert stretched[..., :2].max() == 254 or stretched[..., :2].max() == 255  # the box's maximum reaches 255
    foreground = result.parts > 0
    expected = np.round(np.clip(result.u[foreground], 0, 1) * 255)
    assert np.array_equal(scaled[..., 0][foreground], expected)


def test_command_line_choices_reach_the_preprocessor(app_parser):
    parser = argparse.ArgumentParser()
    add_weight_arguments(parser)
    defaults = weights_from_args(parser.parse_args([]), "cpu")
    assert (defaults.densepose_rendering, defaults.iuv_scaling) == ("leffa-app", "scale")
    chosen = weights_from_args(parser.parse_args(["--densepose-rendering", "first", "--iuv-scaling", "minmax"]), "cpu")
    assert (chosen.densepose_rendering, chosen.iuv_scaling) == ("first", "minmax")
    with pytest.raises(SystemExit):
        parser.parse_args(["--densepose-rendering", "every"])
    atr_only = Preprocessor(parser=SchpParser(app_parser.atr.path))
    with pytest.raises(ParsingModelError, match="atr-neck labels need the LIP parsing network"):
        atr_only.parse(_golden("person_standing.png"), "atr-neck")
