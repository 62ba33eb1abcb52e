"""Garment and DensePose regions: the labels of the garment as worn; the dilation scales with the height."""

import numpy as np

from leffa_pl.data import masks


def test_garment_regions_are_the_worn_garment_labels():
    cihp = np.array([[5, 6, 7, 10, 14]], np.uint8)
    assert masks.vitonhd_garment_region(cihp).tolist() == [[True, True, True, False, False]]
    atr = np.array([[4, 5, 6, 7, 8]], np.uint8)
    assert masks.dresscode_garment_region(atr, "lower_body").tolist() == [[False, True, True, False, False]]


def test_densepose_region_grows_in_proportion_to_the_height():
    for height in (256, 1024):
        parts = np.zeros((height, height * 3 // 4), np.uint8)
        parts[height // 2, height // 4] = 2
        region = masks.densepose_foreground_region(parts)
        assert region[height // 2].sum() == masks.scaled(masks.DENSEPOSE_REGION_DILATION, height)
