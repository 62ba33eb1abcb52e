"""Mask recipes on hand-made label maps: arm lines keep the hands, sizes scale with resolution."""

import cv2
import numpy as np

from leffa_pl.data import masks


def upper_body(height):
    """CIHP labels of a T-posed torso with one straight arm to the image's left, at ``height`` x 3/4 height."""
    s = height / 512
    labels = np.zeros((height, height * 3 // 4), np.uint8)
    cv2.rectangle(labels, (int(150 * s), int(140 * s)), (int(234 * s), int(300 * s)), 5, -1)  # upper clothes
    cv2.rectangle(labels, (int(40 * s), int(140 * s)), (int(150 * s), int(160 * s)), 15, -1)  # right arm
    cv2.rectangle(labels, (0, int(135 * s)), (int(40 * s), int(165 * s)), 15, -1)  # right hand
    cv2.circle(labels, (int(192 * s), int(90 * s)), int(40 * s), 13, -1)  # face
    keypoints = np.full((25, 2), np.nan)
    keypoints[2], keypoints[3], keypoints[4] = [150 * s, 150 * s], [95 * s, 150 * s], [45 * s, 150 * s]
    return labels, keypoints


def test_arm_lines_repaint_the_arm_and_keep_the_hand():
    labels, keypoints = upper_body(512)
    mask = masks.vitonhd_inpaint_mask(labels, keypoints)
    assert mask[labels == 5].all() and mask[150, 60:150].all()
    assert not mask[labels == 13].any()
    assert not mask[135:166, 0:20].any()  # the hand beyond the wrist line stays
    keypoints[4] = np.nan  # without the wrist the whole arm label is repainted, hand included
    assert masks.vitonhd_inpaint_mask(labels, keypoints)[150, 10]


def test_mask_scales_with_resolution():
    small = masks.vitonhd_inpaint_mask(*upper_body(256))
    large = masks.vitonhd_inpaint_mask(*upper_body(1024))
    down = cv2.resize(large.astype(np.uint8), small.shape[::-1], interpolation=cv2.INTER_AREA) > 0.5
    assert (small & down).sum() / (small | down).sum() > 0.95
    assert masks.scaled(masks.DILATION_SIZE, 1024) == 92 and masks.scaled(45, 256) == 22


def test_dresscode_neck_line_follows_the_shoulders():
    labels = np.zeros((512, 384), np.uint8)
    cv2.circle(labels, (192, 100), 60, 11, -1)  # head, reaching below the shoulder line at y = 150
    cv2.rectangle(labels, (150, 150), (234, 300), 4, -1)
    keypoints = np.full((18, 2), np.nan)
    keypoints[2], keypoints[5] = [130, 150], [254, 150]
    mask = masks.dresscode_inpaint_mask(labels, keypoints, "upper_body")
    assert mask[140, 192] and not mask[100, 192]  # neck (within 20 px above the line) repainted, face kept
    assert not masks.dresscode_inpaint_mask(labels, keypoints, "lower_body")[labels == 4].any()
