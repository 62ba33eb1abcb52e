"""LightningModule wiring the Leffa model, the diffusion objective and the Leffa loss.

Randomness of a training sample (VAE posterior sample, noise, timestep, reference dropout) comes
from a generator seeded by (seed, optimizer step, micro-batch, sample ids): a resumed run, and a
DDP run that shards the same global batch, draw exactly what an uninterrupted single process would.
"""

from __future__ import annotations

import math
import os
import time
import warnings
import zlib
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from leffa_pl.losses.leffa_loss import LeffaLoss, LeffaLossOutput, LeffaLossSettings
from leffa_pl.metrics.flow_error import end_point_error
from leffa_pl.model.leffa_model import Conditioning, LeffaModel
from leffa_pl.model.lora import LoraSettings
from leffa_pl.model.provenance import RECORD_KEY, Provenance, check_task, read_provenance
from leffa_pl.model.reference_attention import RecordSink
from leffa_pl.model.sampler import LeffaSampler
from leffa_pl.training.module_settings import ValidationSamplerSettings, sections_of_flat_settings
from leffa_pl.training.non_finite_guard import NonFiniteGuard, NonFiniteLossError
from leffa_pl.training.optimizers import build_optimizer, check_optimizer_name
from leffa_pl.training.step_outputs import TrainingStepOutput, ValidationStepOutput
from leffa_pl.training.torch_compile import check_compile_options, check_compiler, compile_unets
from leffa_pl.training.trainable import TrainableChoice, select_trainable


def filter_lightning_noise() -> None:
    """Filters the Lightning warnings that no setting of ours can act on (applied on import)."""
    # diffusers' from_pretrained returns models in eval mode, which Lightning keeps and warns about (~1,700 modules)
    # at every fit: harmless here, the UNets have dropout 0 and group/layer norms only.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=PossibleUserWarning)
    # Lightning's own pytree helper (lightning/pytorch/utilities/_pytree.py) uses torch's deprecated LeafSpec: one
    # warning per epoch.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Persistent workers with pinned memory under per-epoch reloads: re-created persistent loaders leak pinned-memory
    # threads (pytorch/pytorch#91252, Lightning#18487). The data modules return the same training loader at each
    # reload of a stage (TrainLoaderCache), and their evaluation loaders have no persistent workers.
    warnings.filterwarnings("ignore", message=r"The combination of `DataLoader\(`pin_memory=True`, `persistent_workers",
                            category=PossibleUserWarning)


filter_lightning_noise()


def build_model(base_model: str | None, init_checkpoint: str | None) -> LeffaModel:
    """``base_model`` (diffusers folder) or the tiny demo model; optionally Leffa weights on top."""
    if base_model is None:
        rank_zero_info("model: the tiny demo model (no base_model given)")
        model = LeffaModel.tiny()
        if init_checkpoint:
            model.load_checkpoint(init_checkpoint)
    elif init_checkpoint:
        rank_zero_info(f"model: Leffa weights {init_checkpoint} on the configs of {base_model}")
        model = LeffaModel.from_checkpoint(init_checkpoint, base_model)
    else:
        rank_zero_info(f"model: initialised from the inpainting base model {base_model}")
        model = LeffaModel.from_base_model(base_model)
    return model


def _check_ranges(**settings: tuple[float, float, float | None]) -> None:
    """Each ``name=(value, low, high)``: a finite value within [low, high] (no upper bound for None)."""
    for name, (value, low, high) in settings.items():
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"model.{name}={value!r}: must be a finite number {bound}")


class DiffusionInputs(NamedTuple):
    """A batch's denoising inputs (``LeffaModule.diffusion_inputs``)."""

    noisy: torch.Tensor  # noisy latents
    noise: torch.Tensor  # the noise added: the prediction's target
    timesteps: torch.Tensor
    conditioning: Conditioning
    keep: torch.Tensor  # [B] bool: the samples whose reference was kept (not dropped)


DEFAULT_LEFFA_LOSS = LeffaLossSettings()
DEFAULT_VALIDATION_SAMPLER = ValidationSamplerSettings()


