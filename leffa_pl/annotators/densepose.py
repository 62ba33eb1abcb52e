"""DensePose IUV from a TorchScript export of DensePose R50-FPN (torch + torchvision only, no detectron2), turned
into maps as the Leffa app does (franciszzj/Leffa 7848bedf: ``leffa_utils/densepose_predictor.py`` over
``3rdparty/densepose``), and the stored encodings.

The export takes a uint8 [3, H, W] RGB image and returns, per detected person (best first),
``(boxes [N, 4] xyxy pixels, coarse_segm [N, 2, S, S], fine_segm [N, 25, S, S], u [N, 25, S, S],
v [N, 25, S, S])``: DensePose's chart outputs on the box. It returns the persons its own score threshold kept
and no scores (the app keeps those above 0.5). Each person becomes a ``ChartInstance`` as DensePose's
converter makes it: the XYWH box truncated to integers, the outputs resized bilinearly onto it, part index
I = argmax of the fine segmentation where the coarse one says foreground, U and V of that part (0 elsewhere).

Maps (``DensePoseResult``): I, U, V of the first person pasted into a full-size zero map (the app's
``predict_iuv``: DressCode's I, DeepFashion's IUV); the VITON-HD rendering shows the persons chosen by
``DensePoseRendering``:
- ``leffa-app``: the app's ``predict_seg`` (``MatrixVisualizer`` with alpha 1 on black). Its visualizer clears
  the canvas before drawing each person, so of several persons only the last drawn (lowest score) is left;
  with one person it is that person.
- ``first``: the best-scoring person only.
- ``all``: every person, each drawn over the ones before (detectron2's own in-place visualizer).

Encodings (datasets.md; each dataset's own codec encodes these maps): VITON-HD ``image-densepose`` = I rendered
with PARULA (``datasets.vitonhd.reader.encode_densepose`` of ``shown_parts``);
DressCode ``dense/{id}_5.png`` = I as pixel values plus ``{id}_5_uv.npz`` (key ``uv``, [2, H, W]); DeepFashion
= RGB (U, V, I) with U, V scaled by ``IuvScaling`` (``datasets.deepfashion.densepose_fill.iuv_map``): ``scale`` =
U*255, V*255 (``deepfashion.encode_iuv``, the dataset encoding), ``minmax`` = the app's ``predict_iuv``: U and V
min-max normalised jointly over the person's box (background included) before x255, truncated (``minmax_iuv``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  registers torchvision's operators (nms, roi_align) that the export calls

from leffa_pl.data.layout import DENSEPOSE_PARTS as PARTS

DensePoseRendering = Literal["leffa-app", "first", "all"]
IuvScaling = Literal["scale", "minmax"]
RENDERINGS: tuple[DensePoseRendering, ...] = ("leffa-app", "first", "all")
IUV_SCALINGS: tuple[IuvScaling, ...] = ("scale", "minmax")


class DensePoseModelError(ValueError):
    """A DensePose file that cannot be loaded or returns something else than DensePose's outputs."""


@dataclass
class ChartInstance:
    """One person: ``box`` (x, y, w, h) integer pixels, ``labels`` [h, w] uint8 part indices, ``uv`` [2, h, w]
    float32 (0 on background; the network's values, not clamped)."""

    box: tuple[int, int, int, int]
    labels: np.ndarray
    uv: np.ndarray


def chart_instance(box: torch.Tensor, coarse: torch.Tensor, fine: torch.Tensor, u: torch.Tensor,
                   v: torch.Tensor) -> ChartInstance:
    """A person's chart outputs ([C, S, S] each) on its XYXY ``box``, as DensePose's chart-result converter."""
    xywh = box.float().clone()
    xywh[2:] -= xywh[:2]
    x, y, w, h = xywh.long().tolist()
    size = (max(h, 1), max(w, 1))

    def resized(values: torch.Tensor) -> torch.Tensor:
        return F.interpolate(values[None].float(), size=size, mode="bilinear", align_corners=False)[0]

    labels = resized(fine).argmax(0) * (resized(coarse).argmax(0) > 0)
    index = labels[None]
    uv = torch.where(labels > 0, torch.cat([resized(u).gather(0, index), resized(v).gather(0, index)]), 0.0)
    return ChartInstance((x, y, w, h), labels.numpy().astype(np.uint8), uv.numpy().astype(np.float32))


def paste(canvas: np.ndarray, instance: ChartInstance, values: np.ndarray, foreground_only: bool = False) -> None:
    """Write ``values`` ([h, w, ...], the instance's box) into ``canvas`` at the box, cut to the canvas (the app
    writes the whole box; ``foreground_only``: only where the instance's I > 0, as its visualizer)."""
    x, y, w, h = instance.box
    if w <= 0 or h <= 0:
        return
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + h, canvas.shape[0]), min(x + w, canvas.shape[1])
    if bottom <= top or right <= left:
        return
    part = values[top - y:bottom - y, left - x:right - x]
    if foreground_only:
        keep = instance.labels[top - y:bottom - y, left - x:right - x] > 0
        canvas[top:bottom, left:right][keep] = part[keep]
    else:
        canvas[top:bottom, left:right] = part


