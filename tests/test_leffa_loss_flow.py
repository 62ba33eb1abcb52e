"""Attention flow: the fused O(n)-memory path equals the direct formula; token grids come from shapes."""

import math

import pytest
import torch

from leffa_pl.losses.attention_flow import attention_flow, coordinate_grid, naive_attention_flow, token_grid


def test_coordinate_grid_is_row_major_xy():
    grid = coordinate_grid(3, 5, dtype=torch.float64).reshape(3, 5, 2)
    assert torch.equal(grid[0, :, 0], torch.linspace(-1, 1, 5, dtype=torch.float64))  # x along width
    assert torch.equal(grid[:, 0, 1], torch.linspace(-1, 1, 3, dtype=torch.float64))  # y along height
    assert torch.all(grid[:, :, 0] == grid[:1, :, 0]) and torch.all(grid[:, :, 1] == grid[:, :1, 1])


@pytest.mark.parametrize("batch, heads, query_grid, key_grid, head_dim, spread", [
    (1, 1, (4, 4), (4, 4), 8, 1.0),
    (2, 3, (5, 7), (5, 7), 16, 2.0),  # non-square, odd width
    (3, 8, (6, 11), (6, 11), 40, 1.0),  # SD1.5's first-level heads
    (2, 2, (3, 5), (6, 9), 8, 3.0),  # reference grid differs from the query grid
])
def test_fused_flow_matches_float64_reference(batch, heads, query_grid, key_grid, head_dim, spread):
    generator = torch.Generator().manual_seed(sum(query_grid) + head_dim)
    query, key = (spread * torch.randn(batch, heads, math.prod(grid), head_dim, generator=generator,
                                       dtype=torch.float64) for grid in (query_grid, key_grid))
    probe = torch.randn(batch, math.prod(query_grid), 2, generator=generator, dtype=torch.float64)
    scale = head_dim ** -0.5 / 2.0

    query64, key64 = query.clone().requires_grad_(), key.clone().requires_grad_()
    expected = naive_attention_flow(query64, key64, scale, key_grid)
    (expected * probe).sum().backward()
    query32, key32 = query.float().requires_grad_(), key.float().requires_grad_()
    fused = attention_flow(query32, key32, scale, key_grid)
    (fused * probe.float()).sum().backward()

    assert fused.shape == (batch, math.prod(query_grid), 2) and fused.dtype == torch.float32
    assert (fused.double() - expected).abs().max() <= 1e-5
    assert (query32.grad.double() - query64.grad).abs().max() <= 1e-5
    assert (key32.grad.double() - key64.grad).abs().max() <= 1e-5
    assert query64.grad.abs().max() > 1e-3 and key64.grad.abs().max() > 1e-3  # the check is not vacuous


def test_fused_flow_runs_under_autocast_in_input_precision():
    query, key = torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        flow = attention_flow(query, key, 0.5, (3, 4))
    assert flow.dtype == torch.float32
    assert (flow - naive_attention_flow(query, key, 0.5, (3, 4))).abs().max() <= 1e-5


def test_flow_rejects_mismatched_grid():
    with pytest.raises(ValueError, match="key grid"):
        attention_flow(torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4), 1.0, (2, 2))


@pytest.mark.parametrize("image_size, grids", [
    ((256, 176), [(32, 22), (16, 11), (8, 6), (4, 3)]),  # DeepFashion: ceil rounding in the UNet
    ((1024, 768), [(128, 96), (64, 48), (32, 24), (16, 12)]),
    ((512, 352), [(64, 44), (32, 22), (16, 11), (8, 6)]),
    ((64, 48), [(8, 6), (4, 3), (2, 2), (1, 1)]),
])
def test_token_grid_follows_the_unet_downsampling(image_size, grids):
    assert [token_grid(h * w, image_size) for h, w in grids] == grids


def test_token_grid_rejects_impossible_token_counts():
    with pytest.raises(ValueError, match="37 attention tokens matches no downsampled grid of a 256x176"):
        token_grid(37, (256, 176))