def _section(settings_class: type, value: Any) -> Any:
    """A config section as given: by jsonargparse (the dataclass, or None), or from a checkpoint's hyper_parameters
    (a mapping, load_from_checkpoint)."""
    return settings_class(**value) if isinstance(value, Mapping) else value


class LeffaModule(pl.LightningModule):
    def __init__(
        self,
        base_model: str | None = None,
        init_checkpoint: str | None = None,
        learning_rate: float = 1e-5,
        weight_decay: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        reference_dropout: float = 0.1,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
        torch_compile: bool = False,
        torch_compile_backend: str = "inductor",
        trainable: TrainableChoice = "both",
        lora: LoraSettings | None = None,
        optimizer: str = "adamw",
        optimizer_eps: float | None = None,
        max_non_finite_steps: int = 5,
        seed: int = 0,
        leffa_loss: LeffaLossSettings = DEFAULT_LEFFA_LOSS,
        validation_sampler: ValidationSamplerSettings = DEFAULT_VALIDATION_SAMPLER,
        allow_other_task: bool = False,
    ):
        super().__init__()
        lora = _section(LoraSettings, lora)
        leffa_loss = _section(LeffaLossSettings, leffa_loss)
        validation_sampler = _section(ValidationSamplerSettings, validation_sampler)
        self.save_hyperparameters(ignore=["lora", "leffa_loss", "validation_sampler"])
        # plain types: weights-only loadable
        self.hparams.update(lora=asdict(lora) if lora is not None else None, leffa_loss=asdict(leffa_loss),
                            validation_sampler=asdict(validation_sampler))
        self.lora_settings = lora
        check_optimizer_name(optimizer)
        _check_ranges(learning_rate=(learning_rate, 0, None), weight_decay=(weight_decay, 0, None),
                      beta1=(betas[0], 0, 1), beta2=(betas[1], 0, 1), reference_dropout=(reference_dropout, 0, 1))
        if torch_compile:
            check_compile_options(torch_compile_backend, gradient_checkpointing)
        self.use_model(build_model(base_model, init_checkpoint))
        self.noise_scheduler = DDPMScheduler.from_config(self.model.scheduler_config)
        self.leffa_loss = LeffaLoss(**asdict(leffa_loss))
        self.validation_sampler = validation_sampler.sampler_settings()
        self.leffa_loss_enabled = False  # set_stage
        self._stage_end_step: int | None = None  # set_stage
        self._image_every_n_steps = 0  # set_image_interval
        self._last_step_time: float | None = None
        self.non_finite_guard = NonFiniteGuard(max_non_finite_steps)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's, with the flat settings of a checkpoint written up to f8eb75b (``model.leffa_weight``, ...)
        moved into their sections (``leffa_pl/training/module_settings.py``); ``kwargs`` still win."""
        if isinstance(checkpoint_path, (str, os.PathLike)) and Path(checkpoint_path).is_file():
            content = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
            kwargs = sections_of_flat_settings(content.get("hyper_parameters") or {}) | kwargs
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def use_model(self, model: LeffaModel) -> None:
        """Train ``model`` with this module's settings: freezing, gradient checkpointing, channels-last, compilation
        (``__init__`` calls it; benchmarks pass other architectures built without a base-model folder)."""
        self.model = model
        # Frozen: what the loss never reaches (so plain DDP works) and what `trainable` leaves out.
        self.trainable_summary = select_trainable(model, self.hparams.trainable, self.lora_settings)
        rank_zero_info(str(self.trainable_summary))
        if self.hparams.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
            model.unet_encoder.enable_gradient_checkpointing()
        if self.hparams.channels_last:
            model.use_channels_last()
        if self.hparams.torch_compile:
            compile_unets(model, self.hparams.torch_compile_backend)

    # ----------------------------------------------------------------------- called by the callbacks
    def set_stage(self, leffa_loss: bool, end_step: int | None) -> None:
        """``StageSchedule``, when a stage starts: its Leffa loss setting and the optimizer step its epoch ends
        at (None: the open-ended last stage)."""
        self.leffa_loss_enabled, self._stage_end_step = leffa_loss, end_step

    def check_leffa_resolution(self, resolution: tuple[int, int]) -> None:
        """``StageSchedule``, at the start, for each Leffa stage: raise when no self-attention layer's grid
        reaches ``leffa_loss.theta_resolution`` of the image height at ``resolution`` (the loss would have no layer).
        The finest attention grid is the generative UNet's first attention level (each level halves the side)."""
        unet = self.model.unet.config
        level = next((i for i, kind in enumerate(unet.down_block_types) if "Attn" in kind), None)
        height = resolution[0] // self.model.vae_scale_factor
        finest = -(-height // 2**level) if level is not None else 0
        theta = self.leffa_loss.theta_resolution
        if finest / resolution[0] < theta * (1 - 1e-9):
            raise ValueError(f"the Leffa loss selects no attention layer at {resolution[0]}x{resolution[1]}: the "
                             f"finest attention grid has {finest} rows, {finest / resolution[0]:.4g} of the image "
                             f"height, below leffa_loss.theta_resolution={theta:.4g}; lower "
                             "model.leffa_loss.theta_resolution")

    def leffa_settings_changed(self) -> list[str]:
        """``StageSchedule``, when no stage trains with the Leffa loss: the model.leffa_loss settings given other
        values than their defaults (they have no effect there)."""
        given = self.hparams["leffa_loss"]
        return [f"model.leffa_loss.{field.name}={given[field.name]!r}" for field in fields(LeffaLossSettings)
                if given[field.name] != getattr(DEFAULT_LEFFA_LOSS, field.name)]

    def set_image_interval(self, every_n_steps: int) -> None:
        """``LeffaImageLogger``: keep the warped references of every n-th optimizer step (0: never)."""
        self._image_every_n_steps = every_n_steps

    def setup(self, stage: str) -> None:
        lora = self.lora_settings
        if lora is not None and lora.frozen_dtype == "bfloat16" and self.trainer.precision != "bf16-mixed":
            raise ValueError(f"model.lora.frozen_dtype=bfloat16 needs trainer.precision=bf16-mixed (the frozen "
                             f"weights are used in bf16 autocast), got {self.trainer.precision}")
        if self.hparams.torch_compile:  # the device is known from here on
            check_compiler(self.hparams.torch_compile_backend, self.trainer.strategy.root_device)
        trained_on = Provenance.of(self.trainer.datamodule)
        if stage == "fit" and self.hparams.init_checkpoint and trained_on is not None:
            check_task(self.hparams.init_checkpoint, read_provenance(self.hparams.init_checkpoint), trained_on.task,
                       self.hparams.allow_other_task, "--model.allow_other_task=true")

    # ------------------------------------------------------------------------------------ training
    def sample_generators(self, batch: Mapping[str, Any], micro_batch: int) -> list[torch.Generator]:
        generators = []
        for person_id, reference_id in zip(batch["person_id"], batch["reference_id"]):
            key = f"{self.hparams.seed}:{self.global_step}:{micro_batch}:{person_id}:{reference_id}"
            generators.append(torch.Generator().manual_seed(zlib.crc32(key.encode())))
        return generators

    def diffusion_inputs(self, batch: Mapping[str, Any], generators: list[torch.Generator],
                         timesteps: torch.Tensor | None = None, reference_dropout: float | None = None
                         ) -> DiffusionInputs:
        """Noisy latents, noise, timesteps, conditioning and kept-reference mask of a batch (VAE in its own
        dtype, no grad). Timesteps are drawn uniformly and references dropped unless given."""
        model = self.model
        with torch.autocast(self.device.type, enabled=False), torch.no_grad():
            latents = model.encode_image(batch["person"], generators)
            conditioning = model.encode_conditioning(batch["agnostic"], batch["inpaint_mask"], batch["densepose"],
                                                     batch["reference"], generators)
        num_train = self.noise_scheduler.config.num_train_timesteps
        if timesteps is None:
            timesteps = torch.cat([torch.randint(0, num_train, (1,), generator=g) for g in generators])
        timesteps = timesteps.to(self.device)
        dropout = self.hparams.reference_dropout if reference_dropout is None else reference_dropout
        keep = torch.cat([torch.rand(1, generator=g) >= dropout for g in generators])
        conditioning.reference = conditioning.reference * keep.to(self.device, latents.dtype).view(-1, 1, 1, 1)
        noise = randn_tensor(latents.shape, generator=generators, device=self.device, dtype=latents.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        return DiffusionInputs(noisy, noise, timesteps, conditioning, keep.to(self.device))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> TrainingStepOutput:
        micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        inputs = self.diffusion_inputs(batch, self.sample_generators(batch, micro_batch))
        log_images = self._is_image_step(micro_batch)
        losses, leffa = self.training_losses(batch, inputs, log_images)
        total = sum(losses.values())
        self.non_finite_guard.record_loss(total, losses["mse"], losses.get("leffa"))
        self.log_dict({"loss/total": total} | {f"loss/{name}": value for name, value in losses.items()},
                      prog_bar=True, on_step=True, on_epoch=False, batch_size=inputs.noisy.shape[0])
        return TrainingStepOutput(loss=total, leffa=leffa, log_images=log_images)

    def training_losses(self, batch: Mapping[str, Any], inputs: DiffusionInputs, log_images: bool
                        ) -> tuple[dict[str, torch.Tensor], LeffaLossOutput | None]:
        """The training loss's terms, summed and logged as ``loss/<name>``: ``mse`` and, in a Leffa stage,
        ``leffa``; and the Leffa loss's output (per-layer flows), also computed on image steps, else None.
        Subclasses add terms here (experiments/teacher_flow.py)."""
        scorer = None
        if self.leffa_loss_enabled or log_images:
            # Scored inside each attention layer, so that with gradient checkpointing the loss's tensors are
            # recomputed with the layer's block; without it, each layer's loss is checkpointed on its own.
            scorer = self.leffa_loss.scorer(batch["reference"], batch["person"], batch["loss_region"],
                                            inputs.timesteps, self.noise_scheduler.config.num_train_timesteps,
                                            keep_warped=log_images, sample_mask=inputs.keep,
                                            recompute=not self.hparams.gradient_checkpointing,
                                            grad=self.leffa_loss_enabled)
        losses = {"mse": self.diffusion_loss(inputs, scorer)}
        leffa = scorer.result() if scorer is not None else None
        if self.leffa_loss_enabled:
            losses["leffa"] = leffa.loss
        return losses, leffa

    def diffusion_loss(self, inputs: DiffusionInputs, attention_records: RecordSink | None = None) -> torch.Tensor:
        """MSE of the noise prediction; ``attention_records`` receives the generative UNet's attention records."""
        prediction = self.model(inputs.noisy, inputs.timesteps, inputs.conditioning,
                                attention_records=attention_records)
        return F.mse_loss(prediction.float(), inputs.noise.float())

    def on_fit_start(self) -> None:
        if self.logger is not None:
            summary = self.trainable_summary
            self.logger.log_metrics({"parameters/trainable": sum(summary.trainable.values()),
                                     "parameters/total": sum(summary.total.values())}, step=0)

    def on_train_batch_start(self, batch: Mapping[str, Any], batch_idx: int) -> int | None:
        # Only after a resume can a batch start in a stage that is already over: Lightning finishing the
        # restored epoch (it fetches one more batch when no validation is due), or starting a new epoch
        # without epoch hooks after a checkpoint written at the epoch's last batch. -1 ends the epoch
        # without training this batch (Lightning's API for it).
        over = self._stage_end_step is not None and self.global_step >= self._stage_end_step
        return -1 if over else None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.non_finite_guard.exhausted:
            self._stop_after_skipped_steps()
        now = time.perf_counter()
        if self._last_step_time is not None:
            samples = len(batch["person_id"]) * self.trainer.world_size
            self.log("samples_per_second", samples / (now - self._last_step_time), on_step=True, on_epoch=False)
        self._last_step_time = now

    def on_validation_end(self) -> None:
        # Throughput counts training only: the next step's time starts after validation.
        if self._last_step_time is not None:
            self._last_step_time = time.perf_counter()

    def _is_image_step(self, micro_batch: int) -> bool:
        every = self._image_every_n_steps
        return bool(every) and micro_batch == 0 and self.global_step % every == 0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The non-finite guard (``leffa_pl/training/non_finite_guard.py``): skip the step by clearing the
        gradients when the loss or the gradients of any rank are not finite."""
        guard = self.non_finite_guard
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None  # 16-mixed: the scaler's job
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        finite = guard.step_is_finite(parameters, check_gradients=not scaled)
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            guard.passed()
        else:
            optimizer.zero_grad(set_to_none=True)  # no update: optimizers leave parameters without gradients alone
            rank_zero_warn(guard.skip(self.global_step, guard.last_problem if not finite else ""))
        self.log("train/skipped_steps", float(guard.skipped), on_step=True, on_epoch=False)

    def _stop_after_skipped_steps(self) -> None:
        """After ``max_non_finite_steps`` skipped steps in a row: last.ckpt (the last good step) and an error."""
        callback = self.trainer.checkpoint_callback
        folder = Path(callback.dirpath) if callback is not None and callback.dirpath else \
            Path(self.trainer.default_root_dir) / "checkpoints"
        path = folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        self.trainer.save_checkpoint(path)
        raise NonFiniteLossError(self.non_finite_guard.stop_message(self.global_step - 1, path, self.global_rank))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["non_finite_skipped_steps"] = self.non_finite_guard.skipped
        # What the weights learned: inference refuses them for the other task, a resume with another data module.
        trained_on = Provenance.of(self.trainer.datamodule)
        if trained_on is not None:
            checkpoint[RECORD_KEY] = trained_on.as_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.non_finite_guard.skipped = checkpoint.get("non_finite_skipped_steps", 0)

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return build_optimizer(self.hparams.optimizer, trainable, self.device, self.hparams.learning_rate,
                               tuple(self.hparams.betas), self.hparams.weight_decay, self.hparams.optimizer_eps)

    # ---------------------------------------------------------------------------------- validation
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int,
                        dataloader_idx: int = 0) -> ValidationStepOutput:
        """Generated samples (for the image logger) and, where ground truth exists, attention-flow EPE."""
        generator = torch.Generator().manual_seed(self.hparams.seed + batch_idx)
        images = LeffaSampler(self.model, self.validation_sampler)(batch, generator)
        if "flow" in batch:
            self.log("val/flow_epe", self.attention_flow_error(batch), on_step=False, on_epoch=True,
                     batch_size=len(batch["person_id"]))
        return ValidationStepOutput(generated=images)

    @torch.no_grad()
    def attention_flow_error(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """End-point error (pixels) of the Leffa layers' attention flows against the batch's ground-truth
        flow, averaged over layers and samples; one denoising pass at a fixed timestep, half the Leffa loss's
        timestep threshold, with noise seeded by sample ids."""
        generators = [torch.Generator().manual_seed(zlib.crc32(f"{self.hparams.seed}:val:{p}:{r}".encode()))
                      for p, r in zip(batch["person_id"], batch["reference_id"])]
        timesteps = torch.full((len(generators),), self.hparams.leffa_loss["theta_timestep"] // 2)
        noisy, _, timesteps, conditioning, _ = self.diffusion_inputs(batch, generators, timesteps, 0.0)
        records = []
        self.model(noisy, timesteps, conditioning, attention_records=records)
        leffa = self.leffa_loss(records, batch["reference"], batch["person"], batch["loss_region"], timesteps,
                                self.noise_scheduler.config.num_train_timesteps)
        return torch.stack([end_point_error(layer.flow, batch["flow"]) for layer in leffa.layers]).nanmean()
