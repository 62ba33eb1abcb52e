"""Which parameters train: the ones the training loss reaches, narrowed by a user choice.

Cross-attention (no text) of both UNets, the reference UNet's layers after its last recorded
self-attention input, and SDXL's unused ``add_embedding`` never get a gradient. They are found from
the autograd graph of one training forward pass run on the meta device (the model's own modules
with meta stand-ins for its weights: no memory, no compute), not from a hand list, and frozen, so
that every config trains under plain DDP (no ``find_unused_parameters`` graph search per step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import torch
from torch.func import functional_call

from leffa_pl.model.leffa_model import GENERATIVE_IN_CHANNELS, Conditioning, LeffaModel
from leffa_pl.model.lora import LoraSettings, add_lora, base_name, is_lora_parameter

TrainableChoice = Literal["both", "generative", "self_attention", "lora"]
TRAINABLE_CHOICES: tuple[str, ...] = ("both", "generative", "self_attention", "lora")
# Self-attention projections: what reads the reference (attn1 of every transformer block).
_SELF_ATTENTION_PROJECTIONS = (".attn1.to_q.", ".attn1.to_k.", ".attn1.to_v.", ".attn1.to_out.")


@dataclass(frozen=True)
class LossReach:
    """What the denoising loss's gradient reaches: parameter names, and names of the modules whose output it reaches."""

    parameters: frozenset[str]
    module_outputs: frozenset[str]


_REACHED_BY_ARCHITECTURE: dict[str, LossReach] = {}


def parameters_reached_by_the_loss(model: LeffaModel) -> frozenset[str]:
    """Names of the UNet parameters that get a gradient from the denoising loss.

    One forward + backward pass on the meta device over the model's own modules. The Leffa loss reaches
    nothing more: its gradient flows through the generative self-attention queries and the reference
    features, both already on the denoising path (tests check it with a real backward pass). Meta kernels
    run in Python (seconds for a UNet pair), so the answer is cached per architecture (the UNet configs).
    """
    return loss_reach(model).parameters


def loss_reach(model: LeffaModel) -> LossReach:
    """Parameters and module outputs the denoising loss reaches (the same cached meta pass)."""
    key = json.dumps([dict(model.unet.config), dict(model.unet_encoder.config)], sort_keys=True, default=str)
    if key not in _REACHED_BY_ARCHITECTURE:
        _REACHED_BY_ARCHITECTURE[key] = _meta_backward(model)
    return _REACHED_BY_ARCHITECTURE[key]


def _meta_backward(model: LeffaModel, latent_size: tuple[int, int] = (16, 16)) -> LossReach:
    # 16x16 latents divide by the total downsampling of SD1.5 (8) and SDXL (4).
    meta = {name: torch.empty_like(p, device="meta").requires_grad_() for name, p in model.named_parameters()}
    meta |= {name: torch.empty_like(b, device="meta") for name, b in model.named_buffers()}
    batch = 1
    latent = torch.empty(batch, 4, *latent_size, device="meta")
    timesteps = torch.zeros(batch, dtype=torch.long, device="meta")
    conditioning = _meta_conditioning(batch, latent_size)
    checkpointing = [unet.is_gradient_checkpointing for unet in (model.unet, model.unet_encoder)]
    for unet in (model.unet, model.unet_encoder):  # the graph is the same; checkpointing would hide it
        unet.disable_gradient_checkpointing()
    outputs_reached: set[str] = set()

    def watch_output(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad: outputs_reached.add(name))
        return hook

    hooks = [module.register_forward_hook(watch_output(name)) for name, module in model.named_modules() if name]
    try:
        out = functional_call(model, meta, (latent, timesteps, conditioning), strict=True)
        out.sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
        for unet, enabled in zip((model.unet, model.unet_encoder), checkpointing):
            if enabled:
                unet.enable_gradient_checkpointing()
    return LossReach(frozenset(name for name, p in meta.items() if p.grad is not None), frozenset(outputs_reached))


def _meta_conditioning(batch: int, latent_size: tuple[int, int]) -> Conditioning:
    def empty(channels: int) -> torch.Tensor:
        return torch.empty(batch, channels, *latent_size, device="meta")

    densepose = GENERATIVE_IN_CHANNELS - 4 - 1 - 4
    return Conditioning(mask=empty(1), masked_image=empty(4), densepose=empty(densepose), reference=empty(4))


def is_selected(name: str, trainable: TrainableChoice) -> bool:
    """Whether the user's choice includes parameter ``name`` (before removing the unreached ones)."""
    if name.startswith("vae."):
        return False
    if trainable == "both":
        return True
    if trainable == "generative":
        return name.startswith("unet.")
    if trainable == "self_attention":
        return any(part in name for part in _SELF_ATTENTION_PROJECTIONS)
    if trainable == "lora":
        return is_lora_parameter(name)
    raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {trainable!r}")


@dataclass(frozen=True)
class TrainableSummary:
    """Parameter counts per child of the model: total, trainable, and frozen because the loss never reaches them."""

    total: dict[str, int]
    trainable: dict[str, int]
    unreached: dict[str, int]

    def __str__(self) -> str:
        rows = [f"{child}: {self.trainable[child]:,} of {self.total[child]:,} trainable "
                f"({self.unreached[child]:,} never reached by the loss)" for child in self.total]
        return f"trainable parameters: {sum(self.trainable.values()):,}; " + "; ".join(rows)


def select_trainable(model: LeffaModel, trainable: TrainableChoice = "both",
                     lora: LoraSettings | None = None) -> TrainableSummary:
    """Freeze every parameter the loss does not reach or the choice excludes; the rest require grad. ``lora``:
    adapters added first (``trainable="lora"``: its settings, default ``LoraSettings()``), on reached layers only."""
    if trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {trainable!r}")
    if lora is not None and trainable != "lora":
        raise ValueError(f"model.lora is set but model.trainable is {trainable!r}: set model.trainable=lora")
    reached = parameters_reached_by_the_loss(model)  # names of the plain model (cached per architecture)
    if trainable == "lora":
        add_lora(model, lora or LoraSettings(), reached)
    total, counts, unreached = {}, {}, {}
    for name, parameter in model.named_parameters():
        child = name.split(".", 1)[0]
        is_reached = is_lora_parameter(name) or base_name(name) in reached  # adapters sit on reached layers
        parameter.requires_grad_(is_reached and is_selected(name, trainable))
        total[child] = total.get(child, 0) + parameter.numel()
        counts[child] = counts.get(child, 0) + (parameter.numel() if parameter.requires_grad else 0)
        never = child != "vae" and not is_reached
        unreached[child] = unreached.get(child, 0) + (parameter.numel() if never else 0)
    return TrainableSummary(total, counts, unreached)
