"""The Leffa loss: attention flow fields of the generative UNet must warp the reference onto the target.

Per selected self-attention layer (attention grid height / image height >= ``theta_resolution``):
flow from the layer's queries and reference keys at temperature ``tau`` (``attention_flow``),
bilinear upsampling to the target size, clamp to [-1, 1], ``grid_sample`` of the reference image,
masked distance to the target averaged over C, H, W. Then: mean over layers, zero for samples
with timestep >= ``theta_timestep``, mean over the batch, times ``weight``.

Only samples below the timestep threshold are computed at all; the others contribute zeros.

Memory: training scores each layer inside its attention layer (``LeffaLoss.scorer``, given to the model as
``attention_records``), so neither the layer's queries/keys nor its flow, warp and distance outlive the layer:
with the UNet's gradient checkpointing they are recomputed with the transformer block in backward, without it
each layer's loss is checkpointed on its own. Value and gradients are those of the direct computation
(tests/test_leffa_loss.py); ``make bench-leffa-stage`` measures what is left (docs/performance.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from leffa_pl.losses.attention_flow import attention_flow, token_grid
from leffa_pl.model.reference_attention import AttentionRecord

DISTANCES = ("smooth_l1", "l2")
PAPER_TRAIN_TIMESTEPS = 1000  # theta_timestep is given on the paper's 1000-step scale


@dataclass
class LeffaLayerOutput:
    """One selected layer. ``flow`` and ``warped`` are detached, for logging, and cover only the
    samples in ``LeffaLossOutput.active`` (in batch order)."""

    name: str
    grid: tuple[int, int]  # attention token grid (h, w)
    loss: torch.Tensor  # unweighted: batch mean of the masked distance (gated samples count as 0)
    flow: torch.Tensor  # [B_active, h, w, 2], (x, y) in [-1, 1] before upsampling
    warped: torch.Tensor | None  # [B_active, C, H, W] warped reference; None unless keep_warped


@dataclass
class LeffaLossOutput:
    """What ``LeffaLoss`` returns: the loss to add, and per selected layer what explains it."""

    loss: torch.Tensor  # weight * mean over layers of LeffaLayerOutput.loss
    layers: list[LeffaLayerOutput]
    active: torch.Tensor  # [B] bool, the samples below the timestep threshold


@dataclass(frozen=True)
class LeffaLossSettings:
    """The ``model.leffa_loss`` section of a training config: ``LeffaLoss``'s arguments (see there)."""

    tau: float = 2.0
    weight: float = 1e-3
    theta_resolution: float = 1 / 32
    theta_timestep: int = 500
    distance: str = "smooth_l1"

    def __post_init__(self) -> None:
        # Out of range, each would train silently wrong: a negative weight maximises the flow error, a threshold
        # outside (0, 1000] or a grid fraction outside (0, 1] selects no sample or no layer (a no-op stage).
        checks = {"tau": (math.isfinite(self.tau) and self.tau > 0, "a finite number > 0"),
                  "weight": (math.isfinite(self.weight) and self.weight >= 0, "a finite number >= 0"),
                  "theta_resolution": (0 < self.theta_resolution <= 1, "in (0, 1] (a fraction of the image height)"),
                  "theta_timestep": (0 < self.theta_timestep <= PAPER_TRAIN_TIMESTEPS,
                                     f"in (0, {PAPER_TRAIN_TIMESTEPS}] (the paper's timestep scale; 0 or less gives "
                                     "no sample the loss)"),
                  "distance": (self.distance in DISTANCES, f"one of {DISTANCES}")}
        for name, (valid, requirement) in checks.items():
            if not valid:
                raise ValueError(f"model.leffa_loss.{name}={getattr(self, name)!r}: must be {requirement}")


