"""Human parsing with the SCHP networks exported to ONNX (the files the Leffa, IDM-VTON and OOTDiffusion demos
use), run with onnxruntime, with SCHP's pre- and post-processing as the Leffa app runs it (franciszzj/Leffa
7848bedf, ``preprocess/humanparsing/parsing_api.py`` with SCHP's ``SimpleFolderDataset`` and
``transform_logits``).

Each network takes a BGR image normalised with SCHP's statistics, fitted (aspect kept, black border) into a
square input (ATR 512 px, 18 labels; LIP 473 px, 20 labels) by SCHP's affine transform, and returns
``[parsing, fusion, edge]`` logits at a quarter of the input size; the fusion logits are upsampled (bilinear,
corners aligned), warped back onto the photo channel by channel and arg-maxed.

Label sets produced:
- ``atr``: the ATR network's 18 labels, exactly DressCode's ``label_maps`` (no neck: it is part of "head").
- ``atr-neck``: the Leffa app's parsing, which its ``leffa-hd``/``leffa-dc`` masks read: ATR with the holes in
  upper clothes + arms filled as upper clothes (holes of contour area > 2000 px keep their label, arms keep
  theirs), and ``ATR_NECK`` (18) where ATR says head and LIP does not say face. Parsed at ``APP_FRAME``
  (384x512, the photo resized bicubic as the app does) and returned at the photo's size (nearest).
- ``cihp``: VITON-HD's ``image-parse-v3``. LIP and CIHP share labels 0..19 except 10 (LIP jumpsuit, CIHP
  torso-skin/neck): a jumpsuit becomes a dress (6), and the neck is what ATR calls head and LIP calls neither
  face, hair, hat nor sunglasses (the rule of the OOTDiffusion demo parser).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from leffa_pl.data.mask_recipes.formats import ATR_ARMS, ATR_HEAD, ATR_NECK  # the label sets, listed once
from leffa_pl.data.mask_recipes.recipe import LabelSet

# SCHP's normalisation, applied to BGR channels in this order.
BGR_MEAN = np.array([0.406, 0.456, 0.485], np.float32)
BGR_STD = np.array([0.225, 0.224, 0.229], np.float32)
FUSION_OUTPUT = 1  # outputs: parsing, fusion, edge

ATR_UPPER = 4
LIP_FACE = 13
LIP_JUMPSUIT, LIP_NOT_NECK = 10, (1, 2, 4, LIP_FACE)  # hat, hair, sunglasses, face
CIHP_DRESS, CIHP_NECK = 6, 10
APP_FRAME = (512, 384)  # (H, W) the Leffa app parses at
APP_KEPT_HOLE_AREA = 2000  # holes in upper clothes + arms with a larger contour area keep their label


class ParsingModelError(ValueError):
    """A parsing network file that cannot be loaded or has the wrong signature; the message names it."""


class HumanParser(Protocol):
    """Label map [H, W] uint8 of an RGB photo [H, W, 3] uint8, in ``label_set``."""

    def __call__(self, image: np.ndarray, label_set: LabelSet) -> np.ndarray: ...


@dataclass(frozen=True)
class SchpSpec:
    name: str
    labels: int
    input_size: int


ATR = SchpSpec("ATR", 18, 512)
LIP = SchpSpec("LIP", 20, 473)


def _session(path: Path, device: str):
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for every load failure
        raise ParsingModelError(f"{path}: not a loadable ONNX model ({error})") from None


def schp_affine(height: int, width: int, size: int, inverse: bool = False) -> np.ndarray:
    """SCHP's 2x3 matrix from a photo to its ``size`` square input (or back): the box (0, 0, w - 1, h - 1)
    widened to a square about its centre, mapped onto the input's pixel centres. Built from the same float32
    point triples and ``cv2.getAffineTransform`` as SCHP, so the warps agree to the bit."""
    centre = np.array([(width - 1) * 0.5, (height - 1) * 0.5], np.float32)
    half = np.float32(max(width - 1, height - 1)) * np.float32(-0.5)
    out_half = np.float32((size - 1) * 0.5)

    def triple(origin: np.ndarray, step: np.ndarray) -> np.ndarray:
        # origin, origin + step, and origin + step turned a quarter about the second point
        second = origin + step
        return np.stack([origin, second, second + np.array([-(origin - second)[1], (origin - second)[0]],
                                                             np.float32)]).astype(np.float32)

    source = triple(centre, np.array([0, half], np.float32))
    target = triple(np.array([out_half, out_half], np.float32), np.array([0, (size - 1) * -0.5], np.float32))
    return cv2.getAffineTransform(target, source) if inverse else cv2.getAffineTransform(source, target)


class SchpNetwork:
    """One SCHP ONNX network: logits [H, W, labels] of a photo."""

    def __init__(self, path: str | os.PathLike, spec: SchpSpec, device: str = "cpu"):
        self.path, self.spec = Path(path), spec
        self.session = _session(self.path, device)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) <= FUSION_OUTPUT:
            raise ParsingModelError(f"{self.path}: expected SCHP's signature (1 input; parsing, fusion, edge "
                                    f"outputs), got {len(inputs)} inputs and {len(outputs)} outputs")
        self.input_name = inputs[0].name
        size = inputs[0].shape[-1]
        self.input_size = size if isinstance(size, int) else spec.input_size

    def logits(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        size = self.input_size
        bgr = cv2.warpAffine(np.ascontiguousarray(image[..., ::-1]), schp_affine(height, width, size), (size, size),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        blob = ((bgr.astype(np.float32) / 255.0 - BGR_MEAN) / BGR_STD).transpose(2, 0, 1)[None]
        fusion = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[FUSION_OUTPUT][0]
        if fusion.ndim != 3 or fusion.shape[0] != self.spec.labels:
            raise ParsingModelError(f"{self.path}: fusion output of shape {fusion.shape}, expected "
                                    f"[{self.spec.labels}, h, w] ({self.spec.name} labels)")
        upsampled = F.interpolate(torch.from_numpy(fusion)[None], size=(size, size), mode="bilinear",
                                  align_corners=True)[0].numpy()
        back = schp_affine(height, width, size, inverse=True)
        # Channel by channel, as SCHP's transform_logits (zero outside the input square).
        return np.stack([cv2.warpAffine(channel, back, (width, height), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0) for channel in upsampled], -1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.logits(image).argmax(-1).astype(np.uint8)


class SchpParser:
    """``HumanParser`` over the ATR network, plus the LIP network for CIHP and ``atr-neck`` labels (loaded when
    given)."""

    def __init__(self, atr: str | os.PathLike, lip: str | os.PathLike | None = None, device: str = "cpu"):
        self.atr = SchpNetwork(atr, ATR, device)
        self.lip = SchpNetwork(lip, LIP, device) if lip is not None else None

    def __call__(self, image: np.ndarray, label_set: LabelSet) -> np.ndarray:
        if label_set == "atr":
            return self.atr(image)
        if self.lip is None:
            raise ParsingModelError(f"{label_set} labels need the LIP parsing network as well as ATR")
        if label_set == "atr-neck":
            return self.leffa_app(image)
        return cihp_labels(self.lip(image), self.atr(image))

    def leffa_app(self, image: np.ndarray) -> np.ndarray:
        """``atr-neck`` labels at the photo's size, parsed at ``APP_FRAME`` as the Leffa app does."""
        height, width = image.shape[:2]
        frame = to_app_frame(image)
        labels = leffa_app_labels(self.atr(frame), self.lip(frame))
        if labels.shape != (height, width):
            labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))
        return labels


