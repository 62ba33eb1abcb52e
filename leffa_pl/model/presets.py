"""Small model configs for tests and CPU demos, and the SD1.5 scheduler config.

The tiny UNet has the shape of SD1.5 inpainting scaled down: four levels with attention at
1/8, 1/16 and 1/32 of the image and a mid block at 1/64, two layers per block, 16 reference
features. Pass keyword overrides to get other architectures (SDXL-like depth, other heads).
"""

from __future__ import annotations

from typing import Any


def tiny_unet_config(**overrides: Any) -> dict[str, Any]:
    """A base *inpainting* UNet config (9 input channels) in diffusers' format."""
    config = {
        "in_channels": 9,
        "out_channels": 4,
        "block_out_channels": [32, 32, 64, 64],
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": 2,
        "attention_head_dim": 8,
        "cross_attention_dim": 32,
        "norm_num_groups": 8,
        "sample_size": 16,
    }
    config.update(overrides)
    return config


def tiny_vae_config(**overrides: Any) -> dict[str, Any]:
    """An AutoencoderKL config with SD's 8x downsampling and 4 latent channels."""
    config = {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": [16, 32, 32, 32],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 128,
        "scaling_factor": 0.18215,
    }
    config.update(overrides)
    return config


def sd15_scheduler_config(**overrides: Any) -> dict[str, Any]:
    """The DDPMScheduler config shipped with SD1.5 inpainting (epsilon, leading spacing)."""
    config = {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "rescale_betas_zero_snr": False,
    }
    config.update(overrides)
    return config