class LeffaLoss(nn.Module):
    """Leffa's flow-field loss on the generative UNet's attention records (see module docstring).

    Args:
        tau: softmax temperature (the logits are divided by it).
        weight: lambda, the factor applied to the loss before it is added to the diffusion loss.
        theta_resolution: a layer is used when its attention grid height / image height >= this.
        theta_timestep: samples with timestep >= this (on a 1000-step schedule) get no loss.
        distance: ``"smooth_l1"`` (beta 1, the authors' code) or ``"l2"`` (squared error, the paper).
    """

    def __init__(self, tau: float = 2.0, weight: float = 1e-3, theta_resolution: float = 1 / 32,
                 theta_timestep: float = 500, distance: str = "smooth_l1"):
        super().__init__()
        LeffaLossSettings(tau, weight, theta_resolution, theta_timestep, distance)  # its range checks
        self.tau = tau
        self.weight = weight
        self.theta_resolution = theta_resolution
        self.theta_timestep = theta_timestep
        self.distance = distance

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, weight={self.weight}, theta_resolution={self.theta_resolution}, "
                f"theta_timestep={self.theta_timestep}, distance={self.distance!r}")

    def select_layers(self, records: Sequence[AttentionRecord], image_size: tuple[int, int]
                      ) -> list[tuple[AttentionRecord, tuple[int, int]]]:
        """The records whose attention grid is fine enough, each with its (h, w) query grid."""
        selected = []
        for record in records:
            grid = token_grid(record.query.shape[2], image_size)
            if self.selects(grid, image_size):
                selected.append((record, grid))
        return selected

    def active_samples(self, timesteps: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
        """[B] bool: the samples whose timestep is below theta_timestep (rescaled to the schedule)."""
        return timesteps * PAPER_TRAIN_TIMESTEPS < self.theta_timestep * num_train_timesteps

    def scorer(self, reference: torch.Tensor, target: torch.Tensor, loss_region: torch.Tensor,
               timesteps: torch.Tensor, num_train_timesteps: int = 1000, keep_warped: bool = False,
               sample_mask: torch.Tensor | None = None, recompute: bool = True, grad: bool = True) -> LeffaScorer:
        """A ``LeffaScorer`` for one forward pass: pass it to the model as ``attention_records`` and every
        selected layer is scored as the UNet reaches it; ``scorer.result()`` then gives the loss.

        Args:
            reference: reference image [B, C, H', W'] (garment / person in another pose).
            target: target image [B, C, H, W], the size the model was run on.
            loss_region: M, [B, 1, H, W] (or [B, C, H, W]), where the reference should explain the target.
            timesteps: [B] diffusion timesteps of the forward pass.
            num_train_timesteps: length of the noise schedule the timesteps come from.
            keep_warped: keep detached warped references in the output (for an image log).
            sample_mask: [B] bool, False excludes a sample (e.g. its reference was dropped for CFG).
            recompute: checkpoint each layer's flow, warp and distance (recomputed in backward). Not needed
                when the UNet checkpoints its transformer blocks: the layer is then recomputed with its block.
            grad: False scores without gradient (an image log while the loss is off).
        """
        self._check_images(reference, target, loss_region, timesteps)
        active = self.active_samples(timesteps, num_train_timesteps)
        if sample_mask is not None:
            active = active & sample_mask.to(active.device, torch.bool)
        return LeffaScorer(self, reference, target, loss_region, active, keep_warped, recompute, grad)

    def forward(self, records: Sequence[AttentionRecord], reference: torch.Tensor, target: torch.Tensor,
                loss_region: torch.Tensor, timesteps: torch.Tensor, num_train_timesteps: int = 1000,
                keep_warped: bool = False, sample_mask: torch.Tensor | None = None,
                recompute: bool = True) -> LeffaLossOutput:
        """The loss of attention records collected in a list (``attention_records=[]``); arguments as ``scorer``."""
        if not records:
            raise ValueError("no attention records: pass attention_records=[] to LeffaModel.forward")
        names = [record.name for record in records]
        if len(set(names)) != len(names):
            raise ValueError("attention records repeat a layer; use a fresh list for every forward pass")
        scorer = self.scorer(reference, target, loss_region, timesteps, num_train_timesteps, keep_warped,
                             sample_mask, recompute)
        for record in records:
            scorer.append(record)
        return scorer.result()

    def selects(self, grid: tuple[int, int], image_size: tuple[int, int]) -> bool:
        """Whether a layer with attention grid ``grid`` (h, w) takes the loss on an image of ``image_size``."""
        # The tolerance keeps exact ratios such as 8/256 >= 1/32 from failing on float rounding.
        return grid[0] / image_size[0] >= self.theta_resolution * (1 - 1e-9)

    @staticmethod
    def active_index(active: torch.Tensor) -> torch.Tensor | None:
        """Indices of the active samples, or None when every sample counts (no copies)."""
        return None if active.all() else active.nonzero().squeeze(1)

    @staticmethod
    def _warp(reference: torch.Tensor, flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        grid = F.interpolate(flow.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).clamp(-1, 1)
        return F.grid_sample(reference, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.distance == "smooth_l1":
            return F.smooth_l1_loss(prediction, target, reduction="none", beta=1.0)
        return F.mse_loss(prediction, target, reduction="none")

    @staticmethod
    def _check_images(reference: torch.Tensor, target: torch.Tensor, loss_region: torch.Tensor,
                      timesteps: torch.Tensor) -> None:
        batch = target.shape[0]
        if target.dim() != 4 or reference.dim() != 4 or reference.shape[:2] != target.shape[:2]:
            raise ValueError(f"reference {tuple(reference.shape)} and target {tuple(target.shape)} must be "
                             "[B, C, H, W] with the same batch and channels")
        if (loss_region.dim() != 4 or loss_region.shape[0] != batch
                or loss_region.shape[1] not in (1, target.shape[1]) or loss_region.shape[-2:] != target.shape[-2:]):
            raise ValueError(f"loss_region {tuple(loss_region.shape)} does not match "
                             f"target {tuple(target.shape)}")
        if timesteps.shape != (batch,):
            raise ValueError(f"timesteps {tuple(timesteps.shape)} must be [{batch}]")


class LeffaScorer:
    """Scores attention records one layer at a time, as ``LeffaLoss.scorer`` describes.

    Given to the model as ``attention_records``, it receives each generative self-attention layer's record
    inside the layer (``append``), so the layer's flow, warp and distance are computed there and nothing of
    them outlives the layer but the per-sample distance (and the small detached flow): with the UNet's
    gradient checkpointing they are recomputed with the transformer block in backward, otherwise with
    ``recompute`` on each layer's loss is checkpointed on its own. A second record of a layer already scored
    is the checkpointed block being recomputed in backward: it is computed again (the recomputation needs
    the same operations) and not counted again.
    """

    def __init__(self, loss: LeffaLoss, reference: torch.Tensor, target: torch.Tensor, loss_region: torch.Tensor,
                 active: torch.Tensor, keep_warped: bool, recompute: bool, grad: bool):
        self.loss, self.active, self.keep_warped, self.recompute, self.grad = loss, active, keep_warped, recompute, grad
        self.batch, self.size = target.shape[0], tuple(target.shape[-2:])
        self.index = loss.active_index(active)
        # At least float32: the distance of bf16 images would be off; float64 inputs stay float64 (tests).
        dtype = torch.promote_types(target.dtype, torch.float32)
        self.reference, region = self._pick(reference).to(dtype), self._pick(loss_region).to(dtype)
        self.region, self.masked_target = region, self._pick(target).to(dtype) * region
        self.reference_size = tuple(reference.shape[-2:])
        self.layers: dict[str, LeffaLayerOutput] = {}

    def _pick(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.index is None else tensor[self.index]

    def append(self, record: AttentionRecord) -> None:
        """Score ``record`` if its layer is selected (the generative UNet's processors call this)."""
        if record.query.shape[0] != self.batch or record.key.shape[0] != self.batch:
            raise ValueError(f"{record.name}: record batch {record.query.shape[0]} != image batch {self.batch}")
        grid = token_grid(record.query.shape[2], self.size)
        if self.loss.selects(grid, self.size):
            with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
                self.layers.setdefault(record.name, self._score(record, grid))

    def _score(self, record: AttentionRecord, grid: tuple[int, int]) -> LeffaLayerOutput:
        if self.masked_target.shape[0] == 0:  # every sample is past the timestep threshold
            zeros = self.masked_target.new_zeros
            return LeffaLayerOutput(record.name, grid, zeros(()), zeros(0, *grid, 2),
                                    zeros(0, *self.masked_target.shape[1:]) if self.keep_warped else None)
        key_grid = token_grid(record.key.shape[2], self.reference_size)

        def terms(query: torch.Tensor, key: torch.Tensor):
            return self._layer_terms(query, key, record.scale / self.loss.tau, key_grid, grid)

        query, key = self._pick(record.query), self._pick(record.key)
        if self.recompute and torch.is_grad_enabled():
            per_sample, flow, warped = checkpoint(terms, query, key, use_reentrant=False,
                                                  preserve_rng_state=False)
        else:
            per_sample, flow, warped = terms(query, key)
        if torch.is_grad_enabled() and not per_sample.requires_grad and (query.requires_grad or key.requires_grad):
            raise RuntimeError(f"{record.name}: the Leffa loss lost its gradient; the UNet's gradient "
                               "checkpointing must be non-reentrant (diffusers' default)")
        return LeffaLayerOutput(record.name, grid, per_sample.sum() / self.batch, flow.detach(),
                                warped.detach() if warped is not None else None)

    def _layer_terms(self, query: torch.Tensor, key: torch.Tensor, scale: float, key_grid: tuple[int, int],
                     grid: tuple[int, int]):
        """Per-sample distance, flow [B, h, w, 2] and the warped reference if kept, of one layer."""
        # The flow is computed in float32 at least: bf16 coordinates would be off by pixels.
        dtype = torch.promote_types(query.dtype, torch.float32)
        flow = attention_flow(query.to(dtype), key.to(dtype), scale, key_grid)
        flow = flow.to(self.reference.dtype).reshape(-1, *grid, 2)
        warped = LeffaLoss._warp(self.reference, flow, self.size)
        per_sample = self.loss._distance(warped * self.region, self.masked_target).mean(dim=(1, 2, 3))
        return per_sample, flow, warped if self.keep_warped else None

    def result(self) -> LeffaLossOutput:
        """The loss over the layers scored so far (call after the forward pass)."""
        if not self.layers:
            raise ValueError(f"no attention layer has a grid of at least theta_resolution="
                             f"{self.loss.theta_resolution} of the {self.size} image")
        outputs = list(self.layers.values())
        loss = self.loss.weight * torch.stack([layer.loss for layer in outputs]).mean()
        return LeffaLossOutput(loss=loss, layers=outputs, active=self.active)
