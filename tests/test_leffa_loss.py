"""The Leffa loss: the published formula, a known attention shift recovered in the warp, the timestep
gate, layer selection, and gradients reaching both UNets of the tiny model."""

import pytest
import torch
import torch.nn.functional as F

from leffa_pl.losses.leffa_loss import LeffaLoss
from leffa_pl.model.leffa_model import Conditioning, LeffaModel
from leffa_pl.model.reference_attention import AttentionRecord


def token_coordinates(h, w, dtype=torch.float32):
    """(x, y) of each token of an h x w grid in row-major order, x and y from linspace(-1, 1)."""
    xs, ys = torch.linspace(-1, 1, w, dtype=dtype), torch.linspace(-1, 1, h, dtype=dtype)
    return torch.stack([xs.repeat(h), ys.repeat_interleave(w)], dim=-1)


def random_records(grids, batch=2, heads=2, head_dim=8, seed=0, requires_grad=False, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    records = []
    for index, (h, w) in enumerate(grids):
        query, key = (2 * torch.randn(batch, heads, h * w, head_dim, generator=generator, dtype=dtype)
                      for _ in range(2))
        records.append(AttentionRecord(f"layer{index}", query.requires_grad_(requires_grad),
                                       key.requires_grad_(requires_grad), head_dim ** -0.5))
    return records


def random_images(batch, size, seed=1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    reference = torch.rand(batch, 3, *size, generator=generator, dtype=dtype) * 2 - 1
    target = torch.rand(batch, 3, *size, generator=generator, dtype=dtype) * 2 - 1
    region = (torch.rand(batch, 1, *size, generator=generator, dtype=dtype) > 0.5).to(dtype)
    return reference, target, region


def formula_loss(records, grids, reference, target, region, timesteps, tau=2.0, weight=1e-3,
                 distance="smooth_l1"):
    """The loss section of the reference document, written out directly in float64."""
    size = target.shape[-2:]
    per_layer = []
    for record, (h, w) in zip(records, grids):
        logits = record.query.double() @ record.key.double().transpose(-1, -2) * record.scale / tau
        flow = torch.softmax(logits, dim=-1).mean(1) @ token_coordinates(h, w, dtype=torch.float64)
        flow = F.interpolate(flow.reshape(-1, h, w, 2).permute(0, 3, 1, 2), size=size, mode="bilinear")
        warped = F.grid_sample(reference.double(), flow.permute(0, 2, 3, 1).clamp(-1, 1), align_corners=False)
        difference = warped * region - target.double() * region
        if distance == "l2":
            elementwise = difference ** 2
        else:
            elementwise = torch.where(difference.abs() < 1, 0.5 * difference ** 2, difference.abs() - 0.5)
        per_layer.append(elementwise.mean(dim=(1, 2, 3)))
    per_sample = torch.stack(per_layer).mean(0) * (timesteps < 500)
    return weight * per_sample.mean()


@pytest.mark.parametrize("distance", ["smooth_l1", "l2"])
def test_loss_is_the_published_formula(distance):
    grids = [(8, 6), (4, 3), (2, 2)]
    records = random_records(grids, batch=3)
    reference, target, region = random_images(3, (64, 48))
    timesteps = torch.tensor([3, 499, 500])
    out = LeffaLoss(distance=distance, weight=0.5)(records, reference, target, region, timesteps)
    expected = formula_loss(records, grids, reference, target, region, timesteps, weight=0.5,
                            distance=distance)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    layer_mean = torch.stack([layer.loss for layer in out.layers]).mean()
    assert out.loss.item() == pytest.approx(0.5 * layer_mean.item())
    assert [layer.grid for layer in out.layers] == grids


def test_distances_differ_where_errors_exceed_one():
    records = random_records([(4, 3)], batch=1)
    reference, _, region = random_images(1, (32, 24))
    target = torch.full_like(reference, 3.0)  # every |difference| inside the region is > 1
    args = (records, reference, target, torch.ones_like(region), torch.tensor([0]))
    smooth, squared = LeffaLoss(distance="smooth_l1")(*args).loss, LeffaLoss(distance="l2")(*args).loss
    assert squared > 2 * smooth > 0


def shift_records(grid, shift, head_dim_scale=12.0):
    """One-hot attention: query token (i, j) attends only to reference token ((i + dy) % h, (j + dx) % w)."""
    h, w = grid
    n = h * w
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    target_token = ((rows + shift[1]) % h * w + (cols + shift[0]) % w).reshape(n)
    key = head_dim_scale * torch.eye(n).reshape(1, 1, n, n)  # orthogonal keys, head size n
    query = key[:, :, target_token]
    return [AttentionRecord("shift", query, key, 1.0)], target_token


def expected_sample_position(pixels, size, tokens, shift):
    """Analytic sampling coordinate per pixel of one axis, and where it is free of wrap-around and
    zero padding: bilinear upsampling (align_corners=False) of token coordinates linspace(-1, 1)
    shifted by ``shift`` tokens."""
    source = ((pixels + 0.5) * tokens / size - 0.5).clamp(0, tokens - 1)
    position = -1 + 2 * (source + shift) / (tokens - 1)
    unwrapped = torch.ceil(source) + shift <= tokens - 1
    valid = unwrapped & (position > -1 + 1 / size) & (position < 1 - 1 / size)
    return position, valid


@pytest.mark.parametrize("shift", [(2, 0), (1, 1), (0, 0)])
def test_known_attention_shift_is_recovered_in_flow_and_warp(shift):
    grid, size = (6, 8), (24, 32)  # image 4x the token grid
    records, target_token = shift_records(grid, shift)
    # A reference whose channels are its own pixel-centre coordinates: bilinear sampling inside the
    # pixel-centre hull returns the sampling position itself, so the warp shows where it sampled.
    ys, xs = ((2 * torch.arange(s) + 1) / s - 1 for s in size)
    reference = torch.stack([xs.expand(*size), ys[:, None].expand(*size), torch.zeros(size)])[None]
    target, region = torch.zeros_like(reference), torch.ones(1, 1, *size)
    out = LeffaLoss()(records, reference, target, region, torch.tensor([0]), keep_warped=True)

    flow = out.layers[0].flow[0].reshape(-1, 2)
    assert torch.allclose(flow, token_coordinates(*grid)[target_token], atol=1e-6)
    x, x_valid = expected_sample_position(torch.arange(size[1]), size[1], grid[1], shift[0])
    y, y_valid = expected_sample_position(torch.arange(size[0]), size[0], grid[0], shift[1])
    valid = y_valid[:, None] & x_valid[None, :]
    assert valid.sum() >= 0.3 * valid.numel()
    warped = out.layers[0].warped[0]
    assert torch.allclose(warped[0][valid], x.expand(*size)[valid], atol=1e-5)
    assert torch.allclose(warped[1][valid], y[:, None].expand(*size)[valid], atol=1e-5)
    if shift[1] == 0:  # the top row samples at y = -1, half a pixel outside: zero padding blends in
        assert torch.allclose(warped[1][0, x_valid], 0.5 * ys[0].expand(int(x_valid.sum())), atol=1e-5)


def test_timestep_gate_zeroes_late_samples_and_skips_their_work():
    grids = [(8, 6), (4, 3)]
    records = random_records(grids, batch=4, requires_grad=True)
    reference, target, region = random_images(4, (64, 48))
    loss = LeffaLoss()
    out = loss(records, reference, target, region, torch.tensor([0, 499, 500, 999]), keep_warped=True)
    assert out.active.tolist() == [True, True, False, False]
    assert all(layer.flow.shape[0] == 2 and layer.warped.shape[0] == 2 for layer in out.layers)
    early = [AttentionRecord(r.name, r.query[:2], r.key[:2], r.scale) for r in records]
    alone = loss(early, reference[:2], target[:2], region[:2], torch.tensor([0, 499]))
    assert out.loss.item() == pytest.approx(alone.loss.item() * 2 / 4, rel=1e-6)
    out.loss.backward()
    assert records[0].query.grad[2:].abs().max() == 0 and records[0].query.grad[:2].abs().max() > 0

    # theta_timestep is on the paper's 1000-step scale: on a 2000-step schedule the gate is t < 1000.
    assert loss.active_samples(torch.tensor([999, 1000]), num_train_timesteps=2000).tolist() == [True, False]
    late = loss(records, reference, target, region, torch.tensor([500, 900, 700, 999]))
    assert late.loss.item() == 0 and not late.active.any()
    assert all(layer.flow.shape[0] == 0 and layer.warped is None for layer in late.layers)


def test_layer_selection_uses_the_grid_to_image_ratio():
    image_size = (256, 176)  # DeepFashion: latent 32x22, then 16x11, 8x6, 4x3
    grids = [(32, 22), (16, 11), (8, 6), (4, 3)]
    records = random_records(grids, batch=1)

    def selected(theta):
        return [grid for _, grid in LeffaLoss(theta_resolution=theta).select_layers(records, image_size)]

    assert selected(1 / 32) == [(32, 22), (16, 11), (8, 6)]  # 8/256 = 1/32 is in, 4/256 is out
    assert selected(1 / 16) == [(32, 22), (16, 11)]
    with pytest.raises(ValueError, match="no attention layer"):
        LeffaLoss(theta_resolution=1 / 4)(records, *random_images(1, image_size), torch.tensor([0]))


def test_bad_inputs_are_named():
    records = random_records([(4, 3)], batch=2)
    reference, target, region = random_images(2, (32, 24))
    with pytest.raises(ValueError, match="repeat a layer"):
        LeffaLoss()(records + records, reference, target, region, torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="loss_region"):
        LeffaLoss()(records, reference, target, region[:, :, :-1], torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="12 attention tokens matches no"):
        LeffaLoss()(records, *random_images(2, (64, 64)), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="distance"):
        LeffaLoss(distance="l1")


def test_gradients_reach_both_unets_of_the_tiny_model():
    torch.manual_seed(0)
    model = LeffaModel.tiny()
    batch, size = 2, (64, 48)
    latent = tuple(s // model.vae_scale_factor for s in size)
    conditioning = Conditioning(mask=torch.ones(batch, 1, *latent), masked_image=torch.randn(batch, 4, *latent),
                                densepose=torch.randn(batch, 3, *latent),
                                reference=torch.randn(batch, 4, *latent))
    records = []
    timesteps = torch.tensor([10, 300])
    model(torch.randn(batch, 4, *latent), timesteps, conditioning, attention_records=records)
    out = LeffaLoss()(records, *random_images(batch, size), timesteps)
    assert len(out.layers) == len(records) - 1 and all("mid_block" not in layer.name for layer in out.layers)
    out.loss.backward()
    generative = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert generative.to_q.weight.grad.abs().max() > 0 and generative.to_k.weight.grad.abs().max() > 0
    assert model.unet.conv_in.weight.grad.abs().max() > 0
    assert model.unet_encoder.conv_in.weight.grad.abs().max() > 0  # through the reference keys
    assert all(p.grad is None for p in model.vae.parameters())


def assert_same_gradients(actual: dict, expected: dict):
    """Every gradient equal within 1e-6 relative to its largest entry (and none missing)."""
    assert actual.keys() == expected.keys() and expected
    for name, gradient in expected.items():
        scale = gradient.abs().max().item()
        torch.testing.assert_close(actual[name], gradient, rtol=1e-6, atol=1e-6 * scale, msg=name)


@pytest.mark.parametrize("distance", ["smooth_l1", "l2"])
def test_per_layer_recomputation_keeps_the_loss_and_every_gradient(distance):
    """float64 records and images: with and without recomputation, the loss and the gradients of every query
    and key equal the float64 formula (recompute=False is the computation as it was before recomputation)."""
    grids = [(8, 6), (4, 3), (2, 2)]
    images = random_images(3, (64, 48), dtype=torch.float64)
    timesteps = torch.tensor([3, 200, 700])  # the last sample is gated
    results = {}
    for method in ("formula", False, True):
        records = random_records(grids, batch=3, requires_grad=True, dtype=torch.float64)
        if method == "formula":
            loss = formula_loss(records, grids, *images, timesteps, weight=0.5, distance=distance)
        else:
            loss = LeffaLoss(weight=0.5, distance=distance)(records, *images, timesteps, recompute=method).loss
        loss.backward()
        results[method] = (loss.detach(), {f"{r.name}.{part}": getattr(r, part).grad
                                           for r in records for part in ("query", "key")})
    expected_loss, expected_gradients = results["formula"]
    for recompute in (False, True):
        loss, gradients = results[recompute]
        torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=0)
        assert_same_gradients(gradients, expected_gradients)
    assert expected_gradients["layer0.query"].abs().max() > 1e-6  # not vacuous


def test_scoring_inside_the_unet_keeps_the_loss_and_every_gradient():
    """The tiny model in float64: the training step's scorer (each layer scored inside its attention layer,
    recomputed on its own without gradient checkpointing, with its checkpointed block with it) and the records
    path under gradient checkpointing give the loss and every parameter gradient of the records path without
    recomputation and without gradient checkpointing (the computation before)."""
    torch.manual_seed(0)
    model = LeffaModel.tiny().double()
    batch, size = 2, (64, 48)
    latent = tuple(s // model.vae_scale_factor for s in size)
    generator = torch.Generator().manual_seed(3)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    conditioning = Conditioning(mask=torch.ones(batch, 1, *latent, dtype=torch.float64),
                                masked_image=randn(batch, 4, *latent), densepose=randn(batch, 3, *latent),
                                reference=randn(batch, 4, *latent))
    noisy, timesteps = randn(batch, 4, *latent), torch.tensor([10, 300])
    images = random_images(batch, size, dtype=torch.float64)
    loss_fn = LeffaLoss(weight=1.0)

    def run(path: str, gradient_checkpointing: bool):
        for unet in (model.unet, model.unet_encoder):
            unet.enable_gradient_checkpointing() if gradient_checkpointing else unet.disable_gradient_checkpointing()
        model.zero_grad(set_to_none=True)
        if path == "records":
            records = []
            prediction = model(noisy, timesteps, conditioning, attention_records=records)
            leffa = loss_fn(records, *images, timesteps, recompute=False)
        else:
            scorer = loss_fn.scorer(*images, timesteps, recompute=path == "scorer, recomputed")
            prediction = model(noisy, timesteps, conditioning, attention_records=scorer)
            leffa = scorer.result()
        (prediction.square().mean() + leffa.loss).backward()
        return leffa.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    expected_loss, expected_gradients = run("records", gradient_checkpointing=False)
    for path, checkpointing in (("scorer, recomputed", False), ("scorer", True), ("records", True)):
        loss, gradients = run(path, checkpointing)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=0)
        assert_same_gradients(gradients, expected_gradients)
