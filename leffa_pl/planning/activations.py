"""Activation memory of one training step: measured at small sizes, fitted per sample and per latent token.

A probe step is the memory-relevant part of ``LeffaModule.training_step``: VAE encoding of person, agnostic
image and reference (no grad), both UNets, MSE, the Leffa loss on every sample when on (the worst case a
stage must fit), backward. It runs under ``PeakTensorMemory`` on the real architecture, built on the meta device
and given fake tensors (``FakeTensorMode``: shapes only, so SD1.5 and SDXL run on a laptop), with gradient
checkpointing and bf16 autocast as configured. Two peaks of the tensors it creates, each relative to holding all
gradients of the trainable parameters (counted apart, exactly):

- ``forward``: the forward pass's peak. Lightning clears the gradients after ``training_step`` returns (its
  closure: step, zero_grad, backward), so from the second step on the forward runs beside all of the previous
  step's gradients (and under gradient accumulation, beside the ones being accumulated);
- ``backward``: the backward pass's peak of activations + the gradients produced so far, minus all gradients.
  Without checkpointing it comes early, when few gradients exist; with checkpointing the activations are small
  and the peak is near the end, where nearly all gradients exist: both cases are this one number.

Each is modelled as

    activations(batch, tokens) = batch * (per_token * tokens + per_token_pair * tokens**2 + per_sample) + fixed

with ``tokens`` the latent tokens (H/8 * W/8), fitted by least squares on four small steps (``FIT_POINTS``); the
step's activation term is the larger of the two. Limits: the fit learns the attention kernels of the CPU it runs on
(CPU attention may materialise the n x n weights, which CUDA's fused kernels do not: then it over-predicts for CUDA
at large sizes); the CPU autocast op list stands in for CUDA's; allocator rounding and fragmentation, kernel
workspaces (cuDNN, flash-attention scratch), the CUDA context and NCCL buffers are not in it (the planner keeps a
headroom for them).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from leffa_pl.losses.leffa_loss import LeffaLoss
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.planning.memory_probe import PeakTensorMemory


class _EverySampleLeffaLoss(LeffaLoss):
    """Every sample takes the loss without checking which do (no data-dependent branch under fake tensors)."""

    @staticmethod
    def active_index(active: torch.Tensor) -> None:
        return None


@dataclass(frozen=True)
class StepSettings:
    leffa_loss: bool
    gradient_checkpointing: bool
    precision: str  # "32-true" or "bf16-mixed"


def probe_step(model: LeffaModel, batch: int, image_size: tuple[int, int], settings: StepSettings) -> None:
    """One training step's tensors (see the module docstring); ``model``'s trainable set is used as it is."""
    probe_loss(model, batch, image_size, settings).backward()


def probe_loss(model: LeffaModel, batch: int, image_size: tuple[int, int], settings: StepSettings) -> torch.Tensor:
    """The forward pass of ``probe_step``: its loss."""
    image = torch.rand(batch, 3, *image_size) * 2 - 1
    mask = torch.ones(batch, 1, *image_size)
    with torch.no_grad():
        latents = model.encode_image(image)
        conditioning = model.encode_conditioning(image, mask, image, image)
    timesteps = torch.zeros(batch, dtype=torch.long)
    noise = torch.randn_like(latents)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if settings.precision == "bf16-mixed"
                else contextlib.nullcontext())
    for unet in (model.unet, model.unet_encoder):
        if settings.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
    with autocast:
        scorer = None
        if settings.leffa_loss:  # as LeffaModule.training_step scores the loss
            scorer = _EverySampleLeffaLoss(theta_timestep=1000).scorer(
                image, image, mask, timesteps, recompute=not settings.gradient_checkpointing)
        prediction = model(latents + noise, timesteps, conditioning, attention_records=scorer)
        loss = F.mse_loss(prediction.float(), noise.float())
        if scorer is not None:
            loss = loss + scorer.result().loss
    return loss


@dataclass(frozen=True)
class StepPeaks:
    """Bytes above all gradients: the forward pass's peak, and the backward pass's peak (see the module docstring)."""

    forward: int
    backward: int

    @property
    def step(self) -> int:
        return max(self.forward, self.backward)


def measure_activations(model: LeffaModel, batch: int, image_size: tuple[int, int], settings: StepSettings
                        ) -> StepPeaks:
    """The peaks of a probe step on ``model`` as it is (real or fake)."""
    with PeakTensorMemory(model) as probe:
        loss = probe_loss(model, batch, image_size, settings)
        forward = probe.peak_bytes  # no gradient exists yet
        probe.reset_peak()
        loss.backward()
    gradients = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    for parameter in model.parameters():
        parameter.grad = None
    return StepPeaks(forward, probe.peak_total_bytes - gradients)


@dataclass(frozen=True)
class ActivationModel:
    """Activations of a step at ``batch`` and an image size:
    ``batch * (per_token * tokens + per_token_pair * tokens**2 + per_sample) + fixed`` bytes, ``tokens`` the latent
    tokens. The quadratic term is attention materialised by a kernel that does (0 for fused kernels); ``fixed`` is
    what does not grow with the batch."""

    per_token: float
    per_token_pair: float
    per_sample: float
    fixed: float
    downsampling: int

    def tokens(self, image_size: tuple[int, int]) -> int:
        return (image_size[0] // self.downsampling) * (image_size[1] // self.downsampling)

    def bytes(self, batch: int, image_size: tuple[int, int]) -> float:
        tokens = self.tokens(image_size)
        return batch * (self.per_token * tokens + self.per_token_pair * tokens**2 + self.per_sample) + self.fixed

    @classmethod
    def fit(cls, measured: dict[tuple[int, tuple[int, int]], int], downsampling: int) -> "ActivationModel":
        """Least squares over measurements {(batch, image size): bytes} (at least three sizes and two batches)."""
        rows, values = [], []
        for (batch, (height, width)), value in measured.items():
            tokens = (height // downsampling) * (width // downsampling)
            rows.append([batch * tokens, batch * tokens**2, batch, 1.0])
            values.append([float(value)])
        design, target = torch.tensor(rows, dtype=torch.float64), torch.tensor(values, dtype=torch.float64)
        per_token, per_pair, per_sample, fixed = torch.linalg.lstsq(design, target).solution.squeeze(1).tolist()
        return cls(per_token, per_pair, per_sample, fixed, downsampling)


@dataclass(frozen=True)
class StepActivations:
    """The fitted forward and backward peaks of ``StepPeaks``: a step needs the larger one above its gradients."""

    forward: ActivationModel
    backward: ActivationModel

    def bytes(self, batch: int, image_size: tuple[int, int]) -> float:
        return max(self.forward.bytes(batch, image_size), self.backward.bytes(batch, image_size))

    def largest_batch(self, budget: float, image_size: tuple[int, int]) -> int:
        """The largest batch whose activations fit ``budget`` bytes (0: not even one sample)."""
        largest = None
        for model in (self.forward, self.backward):
            fixed = model.bytes(0, image_size)
            per_sample = model.bytes(1, image_size) - fixed
            if per_sample > 0:
                largest = min(largest or math.inf, math.floor((budget - fixed) / per_sample))
        return max(0, largest if largest is not None else 0)


# (batch, image size) of the fit: latent grids 16x12, 32x24 and 48x36 at batch 1, 16x12 at batch 2.
FIT_POINTS: tuple[tuple[int, tuple[int, int]], ...] = ((1, (128, 96)), (1, (256, 192)), (1, (384, 288)),
                                                       (2, (128, 96)))


def fit_activation_model(meta_model: nn.Module, settings: StepSettings,
                         points: tuple[tuple[int, tuple[int, int]], ...] = FIT_POINTS) -> StepActivations:
    """Measure probe steps of ``meta_model`` (a ``LeffaModel`` on the meta device, trainable set chosen; given fake
    CPU tensors here, in place) at ``points`` and fit."""
    with FakeTensorMode():
        model = on_fake_cpu(meta_model)
        measured = {(batch, size): measure_activations(model, batch, size, settings) for batch, size in points}
    downsampling = model.vae_scale_factor
    return StepActivations(*(ActivationModel.fit({key: getattr(peaks, side) for key, peaks in measured.items()},
                                                 downsampling) for side in ("forward", "backward")))


def on_fake_cpu(model: nn.Module) -> nn.Module:
    """``model`` (on the meta device) with fake CPU parameters and buffers of the same shapes, dtypes and
    ``requires_grad``; inside ``FakeTensorMode``. Assigned directly: ``Module.to`` cannot swap fake parameters."""
    for module in model.modules():
        for name, parameter in module._parameters.items():
            if parameter is not None:
                module._parameters[name] = nn.Parameter(torch.empty(parameter.shape, dtype=parameter.dtype),
                                                        requires_grad=parameter.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = torch.empty(buffer.shape, dtype=buffer.dtype)
    return model
