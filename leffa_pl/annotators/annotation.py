"""A person photo's annotation (label map, keypoints, DensePose) and the inpaint mask a recipe makes of it, in
the formats a dataset stores (``StoredFormat``: a ``DatasetSpec`` or a layout writer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from leffa_pl.annotators.densepose import DensePoseResult
from leffa_pl.annotators.keypoints import BodyKeypoints, layout_xy
from leffa_pl.data import mask_recipes, masks
from leffa_pl.data.mask_recipes.recipe import LabelSet


class StoredFormat(Protocol):
    """What a dataset stores its parsing and keypoints as (a ``DatasetSpec`` or a layout writer)."""

    label_set: LabelSet
    keypoint_format: str


@dataclass
class PersonAnnotation:
    """A person photo's label map (the layout's label set), keypoints and DensePose, at the photo's size."""

    labels: np.ndarray
    keypoints: BodyKeypoints
    densepose: DensePoseResult
    mask_labels: tuple[np.ndarray, LabelSet] | None = None  # what the mask recipe reads, when not ``labels``


def inpaint_mask(recipe: str, layout: StoredFormat, labels: np.ndarray, keypoints: BodyKeypoints,
                 category: masks.DressCodeCategory = "upper_body", label_set: LabelSet | None = None) -> np.ndarray:
    """The inpaint mask (bool, True = repaint) of mask recipe ``recipe`` at the labels' size, from the labels (in
    ``label_set``, default the layout's) and the keypoints as the layout stores them."""
    person = mask_recipes.ParsedPerson(labels, label_set or layout.label_set,
                                       layout_xy(keypoints, layout.keypoint_format), layout.keypoint_format,
                                       labels.shape[:2])
    return mask_recipes.inpaint_mask(recipe, person, category, labels.shape[:2])
