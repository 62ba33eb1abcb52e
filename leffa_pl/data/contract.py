"""The one sample/batch contract shared by every data module (VITON-HD, DressCode, DeepFashion).

A sample is a plain ``dict`` with exactly these keys; the default collate turns it into a batch
with a leading batch dimension (tensors) or lists (strings). Training, prediction and evaluation
read only these keys, so a new dataset plugs in by producing them.

| key             | sample shape / type | values                                                        |
|-----------------|---------------------|---------------------------------------------------------------|
| ``person``      | float [3, H, W]     | source = target image in [-1, 1] (try-on: the person; pose:   |
|                 |                     | the person in the target pose)                                |
| ``reference``   | float [3, H, W]     | garment image (try-on) or the person in another pose, [-1, 1] |
| ``inpaint_mask``| float [1, H, W]     | binary, 1 = repaint (pose transfer: all ones)                 |
| ``agnostic``    | float [3, H, W]     | ``person * (1 - inpaint_mask)``: repainted pixels are 0       |
| ``densepose``   | float [3, H, W]     | DensePose map of ``person`` as the released models expect,    |
|                 |                     | in [-1, 1]                                                    |
| ``loss_region`` | float [1, H, W]     | binary region the reference should explain (Leffa loss M)     |
| ``person_id``   | str                 | file name of the person/target image                          |
| ``reference_id``| str                 | file name of the garment/reference image                      |

Optional, only where the data ships it (the synthetic data):

| ``flow``        | float [2, H, W]     | ground-truth flow person -> reference in grid_sample          |
|                 |                     | coordinates (x, y in [-1, 1]); NaN where undefined            |
"""

from __future__ import annotations

from typing import Mapping

import torch

IMAGE_KEYS = ("person", "reference", "agnostic", "densepose")
MASK_KEYS = ("inpaint_mask", "loss_region")
ID_KEYS = ("person_id", "reference_id")
REQUIRED_KEYS = IMAGE_KEYS + MASK_KEYS + ID_KEYS
OPTIONAL_KEYS = ("flow",)


class ContractError(ValueError):
    """A sample or batch that does not follow the contract above."""


def check_sample(sample: Mapping, where: str = "sample") -> None:
    """Raise ``ContractError`` naming ``where`` and the offending key if ``sample`` breaks the contract."""
    missing = [k for k in REQUIRED_KEYS if k not in sample]
    extra = [k for k in sample if k not in REQUIRED_KEYS + OPTIONAL_KEYS]
    if missing or extra:
        raise ContractError(f"{where}: missing keys {missing}, unexpected keys {extra}")
    height, width = sample["person"].shape[-2:]
    for key in IMAGE_KEYS + MASK_KEYS + tuple(k for k in OPTIONAL_KEYS if k in sample):
        value = sample[key]
        channels = {"inpaint_mask": 1, "loss_region": 1, "flow": 2}.get(key, 3)
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float32:
            raise ContractError(f"{where}: '{key}' must be a float32 tensor, got {type(value).__name__} "
                                f"{getattr(value, 'dtype', '')}")
        if tuple(value.shape) != (channels, height, width):
            raise ContractError(f"{where}: '{key}' has shape {tuple(value.shape)}, "
                                f"expected {(channels, height, width)}")
    for key in IMAGE_KEYS:
        low, high = sample[key].min().item(), sample[key].max().item()
        if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
            raise ContractError(f"{where}: '{key}' values in [{low:.3f}, {high:.3f}], expected [-1, 1]")
    for key in MASK_KEYS:
        if not torch.all((sample[key] == 0) | (sample[key] == 1)):
            raise ContractError(f"{where}: '{key}' must be binary (0 or 1)")
    for key in ID_KEYS:
        if not isinstance(sample[key], str):
            raise ContractError(f"{where}: '{key}' must be a str, got {type(sample[key]).__name__}")