def rendered_parts(instances: list[ChartInstance], size: tuple[int, int],
                   rendering: DensePoseRendering) -> np.ndarray:
    """The part indices a VITON-HD rendering of ``instances`` (best first) shows (module docstring)."""
    chosen = {"leffa-app": instances[-1:], "first": instances[:1], "all": instances}[rendering]
    parts = np.zeros(size, np.uint8)
    for instance in chosen:
        paste(parts, instance, instance.labels, foreground_only=True)
    return parts


@dataclass
class DensePoseResult:
    """Full-size maps of the first person: ``parts`` [H, W] uint8 (0..24, 0 = background), ``u``, ``v`` [H, W]
    float32 (0 on background); its ``box`` (x, y, w, h); ``rendered`` [H, W]: the part indices the VITON-HD
    rendering shows (None: ``parts``)."""

    parts: np.ndarray
    u: np.ndarray
    v: np.ndarray
    box: tuple[int, int, int, int] | None = None
    rendered: np.ndarray | None = None

    @classmethod
    def from_instances(cls, instances: list[ChartInstance], size: tuple[int, int],
                       rendering: DensePoseRendering = "leffa-app") -> DensePoseResult:
        first = instances[0]
        parts, uv = np.zeros(size, np.uint8), np.zeros(size + (2,), np.float32)
        paste(parts, first, first.labels)
        paste(uv, first, first.uv.transpose(1, 2, 0))
        rendered = rendered_parts(instances, size, rendering)
        return cls(parts, uv[..., 0], uv[..., 1], first.box, None if np.array_equal(rendered, parts) else rendered)

    @property
    def shown_parts(self) -> np.ndarray:
        """The part indices the VITON-HD rendering shows (its encoding: ``datasets.vitonhd.reader``)."""
        return self.parts if self.rendered is None else self.rendered

    def dresscode_uv(self) -> np.ndarray:
        return np.clip(np.stack([self.u, self.v]), 0, 1).astype(np.float32)


def minmax_iuv(parts: np.ndarray, u: np.ndarray, v: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """RGB (U, V, I) with U, V min-max normalised jointly over ``box`` (x, y, w, h; None: the whole map) and x255,
    truncated as the app's float-to-uint8 store; 0 outside the box. A constant box gives 0 (the app divides by 0)."""
    x, y, w, h = box if box is not None else (0, 0, parts.shape[1], parts.shape[0])
    iuv = np.zeros(parts.shape + (3,), np.uint8)
    region = (slice(max(y, 0), y + h), slice(max(x, 0), x + w))
    uv = torch.from_numpy(np.stack([u[region], v[region]]))
    low, high = uv.min(), uv.max()
    if high > low:
        iuv[region + (slice(0, 2),)] = (((uv - low) / (high - low)) * 255).permute(1, 2, 0).numpy().astype(np.uint8)
    iuv[..., 2] = parts
    return iuv


class DensePoseEstimator(Protocol):
    """DensePose of the persons of an RGB photo [H, W, 3] uint8, or None when nobody is found."""

    def __call__(self, image: np.ndarray) -> DensePoseResult | None: ...


class TorchScriptDensePose:
    """``DensePoseEstimator`` over the TorchScript export (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", rendering: DensePoseRendering = "leffa-app"):
        self.path, self.device, self.rendering = Path(path), torch.device(device), rendering
        try:
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as error:
            raise DensePoseModelError(f"{self.path}: not a loadable TorchScript file ({error})") from None

    @torch.no_grad()
    def instances(self, image: np.ndarray) -> list[ChartInstance]:
        """Every person the export returns, best first."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device)
        outputs = self.model(tensor)
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 5:
            raise DensePoseModelError(f"{self.path}: expected the outputs (boxes, coarse_segm, fine_segm, u, v), "
                                      f"got {type(outputs).__name__}")
        boxes, coarse, fine, u, v = (t.cpu() for t in outputs)
        expected = {"coarse_segm": (coarse, 2), "fine_segm": (fine, PARTS + 1), "u": (u, PARTS + 1),
                    "v": (v, PARTS + 1)}
        for name, (value, channels) in expected.items():
            if value.ndim != 4 or value.shape[0] != len(boxes) or value.shape[1] != channels:
                raise DensePoseModelError(f"{self.path}: {name} of shape {tuple(value.shape)}, expected "
                                          f"[{len(boxes)}, {channels}, S, S]")
        return [chart_instance(boxes[i], coarse[i], fine[i], u[i], v[i]) for i in range(len(boxes))]

    def __call__(self, image: np.ndarray) -> DensePoseResult | None:
        found = self.instances(image)
        return DensePoseResult.from_instances(found, image.shape[:2], self.rendering) if found else None
