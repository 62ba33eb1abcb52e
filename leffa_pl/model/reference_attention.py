"""Reference attention as diffusers attention processors: the whole dual-UNet mechanism.

- The reference UNet's self-attention layers store their input (the output of ``norm1``) in a
  ``ReferenceAttention`` object, keyed by the layer's name.
- The generative UNet's self-attention layer of the same name attends over its own tokens plus
  those stored reference tokens. Only the generative tokens are queried (n queries over 2n keys),
  which equals the released model's attention over the 2n concatenated tokens, first n kept.
- Cross-attention layers return their input, so each transformer block computes
  ``h + norm2(h)`` exactly as the released models do.

The state object travels through diffusers' ``cross_attention_kwargs`` (key ``"reference"``),
so no UNet code is copied or patched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


@dataclass(frozen=True)
class AttentionRecord:
    """Per-head queries of the generated tokens and keys of the reference tokens of one layer."""

    name: str
    query: torch.Tensor  # [B, heads, n, head_dim]
    key: torch.Tensor  # [B, heads, n_reference, head_dim]
    scale: float  # the layer's softmax scale (1 / sqrt(head_dim) for SD)


class RecordSink(Protocol):
    """Where the generative layers put their records: a list, or ``LeffaScorer`` (scores each as it comes)."""

    def append(self, record: AttentionRecord) -> None: ...


@dataclass
class ReferenceAttention:
    """What flows between the two UNets during one forward pass.

    ``features`` is filled by the reference UNet and read by the generative UNet. ``records``
    receives the generative layers' queries/keys when not None (the Leffa loss is on); when it is
    None nothing extra is kept.
    """

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    records: RecordSink | None = None


def _split_heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    batch, tokens, _ = x.shape
    return x.view(batch, tokens, attn.heads, -1).transpose(1, 2)


def _output_projection(attn: Attention, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    batch, _, tokens, _ = x.shape
    x = x.transpose(1, 2).reshape(batch, tokens, -1)
    x = attn.to_out[1](attn.to_out[0](x))
    if attn.residual_connection:
        x = x + residual
    return x / attn.rescale_output_factor


class ReferenceWriteProcessor:
    """Reference UNet self-attention: store the layer input, then attend as usual."""

    def __init__(self, name: str):
        self.name = name
        self.attention = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, reference: ReferenceAttention | None = None) -> torch.Tensor:
        if reference is None:
            raise ValueError(f"{self.name}: the reference UNet must be called with "
                             "cross_attention_kwargs={'reference': ReferenceAttention()}")
        reference.features[self.name] = hidden_states
        return self.attention(attn, hidden_states, encoder_hidden_states, attention_mask)


class ReferenceReadProcessor:
    """Generative UNet self-attention: queries from own tokens, keys/values from own + reference."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, reference: ReferenceAttention | None = None) -> torch.Tensor:
        if reference is None or self.name not in reference.features:
            raise ValueError(f"{self.name}: no reference feature for this layer; run the reference "
                             "UNet first (LeffaModel.encode_reference)")
        if attention_mask is not None or attn.group_norm is not None or attn.spatial_norm is not None:
            raise NotImplementedError(f"{self.name}: attention masks and attention norms are not used by Leffa")
        reference_tokens = reference.features[self.name]
        if reference_tokens.shape[0] != hidden_states.shape[0]:
            raise ValueError(f"{self.name}: reference batch {reference_tokens.shape[0]} != "
                             f"generative batch {hidden_states.shape[0]}")
        context = torch.cat([hidden_states, reference_tokens.to(hidden_states.dtype)], dim=1)
        query = _split_heads(attn, attn.to_q(hidden_states))
        key = _split_heads(attn, attn.to_k(context))
        value = _split_heads(attn, attn.to_v(context))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        if reference.records is not None:
            own_tokens = hidden_states.shape[1]
            reference.records.append(AttentionRecord(self.name, query, key[:, :, own_tokens:], attn.scale))
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        return _output_projection(attn, out, hidden_states)


class SkipCrossAttentionProcessor:
    """Cross-attention of the released models: returns its input, so the block adds norm2(h)."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, reference: ReferenceAttention | None = None) -> torch.Tensor:
        return hidden_states


def install_reference_processors(unet: UNet2DConditionModel, role: str) -> list[str]:
    """Set Leffa's processors on ``unet`` (``role`` is "reference" or "generative").

    Returns the names of the self-attention layers, in module order.
    """
    if role not in ("reference", "generative"):
        raise ValueError(f"role must be 'reference' or 'generative', got {role!r}")
    self_attention = ReferenceWriteProcessor if role == "reference" else ReferenceReadProcessor
    processors, names = {}, []
    for key in unet.attn_processors:  # "<layer name>.processor"
        name = key.removesuffix(".processor")
        if name.endswith("attn1"):
            processors[key] = self_attention(name)
            names.append(name)
        elif name.endswith("attn2"):
            processors[key] = SkipCrossAttentionProcessor()
        else:
            raise ValueError(f"unexpected attention layer {name!r} in the UNet")
    unet.set_attn_processor(processors)
    return names
