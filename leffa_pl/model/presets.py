"""Small model configs for tests and CPU demos; the SD1.5 and SDXL inpainting UNet, VAE and scheduler configs.

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


def sd15_inpainting_unet_config(**overrides: Any) -> dict[str, Any]:
    """The UNet config of SD1.5 inpainting (``unet/config.json``, 9 input channels): the architecture of the
    released try-on checkpoints, for building it without weights (benchmarks, from-scratch training)."""
    config = {
        "in_channels": 9,
        "out_channels": 4,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": 2,
        "attention_head_dim": 8,
        "cross_attention_dim": 768,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "center_input_sample": False,
        "sample_size": 64,
    }
    config.update(overrides)
    return config


def sd15_vae_config(**overrides: Any) -> dict[str, Any]:
    """The VAE config of SD1.5 (``vae/config.json``)."""
    config = {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }
    config.update(overrides)
    return config


def sdxl_inpainting_unet_config(**overrides: Any) -> dict[str, Any]:
    """The UNet config of SDXL inpainting 0.1 (9 input channels): the architecture of the released
    pose-transfer checkpoint (2 x 2.57B UNet parameters), for building it without weights."""
    config = sd15_inpainting_unet_config(
        block_out_channels=[320, 640, 1280],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        transformer_layers_per_block=[1, 2, 10],
        attention_head_dim=[5, 10, 20],
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        sample_size=128,
    )
    config.update(overrides)
    return config


def sdxl_vae_config(**overrides: Any) -> dict[str, Any]:
    """The VAE config of SDXL: SD1.5's architecture with its own latent scale."""
    return sd15_vae_config(scaling_factor=0.13025, sample_size=1024, force_upcast=True) | overrides


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
