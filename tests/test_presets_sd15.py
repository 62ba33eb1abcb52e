"""The SD1.5 inpainting presets build the architecture of the released try-on checkpoints (no weights)."""

import torch

from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.presets import sd15_inpainting_unet_config, sd15_vae_config


def test_sd15_presets_give_the_released_try_on_architecture():
    with torch.device("meta"):  # shapes only: no memory, no random init
        model = LeffaModel.from_configs(sd15_inpainting_unet_config(), sd15_vae_config())
    state = model.state_dict()
    assert state["unet.conv_in.weight"].shape == (320, 12, 3, 3)
    assert state["unet_encoder.conv_in.weight"].shape == (320, 4, 3, 3)
    assert sum(p.numel() for p in model.vae.parameters()) == 83_653_863  # SD1.5's VAE
    # SD1.5 inpainting's UNet has 859,535,364 parameters with 9 input channels; Leffa's gets 3 more.
    assert sum(p.numel() for p in model.unet.parameters()) == 859_535_364 + 3 * 320 * 9
    self_attention = [name for name in model.unet.attn_processors if name.endswith("attn1.processor")]
    assert len(self_attention) == 16  # the 16 reference features of SD1.5
