"""Sharded training (FSDP) of the two UNets: the blocks each shard unit holds, and Lightning's FSDP strategy set up
for them (``configs/trainer/gpu_fsdp.yaml``).

- Shard units: the diffusers transformer and ResNet blocks of both UNets, each one FSDP unit, checkpointed too.
  One exception: FSDP gathers a unit's parameters for backward when the gradient reaches the unit's output, so a
  block whose trainable parameters get a gradient only through the reference side channel (the reference UNet's
  last transformer block: its ``norm1`` output is a reference feature, the rest of it and the UNet's tail never
  reach the loss) stays in the root unit, which is unsharded for the whole step.
- The frozen VAE is left out of FSDP (``ignored_modules``): replicated on every device, never gathered, no
  gradient, no optimizer state.
- ``use_orig_params``: frozen parameters (cross-attention) share flat parameters with trainable ones.
- Gradient-norm clipping over the whole sharded model (Lightning's FSDP precision plugin refuses ``norm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from lightning.fabric.strategies.fsdp import _move_torchmetrics_to_device, _setup_activation_checkpointing
from lightning.pytorch.plugins.precision import FSDPPrecision, Precision
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import CustomPolicy

from leffa_pl.model.lora import has_lora
from leffa_pl.training.trainable import loss_reach

# Why LeffaFSDPStrategy refuses model.trainable=lora (the planner says the same).
LORA_UNDER_FSDP = ("LoRA does not train under FSDP here: FSDP flattens each unit's parameters into one flat "
                   "parameter of one dtype, which a frozen base held in bf16 (model.lora.frozen_dtype) beside "
                   "float32 adapters is not, and a LoRA run's only large term, the frozen base, is no gradient or "
                   "optimizer state for FSDP to shard. Train LoRA under ddp (configs/trainer/gpu.yaml)")

# What this strategy sets from the model itself; given in a config they would be ignored or contradict it.
_SET_BY_THE_STRATEGY = ("auto_wrap_policy", "activation_checkpointing", "activation_checkpointing_policy",
                        "ignored_modules", "ignored_states")
# Gradients stay sharded (each element on one rank): what the clipping's norm relies on.
_SHARDING_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP")


def wrapped_block_types() -> tuple[type, ...]:
    """The diffusers blocks FSDP wraps (and checkpoints): one transformer block or one ResNet block each."""
    return (BasicTransformerBlock, ResnetBlock2D)


def unet_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The blocks of ``wrapped_block_types`` in the two UNets of ``model`` (a ``LeffaModel``), by name."""
    return {name: module for name, module in model.named_modules()
            if name.startswith(("unet.", "unet_encoder.")) and isinstance(module, wrapped_block_types())}


def blocks_to_shard(model: nn.Module) -> list[nn.Module]:
    """The UNet blocks that become FSDP units: all but those with trainable parameters whose output never reaches
    the loss (see the module docstring). ``model`` is a ``LeffaModel`` after ``select_trainable``."""
    reached = loss_reach(model).module_outputs
    return [block for name, block in unet_blocks(model).items()
            if name in reached or not any(p.requires_grad for p in block.parameters())]


@dataclass(frozen=True)
class ShardingPlan:
    units: list[nn.Module]  # each one FSDP unit; the rest of the UNets is the root unit
    checkpointed: list[nn.Module]  # activation checkpointing
    ignored: list[nn.Module]  # left out of FSDP: replicated, not trained


class ShardedPrecision(FSDPPrecision):
    """``FSDPPrecision`` that clips by the gradient norm of the whole model: the local shards' squared norms summed
    over the ranks (under full sharding each gradient element lives on exactly one rank)."""

    def clip_grad_by_norm(self, optimizer: torch.optim.Optimizer, clip_val: int | float) -> None:
        parameters = list(self.main_params(optimizer))
        squared = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None]) ** 2
        squared = squared.to(parameters[0].device)
        if torch.distributed.is_initialized():  # every rank takes part, with or without local gradients
            torch.distributed.all_reduce(squared)
        torch.nn.utils.clip_grads_with_norm_(parameters, clip_val, squared.sqrt())


class LeffaFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` with the wrap policy, activation checkpointing and ignored VAE of ``LeffaModule``
    (see the module docstring). Other arguments are ``FSDPStrategy``'s (``sharding_strategy``, ``state_dict_type``,
    ``cpu_offload``, ...)."""

    strategy_name = "leffa_fsdp"

    def __init__(self, activation_checkpointing_blocks: bool = True, **kwargs: Any):
        given = sorted(name for name in _SET_BY_THE_STRATEGY if kwargs.pop(name, None) is not None)
        if given:
            raise ValueError(f"LeffaFSDPStrategy sets {', '.join(given)} from the model itself "
                             f"(leffa_pl/training/sharding.py); remove {given} from the strategy's init_args")
        sharding = kwargs.get("sharding_strategy", "FULL_SHARD")
        if str(getattr(sharding, "name", sharding)) not in _SHARDING_STRATEGIES:
            raise ValueError(f"LeffaFSDPStrategy: sharding_strategy must be one of {_SHARDING_STRATEGIES} (gradient "
                             f"clipping sums the squared norms of gradient shards), got {sharding!r}")
        kwargs.setdefault("use_orig_params", True)
        super().__init__(**kwargs)
        self.activation_checkpointing_blocks = activation_checkpointing_blocks

    @property
    def precision_plugin(self) -> FSDPPrecision:
        return FSDPStrategy.precision_plugin.fget(self)

    @precision_plugin.setter
    def precision_plugin(self, plugin: Precision | None) -> None:
        # Lightning's trainer hands every FSDP strategy a plain FSDPPrecision, which refuses norm clipping.
        if type(plugin) is FSDPPrecision:
            plugin = ShardedPrecision(plugin.precision, plugin.scaler)
        FSDPStrategy.precision_plugin.fset(self, plugin)

    def sharding_plan(self, leffa: nn.Module) -> ShardingPlan:
        """The FSDP units, checkpointed blocks and ignored modules of ``leffa`` (a ``LeffaModel``)."""
        checkpointed = list(unet_blocks(leffa).values()) if self.activation_checkpointing_blocks else []
        return ShardingPlan(units=blocks_to_shard(leffa), checkpointed=checkpointed, ignored=[leffa.vae])

    def _setup_model(self, model: nn.Module) -> nn.Module:
        """Wrap ``model`` (a ``LeffaModule``) as ``FSDPStrategy._setup_model`` does, with this model's units and
        the device itself as ``device_id`` (FSDP takes a CUDA index too, but refuses CPU given as an index)."""
        leffa = model.model
        if has_lora(leffa):
            raise ValueError(LORA_UNDER_FSDP)
        if self.activation_checkpointing_blocks and any(u.is_gradient_checkpointing
                                                        for u in (leffa.unet, leffa.unet_encoder)):
            raise ValueError("LeffaFSDPStrategy checkpoints the UNet blocks itself: set "
                             "model.gradient_checkpointing=false (or the strategy's "
                             "activation_checkpointing_blocks=false to keep diffusers' checkpointing)")
        plan = self.sharding_plan(leffa)
        units, checkpointed = {id(m) for m in plan.units}, {id(m) for m in plan.checkpointed}
        self.kwargs["auto_wrap_policy"] = CustomPolicy(lambda module: id(module) in units)
        self.kwargs["ignored_modules"] = plan.ignored
        for module in plan.ignored:
            module.to(self.root_device)  # FSDP moves only what it shards
        self._activation_checkpointing_kwargs = (
            {"auto_wrap_policy": CustomPolicy(lambda module: id(module) in checkpointed)} if checkpointed else {})
        wrapped = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                           mixed_precision=self.mixed_precision_config,
                                           sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                           **self.kwargs)
        _move_torchmetrics_to_device(wrapped, self.root_device)
        _setup_activation_checkpointing(wrapped, self._activation_checkpointing_kwargs)  # after wrapping, as Lightning
        return wrapped
