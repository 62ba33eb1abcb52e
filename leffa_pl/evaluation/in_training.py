"""Scores of the validation samples generated in training, logged to the Lightning logger (TensorBoard)."""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from leffa_pl.datasets.registry import get_protocol
from leffa_pl.evaluation.metric_suite import build_metric_suite
from leffa_pl.evaluation.report import ScoreResult, log_results
from leffa_pl.metrics.perceptual import build_lpips_network
from leffa_pl.metrics.suite import SET_METRICS, MetricSuite, quantize_images
from leffa_pl.training.step_outputs import ValidationStepOutput

SET_METRICS_REASON = ("not computed inside training: the validation subset is too small for FID/KID. "
                      "Run leffa-pl-evaluate on a checkpoint")


class ValidationScores(pl.Callback):
    """SSIM / LPIPS / PSNR of the generated validation samples of the first (paired) validation loader against
    their targets, under ``protocol``'s settings; logged as ``<prefix>/<metric>`` with the Markdown report.

    Reads the ``generated`` images of ``LeffaModule.validation_step``'s ``ValidationStepOutput``. The metric
    states sync across DDP ranks, so the values cover every rank's samples. Missing LPIPS weights (not given, not
    cached, download off or failed) are a console warning at set-up, naming the file and how to give it, and
    "not computed" in the logged report.
    """

    def __init__(self, protocol: str = "vton-paired", lpips_weights: str | os.PathLike | None = None,
                 allow_download: bool = False, prefix: str = "val_scores") -> None:
        self.protocol = get_protocol(protocol)
        self.lpips_weights, self.allow_download, self.prefix = lpips_weights, allow_download, prefix
        self.suite: MetricSuite | None = None
        self.resolution: tuple[int, int] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        def lpips_network():
            return build_lpips_network(self.protocol.lpips_net, self.lpips_weights, self.allow_download,
                                       option="--scores.lpips_weights")

        self.suite = build_metric_suite(self.protocol, lpips_network=lpips_network,
                                        not_computed=dict.fromkeys(SET_METRICS, SET_METRICS_REASON))
        if "lpips" in self.suite.unavailable:
            rank_zero_warn(f"{self.prefix}/lpips is not computed in this run (the other validation scores "
                           f"are): {self.suite.unavailable['lpips']}")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.suite.to(pl_module.device).reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs: ValidationStepOutput, batch, batch_idx,
                                dataloader_idx=0) -> None:
        if dataloader_idx != 0:
            return
        self.resolution = tuple(outputs["generated"].shape[-2:])
        self.suite.update(quantize_images(outputs["generated"]), quantize_images(batch["person"]))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.resolution is None or trainer.sanity_checking:
            return
        result = ScoreResult.from_metrics(self.protocol.name, self.resolution, self.suite.compute(),
                                          {"images": "the generated validation samples of the first loader"})
        if trainer.is_global_zero and trainer.logger is not None:
            log_results(result, trainer.logger, step=trainer.global_step, prefix=self.prefix)
