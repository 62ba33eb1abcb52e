"""Disk of a run (checkpoints kept at once, exports, TensorBoard images) and host memory of a rank.

``make plan`` prints them beside the device memory plan; ``leffa-pl fit`` checks the run folder's free space
against the disk total before it builds the model. Both read the same configuration, parsed by ``leffa-pl fit``'s
own parser (trainer, model, stages, images, export sections as ``leffa-pl fit --config ...`` composes them); the
model is the architecture built on the meta device with the trainable set ``LeffaModule`` uses, so every byte count
below is exact except the images (an upper bound: raw 8-bit pixels, TensorBoard's PNGs are smaller).

    python -m leffa_pl.planning.disk --stages configs/stages/vton_paper.yaml --architecture sd15 \\
        --trainer configs/trainer/base.yaml configs/trainer/gpu.yaml --devices 8
"""

from __future__ import annotations

import argparse
import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

from leffa_pl.callbacks.checkpoints import RetainedCheckpoints
from leffa_pl.callbacks.export_checkpoint import ExportReleasedCheckpoint
from leffa_pl.callbacks.stage_schedule import Stage
from leffa_pl.callbacks.tensorboard_images import LeffaImageLogger
from leffa_pl.config import TRAINER_BASE, callbacks_of
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.planning.plan import (
    GIB,
    build_model,
    device_count,
    optimizer_state_bytes,
    read_plan_config,
    strategy_kind,
)
from leffa_pl.training.trainable import select_trainable

PNG_CHANNELS = 3
TRAIN_IMAGE_FIXED_TILES = 3  # reference, target, loss region; then two per layer (LeffaImageLogger)
VALIDATION_TILES = 3  # target, reference, generated, per sample
VALIDATION_LOADERS = 2  # paired and unpaired


def _default(cls, name: str):
    return inspect.signature(cls).parameters[name].default


def _callback(config: dict, kind: type) -> dict | None:
    """``init_args`` of the first configured callback that is a ``kind`` (None: none is)."""
    return next(iter(callbacks_of(config, kind)), None)


@dataclass(frozen=True)
class DiskPlan:
    checkpoint: int  # bytes of one checkpoint: weights, optimizer state, EMA shadow
    checkpoints_at_once: int  # the most checkpoint files on disk at the same time
    retention: str  # how that count comes about
    export: int
    images: int
    total_steps: int

    @property
    def checkpoints(self) -> int:
        return self.checkpoint * self.checkpoints_at_once

    @property
    def total(self) -> int:
        return self.checkpoints + self.export + self.images


