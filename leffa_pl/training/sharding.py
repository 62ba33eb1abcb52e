"""Sharded training (FSDP) of the two UNets: the blocks each shard unit holds."""

from __future__ import annotations

from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D


def wrapped_block_types() -> tuple[type, ...]:
    """The diffusers blocks FSDP wraps (and checkpoints): one transformer block or one ResNet block each."""
    return (BasicTransformerBlock, ResnetBlock2D)
