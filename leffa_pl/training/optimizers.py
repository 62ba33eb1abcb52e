"""The optimizer switch: AdamW (the paper) or bitsandbytes' 8-bit AdamW (CUDA only, never a silent fallback)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adamw", "adamw8bit")


def check_optimizer_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def build_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], device: torch.device, learning_rate: float,
                    betas: tuple[float, float], weight_decay: float) -> torch.optim.Optimizer:
    check_optimizer_name(name)
    parameters = list(parameters)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate, betas=betas, weight_decay=weight_decay)
    if device.type != "cuda":
        raise RuntimeError(f"optimizer 'adamw8bit' (bitsandbytes) runs on CUDA only, and this run is on "
                           f"{device.type}: set model.optimizer=adamw")
    try:
        import bitsandbytes
    except ImportError:
        raise RuntimeError("optimizer 'adamw8bit' needs bitsandbytes: pip install -e '.[gpu]'") from None
    return bitsandbytes.optim.AdamW8bit(parameters, lr=learning_rate, betas=betas, weight_decay=weight_decay)
