"""``leffa-pl-plan`` / ``make plan``: per-device memory of every stage of a config, before renting a GPU.

Weights, gradients, optimizer state and EMA are exact: counted on the architecture built on the meta device
with the trainable set ``LeffaModule`` uses (nothing downloaded, no memory), LoRA adapters and a bf16 frozen base
included. Activations come from the measured per-sample, per-token model of ``leffa_pl.planning.activations``
(the real architecture, run under fake tensors at small sizes). A step's peak is

    weights + optimizer state + EMA + gradients + max(activations, optimizer-step temporaries)

all gradients being held at the forward peak (Lightning clears them after the forward), near the end of a
checkpointed backward pass and during the optimizer step, whose temporaries come after the activations are freed.
Per stage: the split, whether it fits, the largest per-device batch that fits, and the accumulation that keeps
the stage's global batch.

    leffa-pl-plan --stages configs/stages/vton_paper.yaml --architecture sd15 --memory-gib 80
    make plan CONFIG=configs/stages/pose_paper.yaml ARCH=sdxl MEMORY="80 141"
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

from leffa_pl.callbacks.stage_schedule import Stage
from leffa_pl.config import TRAINER_BASE, ConfigError, callbacks_of, configured_class, read_config
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.lora import LoraSettings
from leffa_pl.model.presets import (
    sd15_inpainting_unet_config,
    sd15_vae_config,
    sdxl_inpainting_unet_config,
    sdxl_vae_config,
)
from leffa_pl.planning.activations import StepActivations, StepSettings, fit_activation_model
from leffa_pl.training.optimizers import check_optimizer_name
from leffa_pl.training.sharding import LeffaFSDPStrategy, blocks_to_shard
from leffa_pl.training.trainable import select_trainable

ARCHITECTURES = {
    "tiny": LeffaModel.tiny,
    "sd15": lambda: LeffaModel.from_configs(sd15_inpainting_unet_config(), sd15_vae_config()),
    "sdxl": lambda: LeffaModel.from_configs(sdxl_inpainting_unet_config(), sdxl_vae_config()),
}
# bitsandbytes' 8-bit Adam: one byte per state element, one fp32 absmax per block; small tensors stay 32-bit.
BNB_BLOCK, BNB_MIN_8BIT_SIZE = 256, 4096
GIB = 2**30
HEADROOM = 0.1  # kept free for the CUDA context, allocator fragmentation, kernel workspaces


@dataclass(frozen=True)
class TrainingSetup:
    devices: int
    strategy: str  # "ddp" or "fsdp"
    precision: str
    gradient_checkpointing: bool
    trainable: str
    optimizer: str
    ema: bool
    lora: LoraSettings | None = None  # model.lora when trainable is "lora" (None: its defaults)
    device_type: str = "cuda"  # "cpu": torch's optimizers step tensor by tensor there (no foreach temporaries)


@dataclass(frozen=True)
class StaticMemory:
    """Per-device bytes that do not depend on the batch; ``optimizer_step``: the temporaries of the optimizer step,
    held beside the gradients but not beside the activations (not in ``total``)."""

    weights: int
    gradients: int
    optimizer: int
    ema: int
    optimizer_step: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.ema


def optimizer_state_bytes(parameters: list[torch.Tensor], optimizer: str) -> int:
    """AdamW: exp_avg + exp_avg_sq in fp32. 8-bit AdamW: bitsandbytes' blockwise layout."""
    check_optimizer_name(optimizer)
    total = 0
    for p in parameters:
        n = p.numel()
        if optimizer == "adamw8bit" and n >= BNB_MIN_8BIT_SIZE:
            total += 2 * (n + math.ceil(n / BNB_BLOCK) * 4)
        else:
            total += 2 * n * 4
    return total


def optimizer_step_bytes(parameters: list[torch.Tensor], optimizer: str, device_type: str) -> int:
    """Temporaries of one optimizer step. torch's AdamW on CUDA runs its foreach path: ``_foreach_sqrt`` of the
    second moments is one fp32 copy of all of them at once; on CPU it steps tensor by tensor (a sqrt and a division:
    two copies of the largest tensor). bitsandbytes' 8-bit AdamW updates in place, block by block."""
    if optimizer == "adamw8bit" or not parameters:
        return 0
    if device_type == "cuda":
        return sum(p.numel() for p in parameters) * 4
    return 2 * max(p.numel() for p in parameters) * 4


