"""DensePose IUV from a TorchScript export of DensePose R50-FPN (torch + torchvision only, no detectron2), and
the three stored encodings.

The export takes a uint8 [3, H, W] RGB image and returns, per detected person (best first),
``(boxes [N, 4] xyxy pixels, coarse_segm [N, 2, S, S], fine_segm [N, 25, S, S], u [N, 25, S, S],
v [N, 25, S, S])``: DensePose's chart outputs on the box. The first instance is pasted into a full-size map:
part index I = argmax of the fine segmentation where the coarse one says foreground, U and V of that part.

Encodings (datasets.md): VITON-HD ``image-densepose`` = I rendered with PARULA (``vitonhd.encode_densepose``);
DressCode ``dense/{id}_5.png`` = I as pixel values plus ``{id}_5_uv.npz`` (key ``uv``, [2, H, W]); DeepFashion
= RGB (U*255, V*255, I) (``deepfashion.encode_iuv``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  registers torchvision's operators (nms, roi_align) that the export calls

from leffa_pl.data import deepfashion, vitonhd
from leffa_pl.data.layout import DENSEPOSE_PARTS as PARTS


class DensePoseModelError(ValueError):
    """A DensePose file that cannot be loaded or returns something else than DensePose's outputs."""


@dataclass
class DensePoseResult:
    """Full-size maps of one person: ``parts`` [H, W] uint8 (0..24, 0 = background), ``u``, ``v`` [H, W] in [0, 1]."""

    parts: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def vitonhd_rendering(self) -> np.ndarray:
        return vitonhd.encode_densepose(self.parts)

    def dresscode_uv(self) -> np.ndarray:
        return np.stack([self.u, self.v]).astype(np.float32)

    def deepfashion_iuv(self) -> np.ndarray:
        return deepfashion.encode_iuv(self.parts, self.u, self.v)


class DensePoseEstimator(Protocol):
    """DensePose of the main person of an RGB photo [H, W, 3] uint8, or None when nobody is found."""

    def __call__(self, image: np.ndarray) -> DensePoseResult | None: ...


def paste_instance(box: torch.Tensor, coarse: torch.Tensor, fine: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                   size: tuple[int, int]) -> DensePoseResult:
    """One instance's chart outputs ([C, S, S] each) resized onto its box in a zero map of ``size`` (H, W)."""
    height, width = size
    x0, y0, x1, y1 = box.tolist()
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(width, max(left + 1, int(np.ceil(x1)))), min(height, max(top + 1, int(np.ceil(y1))))
    parts = np.zeros(size, np.uint8)
    u_map, v_map = np.zeros(size, np.float32), np.zeros(size, np.float32)
    if right <= left or bottom <= top:
        return DensePoseResult(parts, u_map, v_map)
    box_size = (bottom - top, right - left)
    stacked = torch.cat([coarse, fine, u, v]).float()[None]
    resized = F.interpolate(stacked, size=box_size, mode="bilinear", align_corners=False)[0]
    coarse_r, fine_r = resized[:2], resized[2:2 + PARTS + 1]
    u_r, v_r = resized[3 + PARTS:4 + 2 * PARTS], resized[4 + 2 * PARTS:]
    labels = fine_r.argmax(0) * (coarse_r.argmax(0) > 0)
    index = labels[None]
    parts[top:bottom, left:right] = labels.numpy().astype(np.uint8)
    u_map[top:bottom, left:right] = u_r.gather(0, index)[0].clamp(0, 1).numpy()
    v_map[top:bottom, left:right] = v_r.gather(0, index)[0].clamp(0, 1).numpy()
    background = parts == 0
    u_map[background], v_map[background] = 0, 0
    return DensePoseResult(parts, u_map, v_map)


class TorchScriptDensePose:
    """``DensePoseEstimator`` over the TorchScript export (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.path, self.device = Path(path), torch.device(device)
        try:
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as error:
            raise DensePoseModelError(f"{self.path}: not a loadable TorchScript file ({error})") from None

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> DensePoseResult | None:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device)
        outputs = self.model(tensor)
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 5:
            raise DensePoseModelError(f"{self.path}: expected the outputs (boxes, coarse_segm, fine_segm, u, v), "
                                      f"got {type(outputs).__name__}")
        boxes, coarse, fine, u, v = (t.cpu() for t in outputs)
        if len(boxes) == 0:
            return None
        expected = {"coarse_segm": (coarse, 2), "fine_segm": (fine, PARTS + 1), "u": (u, PARTS + 1),
                    "v": (v, PARTS + 1)}
        for name, (value, channels) in expected.items():
            if value.ndim != 4 or value.shape[0] != len(boxes) or value.shape[1] != channels:
                raise DensePoseModelError(f"{self.path}: {name} of shape {tuple(value.shape)}, expected "
                                          f"[{len(boxes)}, {channels}, S, S]")
        return paste_instance(boxes[0], coarse[0], fine[0], u[0], v[0], image.shape[:2])
