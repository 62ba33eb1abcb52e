"""Human parsing with the SCHP networks exported to ONNX (the files the Leffa, IDM-VTON and OOTDiffusion demos
use), run with onnxruntime.

Each network takes a BGR image normalised with SCHP's statistics, fitted (aspect kept, black border) into a
square input (ATR 512 px, 18 labels; LIP 473 px, 20 labels), and returns ``[parsing, fusion, edge]`` logits at
a quarter of the input size; the fusion logits are upsampled, warped back onto the photo and arg-maxed.

Label sets produced:
- ``atr``: the ATR network's 18 labels, exactly DressCode's ``label_maps`` (no neck: it is part of "head").
- ``cihp``: VITON-HD's ``image-parse-v3``. LIP and CIHP share labels 0..19 except 10 (LIP jumpsuit, CIHP
  torso-skin/neck): a jumpsuit becomes a dress (6), and the neck is what ATR calls head and LIP calls neither
  face, hair, hat nor sunglasses (the rule of the OOTDiffusion/Leffa demo parser).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

LabelSet = Literal["cihp", "atr"]
# SCHP's normalisation, applied to BGR channels in this order.
BGR_MEAN = np.array([0.406, 0.456, 0.485], np.float32)
BGR_STD = np.array([0.225, 0.224, 0.229], np.float32)
FUSION_OUTPUT = 1  # outputs: parsing, fusion, edge

ATR_HEAD = 11
LIP_JUMPSUIT, LIP_NOT_NECK = 10, (1, 2, 4, 13)  # hat, hair, sunglasses, face
CIHP_DRESS, CIHP_NECK = 6, 10


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


def _square_fit(height: int, width: int, size: int) -> np.ndarray:
    """Affine 2x3 matrix fitting the photo, centred and aspect kept, into a ``size`` square."""
    scale = size / max(height, width)
    return np.array([[scale, 0, (size - scale * width) / 2], [0, scale, (size - scale * height) / 2]], np.float32)


class SchpNetwork:
    """One SCHP ONNX network: logits [labels, H, W] of a photo."""

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
        fit = _square_fit(height, width, size)
        bgr = cv2.warpAffine(image[..., ::-1], fit, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        blob = ((bgr.astype(np.float32) / 255.0 - BGR_MEAN) / BGR_STD).transpose(2, 0, 1)[None]
        fusion = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[FUSION_OUTPUT][0]
        if fusion.ndim != 3 or fusion.shape[0] != self.spec.labels:
            raise ParsingModelError(f"{self.path}: fusion output of shape {fusion.shape}, expected "
                                    f"[{self.spec.labels}, h, w] ({self.spec.name} labels)")
        # Upsampled as SCHP's inference does (bilinear, corners aligned), then warped back onto the photo.
        upsampled = F.interpolate(torch.from_numpy(fusion)[None], size=(size, size), mode="bilinear",
                                  align_corners=True)[0].permute(1, 2, 0).numpy()
        back = cv2.warpAffine(upsampled, cv2.invertAffineTransform(fit), (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return back.reshape(height, width, -1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.logits(image).argmax(-1).astype(np.uint8)


class SchpParser:
    """``HumanParser`` over the ATR network, plus the LIP network for CIHP labels (loaded when given)."""

    def __init__(self, atr: str | os.PathLike, lip: str | os.PathLike | None = None, device: str = "cpu"):
        self.atr = SchpNetwork(atr, ATR, device)
        self.lip = SchpNetwork(lip, LIP, device) if lip is not None else None

    def __call__(self, image: np.ndarray, label_set: LabelSet) -> np.ndarray:
        atr = self.atr(image)
        if label_set == "atr":
            return atr
        if self.lip is None:
            raise ParsingModelError("CIHP labels (VITON-HD) need the LIP parsing network as well as ATR")
        return cihp_labels(self.lip(image), atr)


def cihp_labels(lip: np.ndarray, atr: np.ndarray) -> np.ndarray:
    """VITON-HD (CIHP) labels from LIP labels, with the neck taken from ATR's head (see the module docstring)."""
    cihp = np.where(lip == LIP_JUMPSUIT, CIHP_DRESS, lip).astype(np.uint8)
    cihp[(atr == ATR_HEAD) & ~np.isin(lip, LIP_NOT_NECK)] = CIHP_NECK
    return cihp