def static_memory(model: LeffaModel, setup: TrainingSetup) -> StaticMemory:
    """Exact bytes per device for ``model`` (fp32 master weights, as Lightning's mixed precision keeps them).

    FSDP (``LeffaFSDPStrategy``: full sharding of the UNets, the frozen VAE replicated, no EMA) divides the UNets'
    weights, optimizer state and flat gradients by the devices (a unit holding any trainable parameter has a
    gradient for all of its parameters, frozen ones included) and adds what is unsharded during a step: the root
    unit (the UNet parameters outside the blocks) and two units (the one computing and the one prefetched), in the
    compute dtype (bf16 under mixed precision)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    optimizer = optimizer_state_bytes(trainable, setup.optimizer)
    ema = gradients if setup.ema else 0  # LeffaEMA: a shadow of the trainable weights
    step = optimizer_step_bytes(trainable, setup.optimizer, setup.device_type)
    if setup.strategy != "fsdp":
        return StaticMemory(weights + buffers, gradients, optimizer, ema, step)
    if setup.ema:
        raise ValueError("LeffaEMA refuses FSDP: plan FSDP without EMA")
    if setup.trainable == "lora":
        raise ValueError(LORA_FSDP)
    vae = sum(p.numel() * p.element_size() for p in model.vae.parameters())
    units = [list(unit.parameters()) for unit in blocks_to_shard(model)]
    in_units = {id(p) for unit in units for p in unit}
    root = [p for child in (model.unet, model.unet_encoder) for p in child.parameters() if id(p) not in in_units]
    compute_bytes = 2 if setup.precision in ("bf16-mixed", "16-mixed") else 4
    unsharded = (sum(p.numel() for p in root) + 2 * max(sum(p.numel() for p in unit) for unit in units)) * compute_bytes
    flat_gradients = sum(sum(p.numel() * p.element_size() for p in group)
                         for group in [*units, root] if any(p.requires_grad for p in group))
    shards = setup.devices
    return StaticMemory(weights=vae + (weights - vae) // shards + unsharded, gradients=flat_gradients // shards,
                        optimizer=optimizer // shards, ema=0, optimizer_step=step // shards)


LORA_FSDP = ("LoRA does not train under FSDP (LeffaFSDPStrategy refuses it: a bf16 frozen base beside float32 "
             "adapters is no flat parameter of one dtype, and the frozen base is no gradient or optimizer state to "
             "shard): plan it under ddp")


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    static: StaticMemory
    activations: float  # the step's activation term at the stage's batch
    usable: float
    largest_batch: int
    accumulation_for_global: tuple[int, int] | None  # (batch per device, accumulation) keeping the global batch

    @property
    def total(self) -> float:
        return step_peak(self.static, self.activations)

    @property
    def fits(self) -> bool:
        return self.total <= self.usable


def step_peak(static: StaticMemory, activations: float) -> float:
    """A step's peak per device from its static terms and its activation term (see the module docstring)."""
    return static.total + max(activations, static.optimizer_step)


def plan_stage(stage: Stage, static: StaticMemory, activations: StepActivations, setup: TrainingSetup,
               usable: float) -> StagePlan:
    budget = usable - static.total
    largest = activations.largest_batch(budget, stage.resolution) if static.optimizer_step <= budget else 0
    global_batch = stage.batch_size * stage.accumulate_grad_batches * setup.devices
    keep = None
    for accumulation in range(1, global_batch + 1):  # fewest accumulation steps whose batch fits
        per_device, rest = divmod(global_batch, setup.devices * accumulation)
        if rest == 0 and 0 < per_device <= largest:
            keep = (per_device, accumulation)
            break
    return StagePlan(stage, static, activations.bytes(stage.batch_size, stage.resolution), usable, largest, keep)


# The training setup does not depend on the stage schedule, which the parser requires: an empty one stands in.
NO_STAGES = "--stages.stages=[]"


