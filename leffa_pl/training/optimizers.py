"""The optimizer switch: AdamW (the paper) or bitsandbytes' 8-bit AdamW (CUDA only, never a silent fallback)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adamw", "adamw8bit")
# Adam's epsilon when model.optimizer_eps is not given. AdamW: torch's default, the paper's. 8-bit AdamW: 1e-4, the
# fix reported for its NaN losses after ~2k steps of SDXL try-on training at 1e-8 (yisol/IDM-VTON #93, #142). A
# larger epsilon bounds the update of parameters whose second moment rounds to ~0 in 8 bits; it also damps the
# update of every element whose RMS gradient is below ~1e-4.
DEFAULT_EPS = {"adamw": 1e-8, "adamw8bit": 1e-4}


def check_optimizer_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def build_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], device: torch.device, learning_rate: float,
                    betas: tuple[float, float], weight_decay: float, eps: float | None = None) -> torch.optim.Optimizer:
    """``eps`` None: ``DEFAULT_EPS`` of the optimizer."""
    check_optimizer_name(name)
    parameters = list(parameters)
    eps = DEFAULT_EPS[name] if eps is None else eps
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate, betas=betas, weight_decay=weight_decay, eps=eps)
    if device.type != "cuda":
        raise RuntimeError(f"optimizer 'adamw8bit' (bitsandbytes) runs on CUDA only, and this run is on "
                           f"{device.type}: set model.optimizer=adamw")
    try:
        import bitsandbytes
    except ImportError:
        raise RuntimeError("optimizer 'adamw8bit' needs bitsandbytes: pip install -e '.[gpu]'") from None
    return bitsandbytes.optim.AdamW8bit(parameters, lr=learning_rate, betas=betas, weight_decay=weight_decay, eps=eps)