def checkpoint_bytes(model: LeffaModel, optimizer: str, ema: bool) -> int:
    """A training checkpoint's tensors: every weight (as stored), the optimizer state of the trainable ones in its
    real layout (fp32 moments, or bitsandbytes' 8-bit blocks), LeffaEMA's shadow of the trainable weights."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = [p for p in model.parameters() if p.requires_grad]
    shadow = sum(p.numel() * p.element_size() for p in trainable) if ema else 0
    return weights + optimizer_state_bytes(trainable, optimizer) + shadow


def _checkpoints_at_once(config: dict, stages: list[Stage], total_steps: int, validations: int
                         ) -> tuple[int, str]:
    retained = _callback(config, RetainedCheckpoints)
    if retained is not None:
        keep = retained.get("keep", _default(RetainedCheckpoints, "keep"))
        return keep + 1 + len(stages) + 1, (f"{keep} most recent + 1 being written + {len(stages)} stage ends "
                                            "+ last.ckpt written at a SIGTERM")
    plain = _callback(config, ModelCheckpoint)
    if plain is None:
        return 0, "no checkpoint callback"
    top_k = plain.get("save_top_k", 1)
    last = 1 if plain.get("save_last") not in (None, False, "link") else 0
    if top_k >= 0:
        return top_k + 1 + last, f"ModelCheckpoint save_top_k={top_k} + 1 being written + {last} last"
    every = plain.get("every_n_train_steps")
    saves = total_steps // every if every else validations + len(stages)
    return saves + last, f"ModelCheckpoint save_top_k=-1: every checkpoint ({saves}) kept"


def plan_disk(config: dict, model: LeffaModel) -> DiskPlan:
    """``config``: a configuration as ``leffa-pl fit`` parses it (``as_dict()``; ``trainer``, ``model``, ``stages``,
    ``images``, ``export``)."""
    trainer, settings = config.get("trainer") or {}, config.get("model") or {}
    stages = [s if isinstance(s, Stage) else Stage(**s) for s in (config.get("stages") or {}).get("stages", [])]
    max_steps = trainer.get("max_steps") or -1
    total_steps = max_steps if max_steps > 0 else sum(s.steps for s in stages)
    # validations: val_check_interval counts training batches (optimizer steps x accumulation)
    interval = trainer.get("val_check_interval")
    batches = [s.steps * s.accumulate_grad_batches for s in stages]
    validating = trainer.get("limit_val_batches") != 0  # None: Lightning's default, every batch
    validations = (sum(b // interval for b in batches) if isinstance(interval, int) and interval > 0
                   else len(stages)) if validating else 0
    count, retention = _checkpoints_at_once(config, stages, total_steps, validations)
    ema = _callback(config, EMAWeightAveraging) is not None  # LeffaEMA is one
    each = checkpoint_bytes(model, settings.get("optimizer", "adamw"), ema)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    formats = (config.get("export") or {}).get("formats") or _default(ExportReleasedCheckpoint, "formats")
    images = (config.get("images") or {})
    every = images.get("every_n_steps", _default(LeffaImageLogger, "every_n_steps"))
    layers = images.get("max_layers", _default(LeffaImageLogger, "max_layers"))
    image_bytes = 0
    for stage, batch_count in zip(stages, batches):
        pixels = stage.resolution[0] * stage.resolution[1] * PNG_CHANNELS
        if every:
            image_bytes += math.ceil(stage.steps / every) * (TRAIN_IMAGE_FIXED_TILES + 2 * layers) * pixels
        if isinstance(interval, int) and interval > 0:
            image_bytes += (batch_count // interval) * VALIDATION_LOADERS * stage.batch_size * VALIDATION_TILES \
                * pixels
    return DiskPlan(each, count, retention, len(formats) * weights, image_bytes, total_steps)


@dataclass(frozen=True)
class HostMemory:
    """Host RAM of one rank beyond the Python process itself (data-loader workers not counted)."""

    model_load: int  # the fp32 weights built on the host before they move to the device
    save: int  # rank 0 while writing a checkpoint (see plan_host_memory)
    save_in_memory: int  # what Lightning's own BytesIO save would add on top: the whole checkpoint
    resume: int  # each rank while a resume loads the checkpoint (see plan_host_memory)

    @property
    def peak(self) -> int:
        return max(self.model_load, self.save, self.resume)


def plan_host_memory(model: LeffaModel, disk: DiskPlan, strategy: str = "ddp", optimizer: str = "adamw") -> HostMemory:
    """DDP: a save streams one tensor at a time off the device (``AtomicCheckpointIO``), a resume maps the file
    (its pages are shared by the node's ranks in the page cache, counted 0 here). FSDP with ``state_dict_type: full``
    (``gpu_fsdp.yaml``): rank 0 gathers the whole checkpoint into host memory before writing it, and at a resume
    Lightning's FSDP loader (not the checkpoint IO) materialises the full optimizer state on every rank."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if strategy == "fsdp":
        trainable = [p for p in model.parameters() if p.requires_grad]
        return HostMemory(weights, disk.checkpoint, disk.checkpoint, optimizer_state_bytes(trainable, optimizer))
    largest = max(p.numel() * 4 for p in model.parameters())  # an fp32 weight or moment
    return HostMemory(weights, largest, disk.checkpoint, 0)


def format_resources(disk: DiskPlan, host: HostMemory, devices: int) -> str:
    def gb(nbytes: float) -> str:
        return f"{nbytes / GIB:.1f}"

    return "\n".join([
        f"disk on rank 0 (GiB; {disk.total_steps} steps; images: raw-pixel upper bound) and host RAM per rank "
        f"(GiB; {devices} ranks, each loads the model; rank 0 writes the checkpoints)",
        "",
        "| one checkpoint | checkpoints at once | checkpoints | exports | images | disk total "
        "| host RAM: model load | checkpoint save | (Lightning's BytesIO save) | resume, each rank |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {gb(disk.checkpoint)} | {disk.checkpoints_at_once} ({disk.retention}) | {gb(disk.checkpoints)} "
        f"| {gb(disk.export)} | {gb(disk.images)} | {gb(disk.total)} | {gb(host.model_load)} "
        f"| +{gb(host.save)} | +{gb(host.save_in_memory)} | +{gb(host.resume)} |",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=Path, required=True)
    parser.add_argument("--architecture", required=True)
    parser.add_argument("--trainer", type=Path, nargs="+", default=[TRAINER_BASE, Path("configs/trainer/gpu.yaml")])
    parser.add_argument("--devices", type=int)
    args = parser.parse_args(argv)
    config = read_plan_config([*args.trainer, args.stages], args.devices)
    model = build_model(args.architecture, config["model"]["trainable"])
    disk = plan_disk(config, model)
    host = plan_host_memory(model, disk, strategy_kind(config["trainer"]["strategy"]), config["model"]["optimizer"])
    devices = device_count(config["trainer"]["devices"])
    print(format_resources(disk, host, devices))


def model_for_check(base_model: str | None, trainable: str) -> LeffaModel:
    """The architecture ``leffa-pl fit`` will build (base model folder's configs, else the tiny model), on the meta
    device, with its trainable set."""
    with torch.device("meta"):
        model = LeffaModel.from_base_model_configs(base_model) if base_model else LeffaModel.tiny()
    select_trainable(model, trainable)
    return model


if __name__ == "__main__":
    main()
