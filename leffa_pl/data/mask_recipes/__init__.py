"""Garment-agnostic inpaint masks: named recipes, each the re-implementation of one published function.

A model is only comparable with the masks it was trained or released with (datasets.md, "Garment-agnostic
masks"), so every computed mask names the recipe that made it. A recipe module provides one ``MaskRecipe``
(``recipe.py``) object and adds it to ``RECIPES`` below (one line). A recipe declares:

- ``name``: its key here (``--mask-recipe``, ``mask_recipe``); ``source``: repository, commit, file, function;
- ``label_set``: the parsing it reads (``recipe.LabelSet``: ``atr`` = DressCode's ``label_maps``, ``atr-neck`` =
  ATR plus the Leffa parser's neck 18, ``cihp`` = VITON-HD's ``image-parse-v3``);
- ``keypoint_format``: ``coco18`` or ``body25``;
- ``frame``: the (H, W) it computes at (labels nearest-resized and keypoints scaled to it, the mask resized back
  bicubic and thresholded at 0.5, as the Leffa app does), or None to compute at the output size;
- ``categories``: the garment categories it handles (``upper_body``, ``lower_body``, ``dresses``);
- ``compute(labels, keypoints, category) -> bool [H, W]`` (True = repaint), called with ``labels`` [H, W] uint8 in
  its label set at its frame, ``keypoints`` [K, 2] float (x, y) in its format and in pixels of that frame, NaN
  where missing (a reader marks a point missing as the official code does: x <= 1 and y <= 1, or score 0).

Callers use ``inpaint_mask(name, person, category, size)``: it converts ``person`` (a ``ParsedPerson``: labels,
keypoints and the sets and frame they are in) with ``formats`` and returns the mask at ``size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leffa_pl.data.mask_recipes import dresscode_dataset, formats, hrviton, leffa_app
from leffa_pl.data.mask_recipes.recipe import CATEGORIES, KeypointFormat, LabelSet, MaskRecipe

__all__ = ["CATEGORIES", "RECIPES", "MaskRecipe", "ParsedPerson", "get", "inpaint_mask"]

RECIPES: dict[str, MaskRecipe] = {recipe.name: recipe for recipe in (
    leffa_app.LEFFA_HD,
    leffa_app.LEFFA_DC,
    dresscode_dataset.DRESSCODE,
    hrviton.HRVITON,
)}


def get(name: str) -> MaskRecipe:
    if name not in RECIPES:
        raise ValueError(f"unknown mask recipe {name!r}: choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


@dataclass(frozen=True)
class ParsedPerson:
    """A person's parsing and keypoints as stored: ``labels`` [H, W] uint8 in ``label_set``; ``keypoints`` [K, 2]
    float (x, y) in ``keypoint_format``, NaN where missing, in pixels of ``keypoint_frame`` (H, W)."""

    labels: np.ndarray
    label_set: LabelSet
    keypoints: np.ndarray
    keypoint_format: KeypointFormat
    keypoint_frame: tuple[int, int]


def inpaint_mask(name: str, person: ParsedPerson, category: str, size: tuple[int, int]) -> np.ndarray:
    """The mask (bool [H, W] at ``size``, True = repaint) that recipe ``name`` makes of ``person``."""
    recipe = get(name)
    if category not in recipe.categories:
        raise ValueError(f"mask recipe {name} has no rule for category {category!r} (it has {recipe.categories})")
    frame = tuple(recipe.frame or size)
    labels = formats.resize_labels(formats.convert_labels(person.labels, person.label_set, recipe.label_set), frame)
    keypoints = formats.convert_keypoints(person.keypoints, person.keypoint_format, recipe.keypoint_format)
    keypoints = formats.scale_keypoints(keypoints, person.keypoint_frame, frame)
    return formats.resize_mask(recipe.compute(labels, keypoints, category), size)
