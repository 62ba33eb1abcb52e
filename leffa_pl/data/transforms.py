"""Joint resize and augmentation of everything aligned with the person, plus contract encoding.

A sample is carried through as ``Views``: the person image, the reference image, label maps aligned
with the person (inpaint mask, loss region, DensePose part index, ...) and an optional flow field.
Resizing and augmentation move all aligned views together (images: area/linear interpolation,
labels and flow: nearest), so a mask never drifts from its image. Albumentations does the work.

Horizontal flips mirror the reference together with the person (a mirrored person wears the mirrored
garment; text on it stays consistent). Label maps with left/right semantics declare a flip lookup
table that swaps their labels (DensePose parts: ``DENSEPOSE_FLIP_LUT``); the flow's x component is
negated because the reference is mirrored too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import albumentations as A
import cv2
import numpy as np
import torch


def _swap_lut(pairs: list[tuple[int, int]], size: int = 256) -> np.ndarray:
    lut = np.arange(size, dtype=np.uint8)
    for a, b in pairs:
        lut[a], lut[b] = b, a
    return lut


# DensePose part index I (1..24): right/left hands, feet, upper/lower legs (back, front),
# upper/lower arms (front, back) and head sides swap under a horizontal flip.
DENSEPOSE_FLIP_LUT = _swap_lut([(3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18),
                                (19, 20), (21, 22), (23, 24)])


@dataclass
class Views:
    """One sample's arrays: ``person``/``reference`` uint8 [H, W, 3]; ``labels`` uint8 [H, W] (or [H, W, C])
    aligned with the person; ``flow`` float32 [H, W, 2] (person -> reference, grid_sample coordinates, NaN
    where undefined)."""

    person: np.ndarray
    reference: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    flow: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.person.shape[0], self.person.shape[1]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image to ``size`` = (H, W): area interpolation when shrinking, bicubic when enlarging."""
    if image.shape[:2] == tuple(size):
        return image
    shrink = size[0] < image.shape[0]
    resize = A.Resize(*size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC, p=1.0)
    return resize(image=image)["image"]


def resize_label(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map (or flow field) to ``size`` = (H, W) with nearest neighbour."""
    if labels.shape[:2] == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def resize_views(views: Views, size: tuple[int, int]) -> Views:
    """All views at ``size`` = (H, W). The reference is resized on its own (it is not aligned)."""
    return Views(person=resize_image(views.person, size), reference=resize_image(views.reference, size),
                 labels={k: resize_label(v, size) for k, v in views.labels.items()},
                 flow=None if views.flow is None else resize_label(views.flow, size))


def sample_rng(index: int) -> np.random.Generator:
    """The random generator of a sample's augmentation. For a ``SampleKey`` (what ``ResumableDataLoader`` hands
    out) it is set by (pass seed, index): the same whichever worker loads the sample, however many workers
    there are and whether they persist. For a plain index it is drawn from torch's generator of the process."""
    seed = getattr(index, "seed", None)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    return np.random.default_rng([seed, int(index)])


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; probabilities of 0 switch a part off."""

    flip_p: float = 0.5
    affine_p: float = 0.5
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.05
    color_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02


class JointAugment:
    """Flip (person-aligned views + reference), shift/scale (person-aligned views), colour (images only,
    the same jitter on person and reference so the garment keeps matching)."""

    def __init__(self, config: AugmentConfig = AugmentConfig(), flip_luts: dict[str, np.ndarray] | None = None):
        self.config = config
        self.flip_luts = flip_luts or {}
        self._flip = A.HorizontalFlip(p=1.0)
        self._affine_by_keys: dict[tuple[str, ...], A.Compose] = {}
        self._color = A.Compose([A.ColorJitter(brightness=config.brightness, contrast=config.contrast,
                                               saturation=config.saturation, hue=config.hue, p=1.0)],
                                additional_targets={"reference": "image"})

    def _affine(self, keys: tuple[str, ...]) -> A.Compose:
        if keys not in self._affine_by_keys:
            # Replicated borders keep image, labels and flow consistent at the edges.
            affine = A.Affine(scale=self.config.scale, translate_percent=(-self.config.shift, self.config.shift),
                              border_mode=cv2.BORDER_REPLICATE, p=1.0)
            self._affine_by_keys[keys] = A.Compose([affine], additional_targets={k: "mask" for k in keys})
        return self._affine_by_keys[keys]

    def __call__(self, views: Views, rng: np.random.Generator) -> Views:
        """Augmented copy of ``views``; all randomness comes from ``rng``."""
        cfg = self.config
        person, reference, labels, flow = views.person, views.reference, dict(views.labels), views.flow
        if rng.random() < cfg.flip_p:
            person = self._flip(image=person)["image"]
            reference = self._flip(image=reference)["image"]
            for key, value in labels.items():
                value = self._flip(image=value)["image"]
                labels[key] = self.flip_luts[key][value] if key in self.flip_luts else value
            if flow is not None:
                flow = self._flip(image=flow)["image"] * np.array([-1.0, 1.0], np.float32)
        if rng.random() < cfg.affine_p:
            targets = dict(labels, **({"flow": flow} if flow is not None else {}))
            pipeline = self._affine(tuple(sorted(targets)))
            pipeline.set_random_state(rng, _py_random(rng))
            out = pipeline(image=person, **targets)
            person, labels = out["image"], {k: out[k] for k in labels}
            flow = out.get("flow") if flow is not None else None
        if rng.random() < cfg.color_p:
            self._color.set_random_state(rng, _py_random(rng))
            out = self._color(image=person, reference=reference)
            person, reference = out["image"], out["reference"]
        return replace(views, person=np.ascontiguousarray(person), reference=np.ascontiguousarray(reference),
                       labels={k: np.ascontiguousarray(v) for k, v in labels.items()},
                       flow=None if flow is None else np.ascontiguousarray(flow))


def _py_random(rng: np.random.Generator) -> random.Random:
    return random.Random(int(rng.integers(0, 2**62)))


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    writable = np.require(image, requirements=["C", "W"])  # torch wants writable memory
    return torch.from_numpy(writable).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """Binary [H, W] -> float32 [1, H, W] of 0/1."""
    return torch.from_numpy(mask != 0).float()[None]


def flow_to_tensor(flow: np.ndarray) -> torch.Tensor:
    """float [H, W, 2] -> float32 [2, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1).contiguous()


def contract_sample(person: np.ndarray, reference: np.ndarray, inpaint_mask: np.ndarray, densepose: torch.Tensor,
                    loss_region: np.ndarray, person_id: str, reference_id: str,
                    flow: np.ndarray | None = None) -> dict:
    """Build the contract dict (see ``contract.py``); ``agnostic = person * (1 - inpaint_mask)``."""
    person_t = image_to_tensor(person)
    mask_t = mask_to_tensor(inpaint_mask)
    sample = {
        "person": person_t,
        "reference": image_to_tensor(reference),
        "inpaint_mask": mask_t,
        "agnostic": person_t * (1.0 - mask_t),
        "densepose": densepose,
        "loss_region": mask_to_tensor(loss_region),
        "person_id": person_id,
        "reference_id": reference_id,
    }
    if flow is not None:
        sample["flow"] = flow_to_tensor(flow)
    return sample
