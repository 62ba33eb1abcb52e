"""The Leffa dual-UNet model: frozen VAE, reference UNet, generative UNet (pure PyTorch + diffusers).

State-dict layout is that of the released checkpoints: ``vae.``, ``unet_encoder.`` (reference
UNet) and ``unet.`` (generative UNet), in that order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from leffa_pl.model.checkpoint import CheckpointError, check_state_dict, read_state_dict, write_state_dict
from leffa_pl.model.presets import sd15_scheduler_config, tiny_unet_config, tiny_vae_config
from leffa_pl.model.reference_attention import RecordSink, ReferenceAttention, install_reference_processors

GENERATIVE_IN_CHANNELS = 12  # noisy latent 4 | mask 1 | masked-image latent 4 | DensePose 3
REFERENCE_IN_CHANNELS = 4
INPAINTING_IN_CHANNELS = 9


@dataclass
class Conditioning:
    """Latent-space inputs of the generative UNet besides the noisy latent, and the reference latent."""

    mask: torch.Tensor  # [B, 1, h, w]
    masked_image: torch.Tensor  # [B, 4, h, w]
    densepose: torch.Tensor  # [B, 3, h, w]
    reference: torch.Tensor  # [B, 4, h, w]


def _resize_conv_in(unet: UNet2DConditionModel, in_channels: int) -> None:
    """Grow (zero-init new channels) or shrink (keep the first ones) ``conv_in``; the bias is kept."""
    old = unet.conv_in
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        kept = min(in_channels, old.in_channels)
        new.weight[:, :kept] = old.weight[:, :kept]
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)


def _prepare_unet(unet: UNet2DConditionModel, in_channels: int, role: str) -> UNet2DConditionModel:
    if unet.config.in_channels != in_channels:
        if unet.config.in_channels != INPAINTING_IN_CHANNELS:
            raise ValueError(f"expected an inpainting UNet ({INPAINTING_IN_CHANNELS} input channels) "
                             f"or a Leffa UNet ({in_channels}), got {unet.config.in_channels}")
        _resize_conv_in(unet, in_channels)
    # Only the time embedding conditions Leffa; SDXL's add_embedding weights stay but are unused.
    unet.register_to_config(addition_embed_type=None)
    install_reference_processors(unet, role)
    return unet


class LeffaModel(nn.Module):
    """Frozen VAE + reference UNet + generative UNet, wired by reference attention."""

    def __init__(self, vae: AutoencoderKL, unet_encoder: UNet2DConditionModel, unet: UNet2DConditionModel,
                 scheduler_config: dict[str, Any] | None = None):
        super().__init__()
        self.vae = vae
        self.unet_encoder = _prepare_unet(unet_encoder, REFERENCE_IN_CHANNELS, "reference")
        self.unet = _prepare_unet(unet, GENERATIVE_IN_CHANNELS, "generative")
        self.vae.requires_grad_(False)
        self.unet_memory_format = torch.contiguous_format  # use_channels_last
        # The noise schedule is part of the model's definition (SDXL's zero-terminal-SNR betas etc.).
        self.scheduler_config = dict(scheduler_config or sd15_scheduler_config())

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_configs(cls, unet_config: dict[str, Any], vae_config: dict[str, Any],
                     scheduler_config: dict[str, Any] | None = None) -> "LeffaModel":
        """Randomly initialised model from a base (inpainting) UNet config and a VAE config."""
        unet = UNet2DConditionModel.from_config(unet_config)
        unet_encoder = UNet2DConditionModel.from_config(unet_config)
        unet_encoder.load_state_dict(unet.state_dict())
        return cls(AutoencoderKL.from_config(vae_config), unet_encoder, unet, scheduler_config)

    @classmethod
    def tiny(cls, **unet_overrides: Any) -> "LeffaModel":
        """The small model for tests and CPU demos (see ``presets``)."""
        return cls.from_configs(tiny_unet_config(**unet_overrides), tiny_vae_config())

    @classmethod
    def from_base_model(cls, folder: str | os.PathLike) -> "LeffaModel":
        """Start training from an SD inpainting model in diffusers layout (unet/, vae/, scheduler/)."""
        folder = _check_base_model_folder(folder)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet")
        unet_encoder = UNet2DConditionModel.from_pretrained(folder / "unet")
        vae = AutoencoderKL.from_pretrained(folder / "vae")
        return cls(vae, unet_encoder, unet, _read_json(folder / "scheduler" / "scheduler_config.json"))

    @classmethod
    def from_base_model_configs(cls, folder: str | os.PathLike) -> "LeffaModel":
        """Random weights in the architecture of a base model folder (its configs only; build it on the meta device
        for the architecture alone)."""
        folder = _check_base_model_folder(folder)
        return cls.from_configs(_read_json(folder / "unet" / "config.json"), _read_json(folder / "vae" / "config.json"),
                                _read_json(folder / "scheduler" / "scheduler_config.json"))

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, base_model: str | os.PathLike) -> "LeffaModel":
        """A released (or exported) Leffa checkpoint, architecture from the base model folder's configs."""
        state = read_state_dict(checkpoint)
        with torch.device("meta"):  # weights come from the checkpoint: skip random init
            model = cls.from_base_model_configs(base_model)
        check_state_dict(checkpoint, state, model.state_dict())
        model.load_state_dict(state, strict=True, assign=True)
        return model

    def load_checkpoint(self, checkpoint: str | os.PathLike) -> None:
        """Load a Leffa checkpoint into this model (strict; errors name the file)."""
        state = read_state_dict(checkpoint)
        check_state_dict(checkpoint, state, self.state_dict())
        self.load_state_dict(state, strict=True)

    def export(self, path: str | os.PathLike) -> Path:
        """Write the released layout: ``.pth`` (weights-only pickle) or ``.safetensors``."""
        return write_state_dict(self.state_dict(), path)

    def use_channels_last(self) -> None:
        """Both UNets' weights, and the inputs ``forward`` feeds them, in channels-last memory format (the VAE
        stays as it is). State-dict keys and values are unchanged; exports are written contiguous."""
        self.unet_memory_format = torch.channels_last
        self.unet.to(memory_format=torch.channels_last)
        self.unet_encoder.to(memory_format=torch.channels_last)

    # ---------------------------------------------------------------------------------- compute
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode_image(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image in [-1, 1] -> scaled latent, sampled from the VAE posterior with ``generator``."""
        vae_dtype = next(self.vae.parameters()).dtype
        latent = self.vae.encode(image.to(vae_dtype)).latent_dist.sample(generator)
        shift = self.vae.config.shift_factor or 0.0
        return (latent - shift) * self.vae.config.scaling_factor

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        vae_dtype = next(self.vae.parameters()).dtype
        shift = self.vae.config.shift_factor or 0.0
        latent = latent.to(vae_dtype) / self.vae.config.scaling_factor + shift
        return self.vae.decode(latent).sample.clamp(-1, 1)

    def encode_conditioning(self, agnostic: torch.Tensor, inpaint_mask: torch.Tensor, densepose: torch.Tensor,
                            reference: torch.Tensor, generator: torch.Generator | None = None) -> Conditioning:
        """Batch tensors of the data contract -> latent conditioning (VAE under no_grad)."""
        with torch.no_grad():
            masked_image = self.encode_image(agnostic, generator)
            reference_latent = self.encode_image(reference, generator)
        size = masked_image.shape[-2:]
        return Conditioning(
            mask=F.interpolate(inpaint_mask, size=size, mode="nearest").to(masked_image.dtype),
            masked_image=masked_image,
            densepose=F.interpolate(densepose, size=size, mode="nearest").to(masked_image.dtype),
            reference=reference_latent,
        )

    def encode_reference(self, reference_latent: torch.Tensor, timesteps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the reference UNet; returns its self-attention inputs by layer name, in forward order."""
        state = ReferenceAttention()
        reference_latent = reference_latent.contiguous(memory_format=self.unet_memory_format)
        self.unet_encoder(reference_latent, timesteps, encoder_hidden_states=None,
                          cross_attention_kwargs={"reference": state})
        return state.features

    def forward(self, noisy_latent: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning,
                reference_features: dict[str, torch.Tensor] | None = None,
                attention_records: RecordSink | None = None) -> torch.Tensor:
        """Predict the noise. ``reference_features`` may be reused (reference acceleration);
        ``attention_records`` (a list, or a ``LeffaScorer``) receives per-layer queries/keys for the Leffa loss."""
        if reference_features is None:
            reference_features = self.encode_reference(conditioning.reference, timesteps)
        unet_input = torch.cat([noisy_latent, conditioning.mask, conditioning.masked_image,
                                conditioning.densepose], dim=1)
        return self.denoise(unet_input, timesteps, reference_features, attention_records)

    def denoise(self, unet_input: torch.Tensor, timesteps: torch.Tensor, reference_features: dict[str, torch.Tensor],
                attention_records: RecordSink | None = None) -> torch.Tensor:
        """The generative UNet on its 12-channel input, attending to ``reference_features``."""
        state = ReferenceAttention(features=reference_features, records=attention_records)
        unet_input = unet_input.contiguous(memory_format=self.unet_memory_format)
        return self.unet(unet_input, timesteps, encoder_hidden_states=None,
                         cross_attention_kwargs={"reference": state}).sample


def _check_base_model_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    required = [folder / "unet" / "config.json", folder / "vae" / "config.json",
                folder / "scheduler" / "scheduler_config.json"]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise CheckpointError(f"{folder}: not a base-model folder in diffusers layout; missing {missing}")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable config: {error}") from None