def read_plan_config(configs: Sequence[Path], devices: int | None = None, args: Sequence[str] = ()) -> dict:
    """What ``leffa-pl fit --config <each of configs> [--trainer.devices=<devices>]`` runs, read through its own
    parser (``leffa_pl.config.read_config``: layered, defaults filled in, nothing built), as a dict."""
    try:
        config = read_config(configs, [*args, *([f"--trainer.devices={devices}"] if devices else [])])
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    return config.as_dict()


def read_stages(path: Path) -> list[Stage]:
    return plan_stages(read_plan_config([path]))


def plan_stages(config: dict) -> list[Stage]:
    return [Stage(**stage) for stage in config["stages"]["stages"]]


def read_setup(trainer_paths: Sequence[Path], devices: int | None = None) -> TrainingSetup:
    """The training setup of trainer configs layered as ``leffa-pl fit --config a --config b`` does."""
    return training_setup(read_plan_config(trainer_paths, devices, [NO_STAGES]), trainer_paths)


def training_setup(config: dict, paths: Sequence[Path]) -> TrainingSetup:
    """The training setup of a configuration ``read_plan_config`` read from ``paths``: the strategy and the EMA
    callback it configures, checked as ``leffa-pl fit`` would find them."""
    trainer, model = config["trainer"], config["model"]
    strategy = strategy_class(trainer["strategy"])
    sharded = strategy is not None and issubclass(strategy, FSDPStrategy)
    ema = bool(callbacks_of(config, EMAWeightAveraging))  # LeffaEMA is one
    if sharded and ema:
        raise SystemExit(f"{' + '.join(map(str, paths))}: LeffaEMA refuses FSDP (it averages full parameters, "
                         "FSDP holds shards); remove it from trainer.callbacks")
    trainable = model["trainable"]
    lora = LoraSettings(**model["lora"]) if trainable == "lora" and model.get("lora") else None
    if sharded and trainable == "lora":
        raise SystemExit(f"{' + '.join(map(str, paths))}: {LORA_FSDP}")
    checkpointing = bool(model["gradient_checkpointing"])
    if strategy is not None and issubclass(strategy, LeffaFSDPStrategy):
        # the strategy checkpoints the blocks that diffusers' gradient checkpointing does (transformer, ResNet)
        checkpointing |= bool(trainer["strategy"]["init_args"]["activation_checkpointing_blocks"])
    return TrainingSetup(
        devices=device_count(trainer["devices"]),
        strategy="fsdp" if sharded else "ddp",
        precision=str(trainer["precision"] or "32-true"),
        gradient_checkpointing=checkpointing,
        trainable=trainable,
        optimizer=model["optimizer"],
        ema=ema,
        lora=lora,
        device_type="cpu" if trainer["accelerator"] == "cpu" else "cuda",
    )


