"""Flow fields from attention: where each generated token looks in the reference, as grid coordinates.

For one self-attention layer with per-head queries Q [B, heads, n, d] of the generated tokens and
keys K [B, heads, m, d] of the reference tokens, the flow is ``mean_heads(softmax(Q K^T * scale)) @ C``
with C [m, 2] the reference token grid in normalised (x, y) coordinates.

``attention_flow`` never builds the n x m map: ``mean_heads(A) @ C == mean_heads(A @ C)`` and
``A @ C`` is an attention whose values are the coordinates. They go through a fused
``scaled_dot_product_attention`` kernel that keeps only per-row softmax statistics for the backward
pass, so memory grows linearly with the number of tokens in forward and backward (``make bench-leffa``
measures it). The math fallback, which would store the map, is disabled. The values are padded with
zeros only as far as the kernel needs (``value_width``): CUDA's memory-efficient kernel takes a value
head size different from the query's (a multiple of 4 in float32, 8 in half precision), CPU flash
attention needs the query's head size.
``naive_attention_flow`` is the direct formula, the reference for tests and the benchmark.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

FUSED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]


def coordinate_grid(height: int, width: int, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """Token coordinates of a ``height x width`` grid in row-major token order, [height * width, 2].

    x and y run over ``linspace(-1, 1)`` along width and height and are stacked as (x, y), the
    order ``grid_sample`` expects.
    """
    y, x = torch.meshgrid(torch.linspace(-1, 1, height, device=device, dtype=dtype),
                          torch.linspace(-1, 1, width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(height * width, 2)


def token_grid(tokens: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of ``tokens`` attention tokens computed from an image of ``image_size``.

    Every downsampling step (VAE: floor, UNet: ceil) halves each side, so after k steps a side of
    length L is ``floor(L / 2**k)`` or ``ceil(L / 2**k)``. The grid is the one such candidate with
    ``h * w == tokens``; e.g. a 256x176 image gives grids 32x22, 16x11, 8x6, 4x3.
    """
    height, width = image_size
    matches = set()
    for level in range(max(height, width).bit_length() + 1):
        scale = 2 ** level
        for h in {height // scale, -(-height // scale)}:
            for w in {width // scale, -(-width // scale)}:
                if h * w == tokens:
                    matches.add((h, w))
    if len(matches) != 1:
        problem = "matches no" if not matches else f"is ambiguous between {sorted(matches)} as a"
        raise ValueError(f"{tokens} attention tokens {problem} downsampled grid of a {height}x{width} image; "
                         "are the images the size the model was run on?")
    return matches.pop()


def _check_inputs(query: torch.Tensor, key: torch.Tensor, key_grid: tuple[int, int]) -> None:
    if query.dim() != 4 or key.dim() != 4 or query.shape[:2] != key.shape[:2] or query.shape[3] != key.shape[3]:
        raise ValueError("expected query [B, heads, n, d] and key [B, heads, m, d], "
                         f"got {tuple(query.shape)} and {tuple(key.shape)}")
    if key.shape[2] != math.prod(key_grid):
        raise ValueError(f"key has {key.shape[2]} tokens, key grid {key_grid} has {math.prod(key_grid)}")


def naive_attention_flow(query: torch.Tensor, key: torch.Tensor, scale: float,
                         key_grid: tuple[int, int]) -> torch.Tensor:
    """``mean_heads(softmax(query @ key^T * scale)) @ C`` in the inputs' dtype, materialising the map.

    Returns the flow of every query token, [B, n, 2].
    """
    _check_inputs(query, key, key_grid)
    attention = torch.softmax(query @ key.transpose(-1, -2) * scale, dim=-1).mean(dim=1)
    return attention @ coordinate_grid(*key_grid, device=query.device, dtype=query.dtype)


def value_width(query: torch.Tensor) -> int:
    """Columns of the coordinate values: 2 coordinates padded to what the fused kernels accept
    (PyTorch's sdp_utils: CPU flash attention requires the query's head size; CUDA's memory-efficient
    attention a multiple of its GEMM alignment, 4 for float32 and 8 for half precision)."""
    head_dim = query.shape[-1]
    if query.device.type == "cpu":
        return head_dim
    return min(head_dim, 4 if query.dtype == torch.float32 else 8)


def attention_flow(query: torch.Tensor, key: torch.Tensor, scale: float,
                   key_grid: tuple[int, int]) -> torch.Tensor:
    """Same value as ``naive_attention_flow`` with memory linear in the number of tokens (fused kernel).

    Computes in the inputs' dtype (autocast is disabled here). Returns [B, n, 2].
    """
    _check_inputs(query, key, key_grid)
    batch, heads, _, head_dim = query.shape
    if head_dim < 2:
        raise ValueError(f"head size {head_dim} cannot carry 2 coordinates")
    coordinates = coordinate_grid(*key_grid, device=query.device, dtype=query.dtype)
    values = F.pad(coordinates, (0, value_width(query) - 2)).expand(batch, heads, -1, -1)
    with torch.autocast(query.device.type, enabled=False), sdpa_kernel(FUSED_BACKENDS):
        out = F.scaled_dot_product_attention(query, key, values, scale=scale)
    return out[..., :2].mean(dim=1)
