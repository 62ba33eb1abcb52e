"""A step whose loss or gradients are not finite is skipped, counted and logged; N in a row stop the run.

Skipping clears the gradients before the optimizer step (``LeffaModule.on_before_optimizer_step``): every optimizer
here (AdamW, bitsandbytes' 8-bit AdamW) leaves a parameter without a gradient untouched, moments included, so the
weights and optimizer state stay those of the last good step whatever the optimizer. Under ``16-mixed`` the
gradients are left to the GradScaler (an overflow there is its scale search, not a failure); the loss is checked.
The decision is reduced over the ranks, so every rank skips or stops together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

ADVICE = ("Lower the learning rate (model.learning_rate; 1e-6 cured NaN losses of SDXL try-on training, IDM-VTON "
          "#142), raise Adam's epsilon (model.optimizer_eps; 1e-4 cured 8-bit AdamW's NaN after ~2k steps there, "
          "and is adamw8bit's default), check the data (leffa-pl-check-data), or use bf16-mixed instead of "
          "16-mixed precision")


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf for too many steps in a row; raised on every rank so that DDP stops cleanly."""


@dataclass
class NonFiniteGuard:
    """The counters of ``LeffaModule``'s guard (``max_in_a_row``: ``model.max_non_finite_steps``)."""

    max_in_a_row: int
    skipped: int = 0  # skipped optimizer steps of the run (kept in checkpoints)
    in_a_row: int = 0
    first_in_a_row: int | None = None  # the optimizer step the current run of skips started at
    last_problem: str = ""
    _loss_finite: torch.Tensor | None = field(default=None, repr=False)  # over the accumulated micro-batches
    _loss_values: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.max_in_a_row < 1:
            raise ValueError(f"model.max_non_finite_steps must be >= 1, got {self.max_in_a_row}")

    def record_loss(self, total: torch.Tensor, mse: torch.Tensor, leffa: torch.Tensor | None) -> None:
        """Each micro-batch's loss (no device sync here: the check is one per optimizer step)."""
        finite = torch.isfinite(total.detach())
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        self._loss_values = (total.detach(), mse.detach(), None if leffa is None else leffa.detach())

    def step_is_finite(self, parameters: list[torch.Tensor], check_gradients: bool) -> bool:
        """Whether this rank's accumulated loss and (``check_gradients``) gradients are finite."""
        finite = self._loss_finite if self._loss_finite is not None else torch.tensor(True)
        loss_finite = bool(finite)
        gradients_finite = True
        if check_gradients:
            gradients = [p.grad for p in parameters if p.grad is not None]
            if gradients:
                norm = torch.nn.utils.get_total_norm(gradients)
                gradients_finite = bool(torch.isfinite(norm))
                self.last_problem = "" if gradients_finite else f"gradient norm {norm.item():.6g}"
        if not loss_finite:
            total, mse, leffa = (value.item() if value is not None else None for value in self._loss_values)
            leffa_text = f"{leffa:.6g}" if leffa is not None else "off"
            self.last_problem = f"loss (total {total:.6g}, mse {mse:.6g}, leffa {leffa_text})"
        self._loss_finite = None
        return loss_finite and gradients_finite

    def passed(self) -> None:
        self.in_a_row, self.first_in_a_row = 0, None

    def skip(self, step: int, rank_problem: str) -> str:
        self.skipped += 1
        self.in_a_row += 1
        self.first_in_a_row = step if self.first_in_a_row is None else self.first_in_a_row
        problem = rank_problem or "a non-finite loss or gradient on another rank"
        return (f"skipped optimizer step {step}: non-finite {problem}; weights and optimizer state kept "
                f"({self.in_a_row} in a row of at most {self.max_in_a_row}, {self.skipped} skipped in all)")

    @property
    def exhausted(self) -> bool:
        return self.in_a_row >= self.max_in_a_row

    def stop_message(self, step: int, checkpoint: Path, rank: int) -> str:
        return (f"non-finite loss or gradient at step {step} (rank {rank}: {self.last_problem or 'another rank'}): "
                f"{self.in_a_row} optimizer steps in a row skipped (steps {self.first_in_a_row}-{step}), at most "
                f"{self.max_in_a_row} (model.max_non_finite_steps); the run stopped. {checkpoint} holds the weights "
                f"and optimizer state of the last good step: resume it with --ckpt_path after a change. {ADVICE}.")
