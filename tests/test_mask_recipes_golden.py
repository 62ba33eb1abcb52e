"""leffa-hd and leffa-dc equal the Leffa app's own code on the golden cases (tests/golden/leffa, see README.md
there): the mask at the app's frame, the mask at the photo's size and the agnostic image, for every category."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leffa_pl.data import mask_recipes
from leffa_pl.data.io import read_label, read_rgb
from leffa_pl.data.transforms import contract_sample
from leffa_pl.metrics.suite import quantize_images

GOLDEN = Path(__file__).parent / "golden" / "leffa"
CASES = json.loads((GOLDEN / "cases.json").read_text())


def read_mask(name: str) -> np.ndarray:
    with Image.open(GOLDEN / name) as image:
        return np.asarray(image.convert("1"))


def app_inputs(case: dict) -> tuple[np.ndarray, np.ndarray]:
    """ATR + neck labels and COCO-18 keypoints at the frame, the app's missing points (0, 0) as NaN."""
    points = np.array(case["keypoints"], np.float64)
    points[(points[:, 0] <= 1) & (points[:, 1] <= 1)] = np.nan
    return read_label(GOLDEN / case["labels"]), points


def test_the_cases_cover_every_category_and_edge_case():
    names = {case["name"] for case in CASES["cases"]}
    assert {case["category"] for case in CASES["cases"]} == set(mask_recipes.CATEGORIES)
    assert {"missing_wrist", "raised_arms", "cut_at_thigh", "long_hair", "two_people"} <= names
    assert any(name.startswith("lower_body_skirt") for name in names)


@pytest.mark.parametrize("recipe", ["leffa-hd", "leffa-dc"])
def test_masks_and_agnostic_images_equal_the_official_ones(recipe):
    frame = tuple(CASES["frame"])
    assert mask_recipes.get(recipe).frame == frame
    for case in CASES["cases"]:
        labels, points = app_inputs(case)
        golden = case["outputs"][recipe]
        where = f"{case['name']} ({case['category']})"
        at_frame = mask_recipes.get(recipe).compute(labels, points, case["category"])
        assert np.array_equal(at_frame, read_mask(golden["frame_mask"])), where
        photo = read_rgb(GOLDEN / case["photo"])
        person = mask_recipes.ParsedPerson(labels, "atr-neck", points, "coco18", frame)
        mask = mask_recipes.inpaint_mask(recipe, person, case["category"], photo.shape[:2])
        assert np.array_equal(mask, read_mask(golden["mask"])), where
        sample = contract_sample(photo, photo, mask.astype(np.uint8), torch.zeros(3, *photo.shape[:2]),
                                 mask.astype(np.uint8), person_id=case["name"], reference_id=case["name"])
        agnostic = quantize_images(sample["agnostic"]).permute(1, 2, 0).numpy()
        assert np.array_equal(agnostic, read_rgb(GOLDEN / golden["agnostic"])), where
