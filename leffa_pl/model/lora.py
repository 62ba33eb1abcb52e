"""LoRA adapters on the UNets through diffusers' PEFT integration (``UNet2DConditionModel.add_adapter``).

peft wraps each chosen projection (an ``nn.Linear``) in a LoRA layer around the original one, so the attention
processors of ``reference_attention`` call ``attn.to_q`` etc. unchanged and the Leffa loss still gets its records.
Only projections the training loss reaches get an adapter (cross-attention and the reference UNet's tail never do),
so plain DDP needs no unused-parameter search.

Files:
- the adapter alone, in diffusers' pipeline layout: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (and
  ``unet_encoder.`` for the reference UNet), each UNet's ``LoraConfig`` in the safetensors metadata
  ``lora_adapter_metadata`` with keys prefixed by the UNet, as diffusers' ``save_lora_weights`` writes them;
  ``load_lora`` reads it back through ``UNet2DConditionModel.load_lora_adapter``;
- merged weights in the released layout (``merged_state_dict``): each adapted weight + its scaled adapter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from torch import nn

from leffa_pl.model.checkpoint import SAFETENSORS_SUFFIX, CheckpointError, read_state_dict

ADAPTER = "default"  # peft's adapter name; one adapter per UNet
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
UNETS = ("unet", "unet_encoder")  # LeffaModel's generative and reference UNets
FROZEN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoraSettings:
    """``model.lora``: rank, alpha (None: = rank, scale 1), dropout, the projections adapted (module names or
    suffixes of them, peft's matching), whether the reference UNet gets adapters too, and the dtype the frozen
    UNets are held in (``bfloat16``: under ``trainer.precision=bf16-mixed`` only; the adapters stay float32)."""

    rank: int = 64
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    reference_unet: bool = False
    frozen_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self):
        object.__setattr__(self, "target_modules", tuple(self.target_modules))  # a YAML list
        if self.rank < 1:
            raise ValueError(f"model.lora.rank must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        if self.frozen_dtype not in FROZEN_DTYPES:
            raise ValueError(f"model.lora.frozen_dtype must be one of {tuple(FROZEN_DTYPES)}, "
                             f"got {self.frozen_dtype!r}")

    @property
    def unets(self) -> tuple[str, ...]:
        return UNETS if self.reference_unet else UNETS[:1]


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == target or name.endswith("." + target) for target in targets)


def add_lora(model: nn.Module, settings: LoraSettings, reached: frozenset[str]) -> None:
    """Adapters on ``settings.unets`` of ``model`` (a ``LeffaModel``), on the target projections whose weight is in
    ``reached`` (parameter names the loss reaches); the frozen UNets cast to ``settings.frozen_dtype``."""
    from peft import LoraConfig  # imported here: peft is needed by LoRA runs only

    for child in settings.unets:
        unet = getattr(model, child)
        if getattr(unet, "peft_config", None):
            raise ValueError(f"{child} already has LoRA adapters")
        names = [name for name, module in unet.named_modules()
                 if isinstance(module, (nn.Linear, nn.Conv2d)) and _matches(name, settings.target_modules)
                 and f"{child}.{name}.weight" in reached]
        if not names:
            raise ValueError(f"model.lora.target_modules {list(settings.target_modules)} match no Linear/Conv2d "
                             f"layer of {child} that the training loss reaches")
        # Full names: peft adapts exactly these modules.
        unet.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.alpha or settings.rank,
                                    lora_dropout=settings.dropout, target_modules=names), ADAPTER)
    dtype = FROZEN_DTYPES[settings.frozen_dtype]
    for child in UNETS:
        for name, parameter in getattr(model, child).named_parameters():
            if not is_lora_parameter(name):
                parameter.data = parameter.data.to(dtype)


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def has_lora(model: nn.Module) -> bool:
    return any(getattr(getattr(model, child), "peft_config", None) for child in UNETS)


def base_name(name: str) -> str:
    """The parameter name without peft's wrapper (``...to_q.base_layer.weight`` -> ``...to_q.weight``)."""
    return name.replace(".base_layer.", ".")


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The released layout (float32): each adapted weight is base + B @ A * alpha / rank, adapters dropped."""
    from peft.tuners.lora import LoraLayer

    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    merged = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        module, wrapped, leaf = key.rpartition(".base_layer.")
        if wrapped:
            key = f"{module}.{leaf}"
            if leaf == "weight":
                value = value.float() + layers[module].get_delta_weight(ADAPTER).float()
        merged[key] = value.float() if value.is_floating_point() else value
    return merged


def adapter_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The adapters of ``model`` in diffusers' pipeline layout, and the safetensors metadata with their configs."""
    from peft.utils import get_peft_model_state_dict

    tensors, configs = {}, {}
    for child in UNETS:
        unet = getattr(model, child)
        if not getattr(unet, "peft_config", None):
            continue
        state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
        tensors |= {f"{child}.{key}": value for key, value in state.items()}
        config = unet.peft_config[ADAPTER].to_dict()
        configs |= {f"{child}.{key}": sorted(value) if isinstance(value, set) else value
                    for key, value in config.items()}
    return tensors, {"format": "pt", METADATA_KEY: json.dumps(configs, sort_keys=True, default=str)}


def write_adapter(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapters (``adapter_state_dict``) to a ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    from leffa_pl.atomic_write import atomic_write

    path = Path(path)
    tensors, metadata = adapter_state_dict(model)
    with atomic_write(path) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)
    return path


def load_lora(model: nn.Module, path: str | os.PathLike, scale: float = 1.0) -> None:
    """Merge the adapter file at ``path`` (``write_adapter``'s layout) into ``model``'s UNets at ``scale``, through
    diffusers' ``load_lora_adapter`` and ``fuse_lora``; the model keeps its plain layers."""
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"{path}: a LoRA adapter is a {SAFETENSORS_SUFFIX} file (the run's "
                              "export/leffa_lora.safetensors)")
    state = read_state_dict(path)
    with safe_open(str(path), framework="pt") as file:
        metadata = json.loads((file.metadata() or {}).get(METADATA_KEY, "{}"))
    children = sorted({key.split(".", 1)[0] for key in state})
    if not state or not set(children) <= set(UNETS) or not metadata:
        raise CheckpointError(f"{path}: not a Leffa LoRA adapter (keys under {UNETS} and their configs in the "
                              f"'{METADATA_KEY}' metadata); found prefixes {children}")
    from peft.utils import get_peft_model_state_dict

    for child in children:
        unet = getattr(model, child)
        try:
            unet.load_lora_adapter(state, prefix=child, metadata=metadata, adapter_name=ADAPTER)
        except (ValueError, RuntimeError, KeyError) as error:
            raise CheckpointError(f"{path}: the {child} adapter does not fit the model: {error}") from None
        loaded = {f"{child}.{key}" for key in get_peft_model_state_dict(unet, adapter_name=ADAPTER)}
        given = {key for key in state if key.startswith(child + ".")}
        if loaded != given:
            raise CheckpointError(f"{path}: the {child} adapter does not match the model: "
                                  f"{len(given - loaded)} keys not loaded, {len(loaded - given)} missing")
        unet.fuse_lora(lora_scale=scale)
        unet.unload_lora()
