"""The trainable set is exactly what the training loss reaches (tiny, SD1.5-like and SDXL-like), narrowed by choice."""

import pytest
import torch
import torch.nn.functional as F

from leffa_pl.losses.leffa_loss import LeffaLoss
from leffa_pl.model.leffa_model import Conditioning, LeffaModel
from leffa_pl.model.presets import sd15_inpainting_unet_config, sd15_vae_config
from leffa_pl.training.trainable import select_trainable

# Same block structure as the released architectures, tiny widths ("tiny" is SD1.5's layout at width 32;
# "sd15-like" adds SD1.5's per-block head dim and norm settings; "sdxl-like": 3 levels, no attention at the
# first, transformer depth growing with depth, linear projections, an unused add_embedding).
ARCHITECTURES = {
    "tiny": {},
    "sd15-like": dict(attention_head_dim=8, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0),
    "sdxl-like": dict(block_out_channels=[16, 32, 64], layers_per_block=2, transformer_layers_per_block=[1, 2, 3],
                      down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                      up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                      attention_head_dim=[2, 4, 8], use_linear_projection=True, cross_attention_dim=48,
                      addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=48 + 6 * 8),
}


def _names_with_gradient_after_a_real_step(model: LeffaModel) -> set[str]:
    """MSE + Leffa loss (every sample active) on random inputs, real CPU backward; all UNet weights trainable."""
    for unet in (model.unet, model.unet_encoder):
        unet.requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 48, generator=generator) * 2 - 1
    latent = torch.randn(2, 4, 8, 6, generator=generator)
    conditioning = Conditioning(mask=torch.ones(2, 1, 8, 6), masked_image=torch.randn(2, 4, 8, 6),
                                densepose=torch.randn(2, 3, 8, 6), reference=torch.randn(2, 4, 8, 6))
    timesteps = torch.tensor([10, 400])
    records = []
    prediction = model(latent, timesteps, conditioning, attention_records=records)
    leffa = LeffaLoss(theta_timestep=1000, weight=1.0)(records, image, image.flip(-1), torch.ones(2, 1, 64, 48),
                                                       timesteps)
    (F.mse_loss(prediction, torch.randn_like(prediction)) + leffa.loss).backward()
    return {name for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_trainable_set_equals_the_parameters_that_get_a_gradient(name):
    torch.manual_seed(0)
    model = LeffaModel.tiny(**ARCHITECTURES[name])
    summary = select_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _names_with_gradient_after_a_real_step(model)
    assert summary.trainable["unet"] + summary.trainable["unet_encoder"] == sum(
        model.get_parameter(n).numel() for n in trainable)
    frozen = {n for n, _ in model.named_parameters() if n not in trainable and not n.startswith("vae.")}
    # The generative UNet loses only cross-attention (and SDXL's unused add_embedding).
    assert all(".attn2." in n or n.startswith("unet.add_embedding.") for n in frozen if n.startswith("unet."))
    assert {"unet_encoder.conv_out.weight", "unet_encoder.conv_norm_out.weight"} <= frozen  # the reference tail
    assert "unet_encoder.time_embedding.linear_1.weight" in trainable and "unet.conv_out.weight" in trainable
    if name == "sdxl-like":
        assert "unet.add_embedding.linear_1.weight" in frozen


def test_released_sd15_architecture_on_the_meta_device():
    with torch.device("meta"):
        model = LeffaModel.from_configs(sd15_inpainting_unet_config(), sd15_vae_config())
    summary = select_trainable(model)
    attn2 = {child: sum(p.numel() for n, p in model.get_submodule(child).named_parameters() if ".attn2." in n)
             for child in ("unet", "unet_encoder")}
    assert summary.unreached["unet"] == attn2["unet"]  # the generative UNet loses only cross-attention
    assert summary.unreached["unet_encoder"] > attn2["unet_encoder"]  # plus the reference UNet's tail
    assert summary.trainable["vae"] == 0


@pytest.mark.parametrize("choice", ["generative", "self_attention"])
def test_trainable_choices_narrow_the_set(choice):
    model = LeffaModel.tiny()
    select_trainable(model)
    reached = {n for n, p in model.named_parameters() if p.requires_grad}
    select_trainable(model, choice)  # a second selection starts again from the full reached set
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable < reached
    if choice == "generative":
        assert trainable == {n for n in reached if n.startswith("unet.")}
    else:
        assert all(".attn1.to_" in n for n in trainable)
        assert any(n.startswith("unet_encoder.") for n in trainable) and any(n.startswith("unet.") for n in trainable)


def test_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="trainable must be one of"):
        select_trainable(LeffaModel.tiny(), "everything")