def device_count(devices) -> int:
    """Devices of ``trainer.devices`` as parsed: a count, a list of indices; "auto" and -1 plan one device."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    return int(devices) if str(devices).isdigit() else 1


def strategy_class(strategy) -> type | None:
    """The class of ``trainer.strategy`` as parsed: a ``class_path`` entry or a name of Lightning's strategy
    registry (None: "auto", the accelerator's default)."""
    if isinstance(strategy, dict):
        return configured_class(strategy)
    return StrategyRegistry[strategy]["strategy"] if strategy in StrategyRegistry else None


def strategy_kind(strategy) -> str:
    """"fsdp" for Lightning's FSDP (a registry name or a class_path naming an FSDPStrategy), else "ddp"."""
    cls = strategy_class(strategy)
    return "fsdp" if cls is not None and issubclass(cls, FSDPStrategy) else "ddp"


def build_model(architecture: str, trainable: str, lora: LoraSettings | None = None) -> LeffaModel:
    """``architecture`` on the meta device with ``LeffaModule``'s trainable set (LoRA: adapters added, the frozen
    base in ``lora.frozen_dtype``)."""
    with torch.device("meta"):
        model = ARCHITECTURES[architecture]()
        select_trainable(model, trainable, lora)
    return model


def format_plan(plans: list[StagePlan], setup: TrainingSetup, architecture: str, model: LeffaModel,
                memory_gib: float, headroom: float) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = ""
    if setup.trainable == "lora":
        settings = setup.lora or LoraSettings()
        lora = f" (rank {settings.rank}{', reference UNet too' if settings.reference_unet else ''}, frozen base " \
               f"{settings.frozen_dtype})"
    lines = [
        f"plan: {architecture} ({total:,} parameters, {trainable:,} trainable: {setup.trainable}{lora}), "
        f"{setup.devices} devices x {memory_gib:g} GiB ({memory_gib * (1 - headroom):.1f} GiB usable, "
        f"{headroom:.0%} headroom), {setup.strategy}, {setup.precision}, gradient checkpointing "
        f"{'on' if setup.gradient_checkpointing else 'off'}, {setup.optimizer}, EMA {'on' if setup.ema else 'off'}",
        "",
        "| stage | resolution | batch/device x accum | weights | gradients | optimizer | EMA | activations "
        "| optimizer step | total | fits | largest batch/device | keeps global batch as |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for plan in plans:
        s, m = plan.stage, plan.static
        keep = (f"{plan.accumulation_for_global[0]} x {plan.accumulation_for_global[1]} accum"
                if plan.accumulation_for_global else "does not fit")
        global_batch = s.batch_size * s.accumulate_grad_batches * setup.devices
        lines.append(
            f"| {s.name}{' (Leffa)' if s.leffa_loss else ''} | {s.resolution[0]}x{s.resolution[1]} "
            f"| {s.batch_size} x {s.accumulate_grad_batches} | {m.weights / GIB:.1f} | {m.gradients / GIB:.1f} "
            f"| {m.optimizer / GIB:.1f} | {m.ema / GIB:.1f} | {plan.activations / GIB:.1f} "
            f"| {m.optimizer_step / GIB:.1f} | {plan.total / GIB:.1f} "
            f"| {'yes' if plan.fits else 'NO'} | {plan.largest_batch} | {keep} (global {global_batch}) |")
    lines.append("\nGiB per device. Total = weights + gradients + optimizer + EMA + max(activations, optimizer step): "
                 "the optimizer step's temporaries come after the activations are freed. Activations: the fitted "
                 "per-sample, per-token model (leffa_pl/planning/activations.py), Leffa stages with every sample "
                 "taking the loss.")
    return "\n".join(lines)


def fit_activations(architecture: str, setup: TrainingSetup, leffa_loss: bool) -> StepActivations:
    """The activation model of ``architecture`` trained as ``setup`` says, with the Leffa loss on or off."""
    return fit_activation_model(build_model(architecture, setup.trainable, setup.lora),
                                StepSettings(leffa_loss, setup.gradient_checkpointing, setup.precision))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=Path, required=True, help="a configs/stages/*.yaml")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), required=True)
    parser.add_argument("--memory-gib", type=float, nargs="+", required=True,
                        help="memory of one device (several: one plan each)")
    parser.add_argument("--trainer", type=Path, nargs="+", default=[TRAINER_BASE, Path("configs/trainer/gpu.yaml")],
                        help="trainer configs, layered in order as leffa-pl fit --config does (e.g. base.yaml "
                             "gpu.yaml gpu_fsdp.yaml)")
    parser.add_argument("--devices", type=int, help="override the trainer config's devices (--trainer.devices)")
    parser.add_argument("--headroom", type=float, default=HEADROOM,
                        help="fraction of the memory kept free (CUDA context, fragmentation, kernel workspaces)")
    parser.add_argument("--json", type=Path, help="also write the plan as JSON here")
    args = parser.parse_args(argv)
    config = read_plan_config([*args.trainer, args.stages], args.devices)
    stages = plan_stages(config)
    setup = training_setup(config, args.trainer)
    model = build_model(args.architecture, setup.trainable, setup.lora)
    static = static_memory(model, setup)
    fits = {leffa_loss: fit_activations(args.architecture, setup, leffa_loss)
            for leffa_loss in sorted({stage.leffa_loss for stage in stages})}
    report = []
    for memory_gib in args.memory_gib:
        usable = memory_gib * GIB * (1 - args.headroom)
        plans = [plan_stage(stage, static, fits[stage.leffa_loss], setup, usable) for stage in stages]
        print(format_plan(plans, setup, args.architecture, model, memory_gib, args.headroom) + "\n", flush=True)
        report += [{"memory_gib": memory_gib, "stage": p.stage.name, "total_bytes": p.total, "fits": p.fits,
                    "largest_batch": p.largest_batch} for p in plans]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
