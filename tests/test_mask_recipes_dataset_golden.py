"""The ``dresscode`` and ``hrviton`` recipes against the official code's outputs (tests/golden/, see the READMEs).

Each case goes the way a dataset's files do: the label map and keypoint file read by the project's readers, the
mask made through the recipe registry. Both recipes are deterministic, so masks and agnostic images must be equal.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leffa_pl.data import mask_recipes
from leffa_pl.data.io import read_gray, read_label, read_rgb
from leffa_pl.data.mask_recipes import hrviton
from leffa_pl.data.transforms import image_to_tensor
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.vitonhd import reader as vitonhd

GOLDEN = Path(__file__).parent / "golden"


def _cases(recipe: str) -> list[dict]:
    return json.loads((GOLDEN / recipe / "cases.json").read_text())


def _assert_same(mask: np.ndarray, golden: np.ndarray, name: str) -> None:
    assert mask.shape == golden.shape, name
    differ = int((mask != golden).sum())
    iou = (mask & golden).sum() / max(int((mask | golden).sum()), 1)
    assert differ == 0, f"{name}: {differ} pixels differ from the official mask (IoU {iou:.4f})"


def _dresscode_mask(case: dict) -> np.ndarray:
    folder = GOLDEN / "dresscode"
    person = mask_recipes.ParsedPerson(
        read_label(folder / f"{case['name']}_4.png"), dresscode.LABEL_SET,
        dresscode.read_keypoint_file(folder / f"{case['name']}_2.json"), dresscode.KEYPOINT_FORMAT,
        dresscode.KEYPOINT_FRAME)
    return mask_recipes.inpaint_mask("dresscode", person, case["category"], tuple(case["size"]))


def _hrviton_mask(case: dict) -> np.ndarray:
    folder = GOLDEN / "hrviton"
    labels = read_label(folder / f"{case['name']}.png")
    person = mask_recipes.ParsedPerson(labels, vitonhd.LABEL_SET,
                                       vitonhd.read_openpose(folder / f"{case['name']}_keypoints.json"),
                                       vitonhd.KEYPOINT_FORMAT, labels.shape)
    return mask_recipes.inpaint_mask("hrviton", person, "upper_body", labels.shape)


@pytest.mark.parametrize("case", _cases("dresscode"), ids=lambda case: case["name"])
def test_dresscode_mask_is_the_official_one(case):
    golden = read_gray(GOLDEN / "dresscode" / f"{case['name']}_mask.png") > 0
    _assert_same(_dresscode_mask(case), golden, case["name"])


@pytest.mark.parametrize("case", _cases("hrviton"), ids=lambda case: case["name"])
def test_hrviton_mask_is_the_official_one(case):
    golden = read_gray(GOLDEN / "hrviton" / f"{case['name']}_mask.png") > 0
    _assert_same(_hrviton_mask(case), golden, case["name"])


def test_dresscode_agnostic_is_the_official_im_mask():
    """The official ``im_mask`` is ``person * (1 - mask)`` in [-1, 1], the data contract's ``agnostic``; stored
    as (x + 1) * 127.5, rounded (masked pixels read 128)."""
    cases = [case for case in _cases("dresscode") if case.get("agnostic")]
    assert {case["category"] for case in cases} == set(dresscode.CATEGORIES)
    for case in cases:
        person = image_to_tensor(read_rgb(GOLDEN / "dresscode" / f"{case['name']}_0.png"))
        agnostic = person * (1 - torch.from_numpy(_dresscode_mask(case)).float())
        stored = np.round((agnostic.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
        assert np.array_equal(stored, read_rgb(GOLDEN / "dresscode" / f"{case['name']}_agnostic.png")), case["name"]


def test_hrviton_agnostic_is_agnostic_v3_2():
    cases = [case for case in _cases("hrviton") if case.get("agnostic")]
    assert cases
    for case in cases:
        person = read_rgb(GOLDEN / "hrviton" / f"{case['name']}_person.png")
        agnostic = hrviton.agnostic_image(person, _hrviton_mask(case))
        assert np.array_equal(agnostic, read_rgb(GOLDEN / "hrviton" / f"{case['name']}_agnostic.png")), case["name"]