def to_app_frame(image: np.ndarray) -> np.ndarray:
    """The photo at ``APP_FRAME``, resized as the app's ``PIL.Image.resize((384, 512))`` (bicubic)."""
    height, width = APP_FRAME
    if image.shape[:2] == APP_FRAME:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def leffa_app_labels(atr: np.ndarray, lip: np.ndarray) -> np.ndarray:
    """The Leffa app's ``atr-neck`` labels from the ATR and LIP arg-max maps (see the module docstring).

    The app's steps, on a map padded by one background pixel: fill the holes of upper clothes + arms (flood fill
    from the corner) and call everything filled upper clothes; then the arms, and the filled holes that are not
    arms with a contour area > ``APP_KEPT_HOLE_AREA``, take back their own label. Its contours are found on an
    int32 map (OpenCV's label mode, as the app's int64 arrays become), drawn on uint8 where arm + hole wraps to 0.
    """
    labels = np.pad(atr, 1).astype(np.uint8)
    arms = np.isin(labels, ATR_ARMS).astype(np.uint8)
    region = ((labels == ATR_UPPER) | (arms > 0)).astype(np.uint8) * 255
    flooded = region.copy()
    cv2.floodFill(flooded, np.zeros((region.shape[0] + 2, region.shape[1] + 2), np.uint8), (0, 0), 255)
    filled = (region | ~flooded) > 0
    holes = (filled & (labels != ATR_UPPER) & (arms == 0)).astype(np.int32) * 255
    contours, _ = cv2.findContours(holes, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_TC89_L1)
    keep = np.zeros_like(labels)
    for index, contour in enumerate(contours):
        if abs(cv2.contourArea(contour, True)) > APP_KEPT_HOLE_AREA:
            cv2.drawContours(keep, contours, index, color=255, thickness=-1)
    keep = keep + arms  # uint8: 255 + 1 wraps to 0 as in the app
    result = np.where(keep > 0, labels, np.where(filled, ATR_UPPER, labels))[1:-1, 1:-1].astype(np.uint8)
    result[(result == ATR_HEAD) & (lip != LIP_FACE)] = ATR_NECK
    return result


def cihp_labels(lip: np.ndarray, atr: np.ndarray) -> np.ndarray:
    """VITON-HD (CIHP) labels from LIP labels, with the neck taken from ATR's head (see the module docstring)."""
    cihp = np.where(lip == LIP_JUMPSUIT, CIHP_DRESS, lip).astype(np.uint8)
    cihp[(atr == ATR_HEAD) & ~np.isin(lip, LIP_NOT_NECK)] = CIHP_NECK
    return cihp
