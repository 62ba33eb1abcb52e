"""Sampling (try-on and pose transfer) on diffusers schedulers, seeded by one ``torch.Generator``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import kornia
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, SchedulerMixin
from diffusers.guiders.guider_utils import rescale_noise_cfg
from diffusers.utils.torch_utils import randn_tensor

from leffa_pl.model.leffa_model import Conditioning, LeffaModel

SCHEDULERS = ("ddpm", "ddim", "dpmsolver++")


def build_scheduler(name: str, scheduler_config: Mapping) -> SchedulerMixin:
    """A sampling scheduler sharing the model's noise schedule ("ddpm" is what the authors released)."""
    if name == "ddpm":
        return DDPMScheduler.from_config(scheduler_config)
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++")
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


def guided_noise(conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float,
                 released_rescale: bool) -> torch.Tensor:
    """Classifier-free guidance. ``released_rescale`` reproduces the released pipeline, which
    always rescales with ``guidance_rescale = guidance_scale``."""
    guided = unconditional + guidance_scale * (conditional - unconditional)
    if released_rescale:
        guided = rescale_noise_cfg(guided, conditional, guidance_rescale=guidance_scale)
    return guided


def repaint(person: torch.Tensor, generated: torch.Tensor, inpaint_mask: torch.Tensor) -> torch.Tensor:
    """Keep the person outside a Gaussian-softened mask (kernel h // 100 made odd, as released)."""
    kernel = (person.shape[-2] // 100) | 1
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a given kernel size
    soft = kornia.filters.gaussian_blur2d(inpaint_mask, (kernel, kernel), (sigma, sigma)) if kernel > 1 \
        else inpaint_mask
    return person * (1 - soft) + generated * soft


@dataclass
class SamplerSettings:
    """Sampling options. Defaults are the released inference settings."""

    scheduler: str = "ddpm"
    num_inference_steps: int = 50
    guidance_scale: float = 2.5
    released_rescale: bool = True  # the released pipeline's rescale quirk: keep on to match released outputs
    reference_acceleration: bool = False  # run the reference UNet once, at timesteps[steps // 2]
    repaint: bool = False  # try-on only

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose one of {SCHEDULERS}")
        if isinstance(self.num_inference_steps, bool) or not isinstance(self.num_inference_steps, int) \
                or self.num_inference_steps < 1:
            raise ValueError(f"steps (num_inference_steps) must be an integer >= 1, got {self.num_inference_steps!r}")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise ValueError(f"guidance scale must be a finite number >= 0, got {self.guidance_scale!r}")


class LeffaSampler:
    """Generates images for batches of the data contract."""

    def __init__(self, model: LeffaModel, settings: SamplerSettings | None = None):
        self.model = model
        self.settings = settings or SamplerSettings()
        self.scheduler = build_scheduler(self.settings.scheduler, model.scheduler_config)

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Images in [-1, 1], [B, 3, H, W]. ``generator`` drives ALL randomness (VAE posterior
        samples, initial noise, scheduler noise), so a seed reproduces an image."""
        settings, model = self.settings, self.model
        device, dtype = model.unet.conv_in.weight.device, model.unet.conv_in.weight.dtype
        inputs = {k: batch[k].to(device) for k in ("agnostic", "inpaint_mask", "densepose", "reference")}
        conditioning = model.encode_conditioning(**inputs, generator=generator)
        latents = randn_tensor(conditioning.masked_image.shape, generator=generator, device=device, dtype=dtype)
        scheduler = self.scheduler
        scheduler.set_timesteps(settings.num_inference_steps, device=device)
        latents = latents * scheduler.init_noise_sigma

        guided = settings.guidance_scale > 1.0
        conditioning = _cast(_with_unconditional(conditioning) if guided else conditioning, dtype)
        batch_size = conditioning.reference.shape[0]
        features = None
        if settings.reference_acceleration:
            middle = scheduler.timesteps[len(scheduler.timesteps) // 2]
            features = model.encode_reference(conditioning.reference, middle.expand(batch_size))

        for t in scheduler.timesteps:
            latent_input = torch.cat([latents, latents]) if guided else latents
            latent_input = scheduler.scale_model_input(latent_input, t)
            noise = model(latent_input, t.expand(batch_size), conditioning, reference_features=features)
            if guided:
                conditional, unconditional = noise.chunk(2)
                noise = guided_noise(conditional, unconditional, settings.guidance_scale, settings.released_rescale)
            latents = scheduler.step(noise, t, latents, generator=generator).prev_sample

        images = model.decode_latent(latents).float()
        if settings.repaint:
            images = repaint(batch["person"].to(device).float(), images, batch["inpaint_mask"].to(device).float())
        return images


def _with_unconditional(conditioning: Conditioning) -> Conditioning:
    """Conditional half first, then the unconditional half (zero reference latent, rest shared)."""
    return Conditioning(
        mask=torch.cat([conditioning.mask] * 2),
        masked_image=torch.cat([conditioning.masked_image] * 2),
        densepose=torch.cat([conditioning.densepose] * 2),
        reference=torch.cat([conditioning.reference, torch.zeros_like(conditioning.reference)]),
    )


def _cast(conditioning: Conditioning, dtype: torch.dtype) -> Conditioning:
    return Conditioning(**{k: v.to(dtype) for k, v in vars(conditioning).items()})
