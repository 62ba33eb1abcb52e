"""Mask recipe registry and conversions: label sets, keypoint formats, the recipe's frame and the way back."""

import numpy as np
import pytest

from leffa_pl.data import mask_recipes
from leffa_pl.data.mask_recipes import formats


def test_every_recipe_declares_what_it_reads():
    for name, recipe in mask_recipes.RECIPES.items():
        assert recipe.name == name and recipe.source and set(recipe.categories) <= set(mask_recipes.CATEGORIES)
        assert recipe.label_set in ("atr", "atr-neck", "cihp") and recipe.keypoint_format in ("coco18", "body25")
    with pytest.raises(ValueError, match="unknown mask recipe 'nope'"):
        mask_recipes.get("nope")


def test_cihp_converts_to_atr_with_neck_and_sided_gloves():
    cihp = np.array([[13, 10, 7, 3, 15, 0, 14, 3]], np.uint8)  # face, neck, coat, glove, arm, -, arm, glove
    assert formats.convert_labels(cihp, "cihp", "atr-neck").tolist() == [[11, 18, 4, 15, 15, 0, 14, 14]]
    assert formats.convert_labels(cihp, "cihp", "atr").tolist() == [[11, 11, 4, 15, 15, 0, 14, 14]]
    with pytest.raises(ValueError, match="atr labels cannot be converted to atr-neck"):
        formats.convert_labels(cihp, "atr", "atr-neck")


def test_body25_and_coco18_keep_the_arms():
    body = np.arange(50, dtype=np.float32).reshape(25, 2)
    coco = formats.convert_keypoints(body, "body25", "coco18")
    assert coco.shape == (18, 2) and (coco[:8] == body[:8]).all() and (coco[8] == body[9]).all()
    back = formats.convert_keypoints(coco, "coco18", "body25")
    kept = [i for i in range(19) if i != 8]
    assert (back[kept] == body[kept]).all() and np.isnan(back[19:]).all()
    assert (back[8] == (body[9] + body[12]) / 2).all()  # the mid-hip


def test_inpaint_mask_works_in_the_recipe_frame_and_returns_the_callers_size():
    labels = np.zeros((1024, 768), np.uint8)
    labels[300:600, 250:520] = 5  # CIHP upper clothes
    person = mask_recipes.ParsedPerson(labels, "cihp", np.full((25, 2), np.nan), "body25", (1024, 768))
    mask = mask_recipes.inpaint_mask("leffa-hd", person, "upper_body", (256, 192))
    assert mask.shape == (256, 192) and mask.dtype == bool
    assert mask[75:150, 62:130].all() and not mask[:40].any()
    with pytest.raises(ValueError, match="no rule for category 'shoes'"):
        mask_recipes.inpaint_mask("leffa-hd", person, "shoes", (256, 192))
