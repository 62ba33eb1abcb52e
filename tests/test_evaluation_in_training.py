"""ValidationScores: scores of the generated validation samples reach TensorBoard."""

import urllib.error

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from metrics_support import backbone_file, forbid_network
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from leffa_pl.evaluation.in_training import ValidationScores
from leffa_pl.metrics.suite import MetricSuite, quantize_images
from leffa_pl.testing.training import RandomTryOnDataset


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path)


class NoisyGenerator(pl.LightningModule):
    """Returns the target with fixed noise as its "generated" validation sample, like LeffaModule."""

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        noise = torch.randn(batch["person"].shape, generator=torch.Generator().manual_seed(batch_idx)) * 0.1
        return {"generated": (batch["person"] + noise).clamp(-1, 1)}


def test_paired_scores_are_logged_and_the_second_loader_is_ignored(tmp_path):
    squeeze = backbone_file(tmp_path, "squeezenet1_1")[0]
    paired = DataLoader(RandomTryOnDataset(5, (64, 48)), batch_size=2)
    unpaired = DataLoader(RandomTryOnDataset(3, (64, 48)), batch_size=2)
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(accelerator="cpu", logger=logger,
                         callbacks=[ValidationScores(lpips_weights=squeeze)],
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(NoisyGenerator(), dataloaders=[paired, unpaired])
    logger.experiment.flush()

    expected = MetricSuite(["psnr"])
    for batch_idx, batch in enumerate(paired):
        expected.update(quantize_images(NoisyGenerator().validation_step(batch, batch_idx)["generated"]),
                        quantize_images(batch["person"]))
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"val_scores/ssim_gaussian", "val_scores/lpips", "val_scores/psnr"} <= set(scalars)
    assert "val_scores/fid" not in scalars
    assert [e.value for e in events.Scalars("val_scores/n_generated")] == [5]
    psnr = expected.compute().values["psnr"]
    assert events.Scalars("val_scores/psnr")[0].value == pytest.approx(psnr, rel=1e-5)
    report = events.Tensors(next(t for t in events.Tags()["tensors"] if t.startswith("val_scores/")))
    assert b"too small for FID" in report[0].tensor_proto.string_val[0]


def test_lpips_weights_that_cannot_be_downloaded_are_a_console_warning_naming_the_file_and_the_option(monkeypatch):
    def offline(url, destination, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    scores = ValidationScores(allow_download=True)
    with pytest.warns(UserWarning, match=r"val_scores/lpips is not computed in this run .*SqueezeNet .*download "
                                         r"of https://download\.pytorch\.org/models/squeezenet1_1-b8a52dc0\.pth "
                                         r"failed .*--scores\.lpips_weights PATH"):
        scores.setup(None, None, "fit")
    assert "lpips" in scores.suite.unavailable
