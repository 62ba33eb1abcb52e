"""What a person photo needs for try-on, from the three preprocessing networks: a label map, body keypoints
and DensePose, plus the inpaint mask by a named recipe (``leffa_pl.data.mask_recipes``).

``PreprocessWeights`` holds where the networks' weights are (command-line options, shared by
``leffa-pl-prepare``, ``leffa-pl-tryon`` and ``leffa-pl-pose``); each network is loaded on first use, so a
command that is given masks or DensePose never needs the others.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from leffa_pl.annotators import weight_files as weights
from leffa_pl.annotators.annotation import PersonAnnotation, StoredFormat
from leffa_pl.annotators.densepose import (
    IUV_SCALINGS,
    RENDERINGS,
    DensePoseEstimator,
    DensePoseRendering,
    DensePoseResult,
    IuvScaling,
    TorchScriptDensePose,
)
from leffa_pl.annotators.keypoints import BodyKeypoints, KeypointEstimator, VitPoseEstimator
from leffa_pl.data.mask_recipes.leffa_app import APP_RECIPE_NAMES
from leffa_pl.preprocess.parsing import HumanParser, LabelSet, SchpParser


class NoPersonError(ValueError):
    """A photo in which a network found nobody."""


@dataclass
class PreprocessWeights:
    """Weight files and folders of the preprocessing networks (None: the Hugging Face cache, then a download), and
    how DensePose becomes maps (docs/parsing_densepose.md)."""

    parser_atr: str | None = None
    parser_lip: str | None = None
    densepose: str | None = None
    pose_model: str | None = None
    detector: str | None = None
    device: str = "cpu"
    offline: bool | None = None
    box_threshold: float = 0.3
    densepose_rendering: DensePoseRendering = "leffa-app"
    iuv_scaling: IuvScaling = "scale"


def add_weight_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("preprocessing networks (default: Hugging Face cache, then a download)")
    group.add_argument("--parser-atr", help=f"SCHP ATR ONNX file ({weights.SCHP_ATR.url})")
    group.add_argument("--parser-lip", help=f"SCHP LIP ONNX file ({weights.SCHP_LIP.url})")
    group.add_argument("--densepose-model", help=f"DensePose TorchScript file ({weights.DENSEPOSE_R50.url})")
    group.add_argument("--pose-model", help=f"ViTPose save_pretrained folder (default {weights.VITPOSE})")
    group.add_argument("--detector", help=f"person detector save_pretrained folder (default {weights.PERSON_DETECTOR})")
    group.add_argument("--box-threshold", type=float, default=0.3, help="person detector score threshold")
    group.add_argument("--offline", action="store_true", default=None, help="never download weights")
    group.add_argument("--densepose-rendering", choices=RENDERINGS, default="leffa-app",
                       help="persons in the VITON-HD DensePose rendering: as the Leffa app (default; of several, "
                            "the last drawn), the best-scoring one, or all")
    group.add_argument("--iuv-scaling", choices=IUV_SCALINGS, default="scale",
                       help="DeepFashion IUV: U*255 (default, the dataset encoding) or the Leffa app's min-max")


def weights_from_args(args: argparse.Namespace, device: str) -> PreprocessWeights:
    return PreprocessWeights(parser_atr=args.parser_atr, parser_lip=args.parser_lip, densepose=args.densepose_model,
                             pose_model=args.pose_model, detector=args.detector, device=device,
                             offline=args.offline, box_threshold=args.box_threshold,
                             densepose_rendering=args.densepose_rendering, iuv_scaling=args.iuv_scaling)


@dataclass
class Preprocessor:
    """The three networks, loaded on first use from ``weights`` (or given directly, e.g. in tests)."""

    weights: PreprocessWeights = field(default_factory=PreprocessWeights)
    parser: HumanParser | None = None
    keypoint_model: KeypointEstimator | None = None
    densepose_model: DensePoseEstimator | None = None
    cihp: bool = True  # load the LIP network too (VITON-HD and atr-neck labels)

    def load(self) -> None:
        """Load all three networks now (a missing weight file stops a command before its first photo)."""
        self._parser(), self._keypoint_model(), self._densepose_model()

    def _parser(self) -> HumanParser:
        if self.parser is None:
            w = self.weights
            lip = weights.resolve_file(weights.SCHP_LIP, w.parser_lip, w.offline) if self.cihp else None
            self.parser = SchpParser(weights.resolve_file(weights.SCHP_ATR, w.parser_atr, w.offline), lip, w.device)
        return self.parser

    def _keypoint_model(self) -> KeypointEstimator:
        if self.keypoint_model is None:
            w = self.weights
            self.keypoint_model = VitPoseEstimator(w.pose_model, w.detector, w.device, w.box_threshold, w.offline)
        return self.keypoint_model

    def _densepose_model(self) -> DensePoseEstimator:
        if self.densepose_model is None:
            w = self.weights
            self.densepose_model = TorchScriptDensePose(
                weights.resolve_file(weights.DENSEPOSE_R50, w.densepose, w.offline), w.device, w.densepose_rendering)
        return self.densepose_model

    def labels(self, image: np.ndarray, layout: StoredFormat) -> np.ndarray:
        return self.parse(image, layout.label_set)

    def parse(self, image: np.ndarray, label_set: LabelSet) -> np.ndarray:
        """Labels of ``image`` at its size in ``label_set`` (``atr-neck``: the Leffa app's, for its masks)."""
        return self._parser()(image, label_set)

    def keypoints(self, image: np.ndarray) -> BodyKeypoints:
        found = self._keypoint_model()(image)
        if found is None:
            raise NoPersonError("no person found (the person detector found nobody)")
        return found

    def densepose(self, image: np.ndarray) -> DensePoseResult:
        found = self._densepose_model()(image)
        if found is None or not found.parts.any():
            raise NoPersonError("no person found (DensePose found nobody)")
        return found

    def mask_labels(self, image: np.ndarray, layout: StoredFormat, recipe: str | None) -> tuple[np.ndarray, LabelSet]:
        """The labels mask recipe ``recipe`` reads: the Leffa app's own parsing for the recipes written from the
        app (``atr-neck``, parsed as the app does), else the layout's labels."""
        if needs_app_parsing(recipe):
            return self.parse(image, "atr-neck"), "atr-neck"
        return self.labels(image, layout), layout.label_set

    def annotate(self, image: np.ndarray, layout: StoredFormat, mask_recipe: str | None = None) -> PersonAnnotation:
        """The layout's maps; plus the labels ``mask_recipe`` reads where they are another parsing."""
        return PersonAnnotation(self.labels(image, layout), self.keypoints(image), self.densepose(image),
                                self.mask_labels(image, layout, mask_recipe) if needs_app_parsing(mask_recipe)
                                else None)


def needs_app_parsing(recipe: str | None) -> bool:
    """Whether ``recipe`` is one of the Leffa app's, which read its parsing (ATR + neck at 384x512; leffa-dc
    folds the neck into the head as the app's function does); that parsing needs the LIP network too."""
    return recipe in APP_RECIPE_NAMES
