"""The model reproduces the authors' outputs (official-tiny fixture) and, on other architectures,
an independent implementation of the released formulation (2N-token self-attention, first N kept)."""

from copy import deepcopy

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor2_0

from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.reference_attention import ReferenceAttention
from leffa_pl.model.sampler import guided_noise


@pytest.fixture(scope="module")
def released(official_tiny):
    model = LeffaModel.from_checkpoint(official_tiny / "leffa_tiny.pth",
                                       official_tiny / "tiny-stable-diffusion-inpainting").eval()
    outputs = torch.load(official_tiny / "reference_outputs.pt", weights_only=True)
    return model, outputs


def test_reproduces_official_noise_prediction(released):
    model, ref = released
    with torch.no_grad():
        features = model.encode_reference(ref["ref_latent"], ref["timesteps"])
        noise = model.denoise(ref["unet_input"], ref["timesteps"], features)
    assert [tuple(f.shape) for f in features.values()] == [tuple(s) for s in ref["reference_feature_shapes"]]
    assert (noise - ref["noise_pred"]).abs().max() <= 1e-4


def test_reproduces_official_guided_prediction(released):
    model, ref = released
    with torch.no_grad():
        conditional = model.denoise(ref["unet_input"], ref["timesteps"],
                                    model.encode_reference(ref["ref_latent"], ref["timesteps"]))
        unconditional = model.denoise(ref["unet_input"], ref["timesteps"],
                                      model.encode_reference(torch.zeros_like(ref["ref_latent"]), ref["timesteps"]))
    guided = guided_noise(conditional, unconditional, ref["guidance_scale"], released_rescale=True)
    assert (guided - ref["cfg_noise_pred"]).abs().max() <= 1e-4
    plain = guided_noise(conditional, unconditional, ref["guidance_scale"], released_rescale=False)
    assert (plain - ref["cfg_noise_pred"]).abs().max() > 1e-2  # the quirk matters


def test_forward_equals_unet_input_concatenation(released):
    model, ref = released
    from leffa_pl.model.leffa_model import Conditioning
    conditioning = Conditioning(mask=ref["mask_latent"], masked_image=ref["masked_image_latent"],
                                densepose=ref["densepose_latent"], reference=ref["ref_latent"])
    with torch.no_grad():
        noise = model(ref["noisy_latent"], ref["timesteps"], conditioning)
    assert (noise - ref["noise_pred"]).abs().max() <= 1e-4


def concatenated_formulation(model: LeffaModel, unet_input, reference_latent, timesteps):
    """Independent implementation with stock diffusers processors and forward hooks: the reference
    UNet's norm1 outputs are captured in forward order; each generative self-attention is
    recomputed over [own ; reference] tokens (2N queries) and the first N outputs kept;
    cross-attention returns its input."""
    def plain_copy(unet):
        copy = deepcopy(unet)
        copy.set_attn_processor(AttnProcessor2_0())
        return copy.eval()

    reference, generative = plain_copy(model.unet_encoder), plain_copy(model.unet)
    captured, handles = [], []
    skip = lambda module, args, kwargs, output: args[0]  # noqa: E731
    for block in (m for m in reference.modules() if isinstance(m, BasicTransformerBlock)):
        handles.append(block.norm1.register_forward_hook(lambda m, a, out: captured.append(out)))
        handles.append(block.attn2.register_forward_hook(skip, with_kwargs=True))
    # stock cross-attention needs a context to run at all; its output is then replaced by its input
    context = torch.zeros(unet_input.shape[0], 1, model.unet.config.cross_attention_dim)
    reference(reference_latent, timesteps, encoder_hidden_states=context)

    position = iter(range(len(captured)))

    def joint_attention(module, args, kwargs, output):
        own = args[0]
        joint = torch.cat([own, captured[next(position)]], dim=1)
        return AttnProcessor2_0()(module, joint)[:, : own.shape[1]]

    for block in (m for m in generative.modules() if isinstance(m, BasicTransformerBlock)):
        handles.append(block.attn1.register_forward_hook(joint_attention, with_kwargs=True))
        handles.append(block.attn2.register_forward_hook(skip, with_kwargs=True))
    out = generative(unet_input, timesteps, encoder_hidden_states=context).sample
    for handle in handles:
        handle.remove()
    return out, len(captured)


ARCHITECTURES = {
    "sd15-like": dict(overrides={}, latent=(16, 12), features=16),
    "odd-width-deeper": dict(
        overrides=dict(block_out_channels=[16, 32, 32], layers_per_block=1, transformer_layers_per_block=2,
                       down_block_types=["CrossAttnDownBlock2D"] * 2 + ["DownBlock2D"],
                       up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 2, attention_head_dim=4),
        latent=(14, 11), features=2 * 1 * 2 + 2 + 2 * 2 * 2),
    "sdxl-like": dict(
        overrides=dict(block_out_channels=[16, 32, 64], layers_per_block=2, transformer_layers_per_block=[1, 1, 2],
                       down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                       up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                       attention_head_dim=[2, 4, 8], use_linear_projection=True, cross_attention_dim=48,
                       addition_embed_type="text_time", addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=48 + 6 * 8),
        latent=(12, 22), features=2 * 1 + 2 * 2 + 2 + 3 * 1 + 3 * 2),
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_matches_concatenated_formulation(name):
    spec = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = LeffaModel.tiny(**spec["overrides"]).eval()
    with torch.no_grad():  # random conv_in channels so that mask/DensePose inputs matter
        model.unet.conv_in.weight.normal_(0, 0.1)
    h, w = spec["latent"]
    unet_input, reference_latent = torch.randn(2, 12, h, w), torch.randn(2, 4, h, w)
    timesteps = torch.tensor([3, 801])
    with torch.no_grad():
        features = model.encode_reference(reference_latent, timesteps)
        ours = model.denoise(unet_input, timesteps, features)
        theirs, n_features = concatenated_formulation(model, unet_input, reference_latent, timesteps)
    assert len(features) == n_features == spec["features"]
    assert ours.shape == (2, 4, h, w)
    assert (ours - theirs).abs().max() <= 1e-5
    # the reference matters: another reference changes the output
    with torch.no_grad():
        other = model.denoise(unet_input, timesteps, model.encode_reference(-reference_latent, timesteps))
    assert (other - ours).abs().max() > 1e-4


def test_attention_records_only_when_requested():
    torch.manual_seed(0)
    model = LeffaModel.tiny().eval()
    x, ref, t = torch.randn(1, 12, 16, 12), torch.randn(1, 4, 16, 12), torch.tensor([10])
    with torch.no_grad():
        features = model.encode_reference(ref, t)
        records = []
        with_records = model.denoise(x, t, features, attention_records=records)
        without = model.denoise(x, t, features)
    assert torch.equal(with_records, without)
    assert [r.name for r in records] == list(features)
    first = records[0]
    assert first.query.shape == (1, 8, 16 * 12, 32 // 8) and first.key.shape == first.query.shape
    state = ReferenceAttention(features=features)
    assert state.records is None  # the default keeps nothing
