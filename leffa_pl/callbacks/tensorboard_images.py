"""TensorBoard images: warped references and attention flows in training, generated samples in validation."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import flow_to_image, make_grid

from leffa_pl.metrics.flow_error import end_point_error, upsample_flow
from leffa_pl.training.step_outputs import TrainingStepOutput, ValidationStepOutput


def _to_unit(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (or [0, 1] masks) -> [0, 1], 3 channels."""
    image = image.float().cpu()
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    return (image.clamp(-1, 1) + 1) / 2


def flow_colour(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[h, w, 2] normalised sampling positions -> displacement colour image [3, H, W] in [0, 1]."""
    height, width = size
    positions = upsample_flow(flow[None].float(), size)[0]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    displacement = (positions.cpu() - torch.stack([xs, ys])) * torch.tensor([width / 2, height / 2]).view(2, 1, 1)
    return flow_to_image(displacement).float() / 255


class LeffaImageLogger(pl.Callback):
    """Logs every ``every_n_steps`` optimizer steps, for the first sample that the Leffa loss covers:
    reference | target | loss region | per layer (the first ``max_layers``): warped reference, flow colour.
    Also the attention-flow end-point error when the batch carries a ground-truth ``flow``.
    At validation: target | reference | generated for the first batch of each validation loader.

    The module computes the images (``set_image_interval``) and returns them in its step outputs
    (``leffa_pl.training.step_outputs``); without this callback it keeps none.
    """

    def __init__(self, every_n_steps: int = 100, max_layers: int = 16):
        self.every_n_steps, self.max_layers = every_n_steps, max_layers

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._step = 0
        if not callable(getattr(pl_module, "set_image_interval", None)):
            raise TypeError(f"LeffaImageLogger needs a LightningModule with set_image_interval(); got "
                            f"{type(pl_module).__name__}")
        pl_module.set_image_interval(self.every_n_steps)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx):
        # The step the images are computed at, which Lightning stamps this batch's scalars with; by the batch's end
        # the optimizer step has moved trainer.global_step on by one.
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: TrainingStepOutput,
                           batch, batch_idx):
        leffa = outputs["leffa"]
        if leffa is None or not outputs["log_images"]:
            return
        active = leffa.active.nonzero().squeeze(1)
        if "flow" in batch and len(active):
            errors = {f"flow_epe/{layer.name}": end_point_error(layer.flow, batch["flow"][active]).nanmean()
                      for layer in leffa.layers}
            errors["flow_epe/mean"] = torch.stack(list(errors.values())).nanmean()
            # To the loggers directly: self.log keeps a step value and sends it again at every later logging step
            # of the epoch, so images-only steps would repeat it.
            for each in trainer.loggers:
                each.log_metrics({name: float(value) for name, value in errors.items()}, step=self._step)
        logger = _tensorboard(trainer)
        if logger is None or not len(active) or not trainer.is_global_zero:
            return
        first = int(active[0])
        size = tuple(batch["person"].shape[-2:])
        tiles = [_to_unit(batch["reference"][first]), _to_unit(batch["person"][first]),
                 _to_unit(batch["loss_region"][first])]
        for layer in leffa.layers[: self.max_layers]:
            tiles += [_to_unit(layer.warped[0]), flow_colour(layer.flow[0], size)]
        shown = leffa.layers[: self.max_layers]
        names = ", ".join(f"{layer.name} ({layer.grid[0]}x{layer.grid[1]})" for layer in shown)
        logger.experiment.add_image("train/leffa_warped_references", make_grid(tiles, nrow=3 + 2 * 4, padding=2),
                                    self._step)
        logger.experiment.add_text("train/leffa_layers", f"reference, target, region, then per layer "
                                   f"(warped, flow): {names}", self._step)

    def on_validation_batch_end(self, trainer, pl_module, outputs: ValidationStepOutput, batch, batch_idx,
                                dataloader_idx=0):
        logger = _tensorboard(trainer)
        if logger is None or batch_idx != 0 or not trainer.is_global_zero or trainer.sanity_checking:
            return
        rows = [torch.stack([_to_unit(batch["person"][i]), _to_unit(batch["reference"][i]),
                             _to_unit(outputs["generated"][i])]) for i in range(len(outputs["generated"]))]
        tag = f"val/{getattr(trainer.datamodule, 'val_names', ['paired', 'unpaired'])[dataloader_idx]}"
        # in fit, the step of the training batch this validation follows: the one its scalars are stamped with
        step = self._step if trainer.state.fn == "fit" else trainer.global_step
        logger.experiment.add_image(tag, make_grid(torch.cat(rows), nrow=3, padding=2), step)


def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
