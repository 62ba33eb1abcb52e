"""Body keypoints: transformers' ViTPose (COCO-17) on the box of its person detector, converted to the two point
orders the try-on datasets store (OpenPose BODY_25 for VITON-HD, COCO-18 for DressCode; their writers write the
JSON: ``datasets/<name>/writer.py``).

The OpenPose neck is the shoulders' midpoint and the mid-hip the hips' midpoint (score: the lower of the
two); a point below ``min_score`` is written as missing. The detector is any transformers object-detection
model (RT-DETR by default); the photo's person is the largest box of the "person" class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from leffa_pl.annotators.weight_files import (
    PERSON_DETECTOR,
    PERSON_DETECTOR_REVISION,
    VITPOSE,
    VITPOSE_REVISION,
    pretrained_error,
    pretrained_source,
)

# COCO-17: 0 nose, 1/2 left/right eye, 3/4 ears, 5/6 shoulders, 7/8 elbows, 9/10 wrists, 11/12 hips,
# 13/14 knees, 15/16 ankles (left first). COCO-18 / BODY_25 index -> COCO-17 index; "neck" and "mid_hip"
# are midpoints.
NECK, MID_HIP = "neck", "mid_hip"
COCO18_FROM_COCO17 = [0, NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
BODY25_FROM_COCO17 = [0, NECK, 6, 8, 10, 5, 7, 9, MID_HIP, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3] + [None] * 6
FROM_COCO17 = {"body25": BODY25_FROM_COCO17, "coco18": COCO18_FROM_COCO17}  # by the stored keypoint format
MIDPOINTS = {NECK: (5, 6), MID_HIP: (11, 12)}
OPENPOSE_VERSION = 1.3
MIN_SCORE = 0.3  # keypoints scored lower are written as missing


@dataclass
class BodyKeypoints:
    """COCO-17 keypoints of one person in the photo's pixels: ``xy`` [17, 2], ``scores`` [17]."""

    xy: np.ndarray
    scores: np.ndarray

    def point(self, index: int | str | None) -> tuple[float, float, float]:
        """(x, y, score) of a COCO-17 index or a midpoint name; (0, 0, 0) for None."""
        if index is None:
            return 0.0, 0.0, 0.0
        if isinstance(index, str):
            a, b = MIDPOINTS[index]
            x, y = (self.xy[a] + self.xy[b]) / 2
            return float(x), float(y), float(min(self.scores[a], self.scores[b]))
        return float(self.xy[index, 0]), float(self.xy[index, 1]), float(self.scores[index])


class KeypointEstimator(Protocol):
    """Keypoints of the main person of an RGB photo [H, W, 3] uint8, or None when nobody is found."""

    def __call__(self, image: np.ndarray) -> BodyKeypoints | None: ...


def stored_points(keypoints: BodyKeypoints, order: list, min_score: float) -> list[tuple[float, float, float]]:
    points = []
    for index in order:
        x, y, score = keypoints.point(index)
        points.append((x, y, score) if score >= min_score and index is not None else (0.0, 0.0, 0.0))
    return points


class VitPoseEstimator:
    """``KeypointEstimator``: a transformers detector's largest person box, then ViTPose on it.

    ``pose_model`` / ``detector``: ``save_pretrained`` folders, or None for the hub models (cache first).
    """

    def __init__(self, pose_model: str | os.PathLike | None = None, detector: str | os.PathLike | None = None,
                 device: str = "cpu", box_threshold: float = 0.3, offline: bool | None = None):
        from transformers import AutoImageProcessor, AutoModelForObjectDetection, VitPoseForPoseEstimation

        self.device, self.box_threshold = torch.device(device), box_threshold
        # Both sources first: a missing explicit folder is reported before anything loads.
        sources = [(*pretrained_source(explicit, repo_id, what, offline, revision), what, model_class)
                   for explicit, repo_id, revision, what, model_class in (
                       (detector, PERSON_DETECTOR, PERSON_DETECTOR_REVISION, "person detector",
                        AutoModelForObjectDetection),
                       (pose_model, VITPOSE, VITPOSE_REVISION, "ViTPose keypoint model", VitPoseForPoseEstimation))]
        loaded = []
        for source, local_only, revision, what, model_class in sources:
            try:
                processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only, revision=revision)
                model = model_class.from_pretrained(source, local_files_only=local_only, revision=revision,
                                                    use_safetensors=True)
            except OSError as error:
                raise pretrained_error(source, what, error) from None
            loaded.append((processor, model.to(self.device).eval()))
        (self.detector_processor, self.detector), (self.pose_processor, self.pose_model) = loaded
        label2id = {name.lower(): index for name, index in self.detector.config.label2id.items()}
        self.person_label = label2id.get("person", 0)

    @torch.no_grad()
    def person_box(self, image: np.ndarray) -> np.ndarray | None:
        """The largest person box (x, y, w, h) in pixels, or None."""
        inputs = self.detector_processor(images=image, return_tensors="pt").to(self.device)
        outputs = self.detector(**inputs)
        found = self.detector_processor.post_process_object_detection(
            outputs, target_sizes=torch.tensor([image.shape[:2]]), threshold=self.box_threshold)[0]
        boxes = found["boxes"][found["labels"] == self.person_label].cpu().numpy()
        if len(boxes) == 0:
            return None
        boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh, as ViTPose takes them
        return boxes[np.argmax(boxes[:, 2] * boxes[:, 3])]

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> BodyKeypoints | None:
        box = self.person_box(image)
        if box is None or box[2] <= 1 or box[3] <= 1:
            return None
        inputs = self.pose_processor(image, boxes=[[box.tolist()]], return_tensors="pt").to(self.device)
        outputs = self.pose_model(**inputs)
        pose = self.pose_processor.post_process_pose_estimation(outputs, boxes=[[box.tolist()]])[0][0]
        return BodyKeypoints(xy=pose["keypoints"].cpu().numpy().astype(np.float32),
                             scores=pose["scores"].cpu().numpy().astype(np.float32))


def layout_xy(keypoints: BodyKeypoints, keypoint_format: str, size: tuple[int, int] | None = None,
              min_score: float = MIN_SCORE) -> np.ndarray:
    """[K, 2] (x, y) pixels, NaN where missing, in the order the data modules read back from the stored JSON:
    ``keypoint_format`` ``body25`` (VITON-HD) or ``coco18`` (DressCode), what ``masks.py`` takes."""
    order = FROM_COCO17[keypoint_format]
    points = np.array(stored_points(keypoints, order, min_score), np.float32)
    xy = points[:, :2].copy()
    xy[points[:, 2] <= 0] = np.nan
    return xy
