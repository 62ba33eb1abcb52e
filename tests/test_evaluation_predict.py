"""Prediction (resumable PNGs, per-pair seeds, DDP shards) and the leffa-pl-evaluate entry point, on the tiny
model and generated VITON-HD data in the real layout."""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from metrics_support import backbone_file, forbid_network
from PIL import Image
from subprocess_limits import run_with_limit

from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic
from leffa_pl.evaluation import evaluate
from leffa_pl.evaluation.predict import (
    LeffaPredictor,
    OutputFolderError,
    PredictionOptions,
    output_name,
    plan_predictions,
    predict_pairs,
    safe_id,
)
from leffa_pl.evaluation.score import target_id
from leffa_pl.model.checkpoint import CheckpointError
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.loading import load_model
from leffa_pl.model.sampler import SamplerSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 48)
N_TEST = 3  # batch size 2 does not divide it
SETTINGS = SamplerSettings(num_inference_steps=2, guidance_scale=1.0)  # no guidance: half the compute


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return vitonhd_synthetic.make_vitonhd(tmp_path_factory.mktemp("data") / "zalando-hd-resized", n_train=1,
                                    n_test=N_TEST, size=SIZE, seed=5)


@pytest.fixture(scope="module")
def model():
    return load_model(None)[0]


class CountingPredictor(LeffaPredictor):
    """Counts the pairs it generates; raises after ``fail_after`` batches (an interrupted run); sends itself
    SIGTERM during batch ``sigterm_at``."""

    def __init__(self, model, fail_after=None, sigterm_at=None):
        super().__init__(model, SETTINGS, seed=42)
        self.generated, self.batches, self.fail_after, self.sigterm_at = 0, 0, fail_after, sigterm_at

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        if self.fail_after is not None and self.batches == self.fail_after:
            raise RuntimeError("interrupted")
        if self.batches == self.sigterm_at:
            # Lightning's handler (installed in the main thread only) must be there, or this ends the test run
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
            os.kill(os.getpid(), signal.SIGTERM)
        self.batches += 1
        self.generated += len(batch["person_id"])
        return super().predict_step(batch, batch_idx, dataloader_idx)


def data(root, pairing="unpaired"):
    return VitonHDDataModule(str(root), resolution=SIZE, num_workers=0, pin_memory=False, augment=False,
                             test_pairing=pairing)


def run(root, model, out, batch_size, **kwargs):
    predictor = CountingPredictor(model, **kwargs)
    options = PredictionOptions(batch_size=batch_size, accelerator="cpu", progress=False)
    plan = predict_pairs(data(root), predictor, out, options)
    return predictor, plan


def images(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))}


def assert_same_image(image, expected, name):
    """The same noise and model; only float rounding of batched arithmetic may move a pixel by one level."""
    difference = np.abs(image.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.005, name


@pytest.fixture(scope="module")
def reference_dir(root, model, tmp_path_factory):
    """One pair per batch."""
    out = tmp_path_factory.mktemp("reference")
    run(root, model, out, batch_size=1)
    return out


@pytest.fixture(scope="module")
def reference(reference_dir):
    return images(reference_dir)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "out")
    return tmp_path / "out"


def test_names_are_the_sanitised_ids_and_score_finds_the_target():
    assert safe_id("00006_00.jpg") == "00006_00"
    assert safe_id("WOMEN/Dresses/id_01/02_1 front.JPG") == "WOMEN_Dresses_id_01_02_1_front"
    assert safe_id("odd__to__name.png") == "odd_to_name"
    assert safe_id("v1.2.jpeg") == "v1.2"
    name = output_name(person_id="00024_00.jpg", reference_id="00031_00.jpg")
    assert name == "00031_00__to__00024_00.png"
    assert target_id(Path(name)) == "00024_00"
    with pytest.raises(ValueError, match="no usable file name"):
        safe_id("..")


def test_every_pair_gets_one_png_and_a_rerun_generates_nothing(root, model, reference, tmp_path):
    dataset = data(root).predict_dataloader().dataset
    expected = {output_name(*dataset.sample_ids(index)) for index in range(N_TEST)}
    predictor, plan = run(root, model, tmp_path, batch_size=2)
    assert predictor.generated == N_TEST and predictor.batches == 2
    assert set(images(tmp_path)) == expected == set(reference) and len(plan.files) == N_TEST
    assert all(image.shape == (*SIZE, 3) and image.dtype == np.uint8 for image in images(tmp_path).values())
    # the same image for a pair whatever the batch it fell in
    for name, image in images(tmp_path).items():
        assert_same_image(image, reference[name], name)

    stamps = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("*.png")}
    again, plan = run(root, model, tmp_path, batch_size=2)
    assert again.generated == 0 and again.batches == 0
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("*.png")} == stamps
    assert plan.pending == [] and len(plan.files) == N_TEST

    other = LeffaPredictor(model, SamplerSettings(num_inference_steps=3, guidance_scale=1.0), seed=42)
    with pytest.raises(OutputFolderError, match="other settings .*'num_inference_steps': 2.*3"):
        predict_pairs(data(root), other, tmp_path, PredictionOptions(accelerator="cpu", progress=False))


def test_an_interrupted_run_resumes_and_finishes(root, model, reference, tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):
        run(root, model, tmp_path, batch_size=2, fail_after=1)
    assert len(list(tmp_path.glob("*.png"))) == 2  # the first batch was written whole
    stale = tmp_path / f".{sorted(reference)[-1]}.1234.tmp"  # a rename that never happened
    stale.write_bytes(b"\x89PNG half")
    assert len(plan_predictions(data(root).predict_dataloader().dataset, tmp_path).pending) == N_TEST - 2

    predictor, _ = run(root, model, tmp_path, batch_size=2)
    assert predictor.generated == N_TEST - 2
    assert not stale.exists()
    resumed = images(tmp_path)
    assert set(resumed) == set(reference)
    for name, image in resumed.items():
        assert_same_image(image, reference[name], name)


def test_sigterm_stops_after_the_batch_in_progress_keeping_its_pngs(root, model, reference, tmp_path):
    with pytest.raises(SIGTERMException):  # leffa-pl-evaluate turns it into exit status 143
        run(root, model, tmp_path, batch_size=2, sigterm_at=0)
    assert len(list(tmp_path.glob("*.png"))) == 2  # the batch in progress, not the next one
    resumed, _ = run(root, model, tmp_path, batch_size=2)
    assert resumed.generated == 1 and set(images(tmp_path)) == set(reference)


def test_other_weights_under_the_same_description_are_refused(root, reference_dir, tmp_path):
    # as retraining into the same checkpoint path: the description (the path) is the same, the weights are not
    folder = copy_of(reference_dir, tmp_path)
    retrained = load_model(None)[0]
    with torch.no_grad():
        retrained.unet.conv_out.bias.add_(1e-3)
    description = json.loads((folder / "prediction.json").read_text())["model"]
    predictor = LeffaPredictor(retrained, SETTINGS, seed=42, description=description)
    with pytest.raises(OutputFolderError, match="other settings .*weights_sha256"):
        predict_pairs(data(root), predictor, folder, PredictionOptions(accelerator="cpu", progress=False))


def test_a_damaged_png_in_the_output_folder_says_delete_it_and_rerun(root, model, reference_dir, tmp_path):
    folder = copy_of(reference_dir, tmp_path)
    damaged = sorted(folder.glob("*.png"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-40])  # truncated
    with pytest.raises(OutputFolderError, match=f"{damaged}: a damaged PNG .*delete it and rerun"):
        run(root, model, folder, batch_size=2)


def test_checkpoints_ours_with_ema_and_released_layout(tmp_path):
    torch.manual_seed(1)
    ema = LeffaModel.tiny()
    # as Lightning's EMAWeightAveraging saves: the average in state_dict, the raw weights beside it
    torch.save({"state_dict": {f"model.{k}": v for k, v in ema.state_dict().items()},
                "current_model_state": {f"model.{k}": v + 1 for k, v in ema.state_dict().items()},
                "hyper_parameters": {"base_model": None}, "global_step": 7}, tmp_path / "last.ckpt")
    loaded, description = load_model(tmp_path / "last.ckpt")
    assert "step 7, EMA weights" in description and "tiny" in description
    loaded_state = loaded.state_dict()
    assert all(torch.equal(loaded_state[key], value) for key, value in ema.state_dict().items())

    # LeffaEMA's layout: the raw weights in state_dict, the trainable weights' average beside them
    shadow = {"model.unet.conv_in.weight": ema.unet.conv_in.weight.detach() + 1}
    torch.save({"state_dict": {f"model.{k}": v for k, v in ema.state_dict().items()}, "ema": {"shadow": shadow},
                "hyper_parameters": {"base_model": None}, "global_step": 8}, tmp_path / "step=8.ckpt")
    loaded, description = load_model(tmp_path / "step=8.ckpt")
    assert "step 8, EMA weights" in description
    assert torch.equal(loaded.unet.conv_in.weight, shadow["model.unet.conv_in.weight"])
    assert torch.equal(loaded.unet.conv_out.weight, ema.unet.conv_out.weight)

    exported = ema.export(tmp_path / "leffa.safetensors")
    loaded, _ = load_model(exported)
    torch.testing.assert_close(loaded.unet.conv_in.weight, ema.unet.conv_in.weight, rtol=0, atol=0)

    with pytest.raises(CheckpointError, match="nowhere.pth: no such file"):
        load_model(tmp_path / "nowhere.pth")
    torch.save({"unet.conv_in.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth: does not match the model.*--base-model"):
        load_model(tmp_path / "other.pth")


def evaluate_args(root, out, *extra):
    return ["--dataset", "vitonhd", "--data", str(root), "--out", str(out), "--resolution", "64x48",
            "--steps", "2", "--guidance-scale", "1", "--batch-size", "2", "--num-workers", "0",
            "--accelerator", "cpu", "--offline", "--cache-dir", str(out / "cache"), *extra]


def test_evaluate_predicts_and_scores_both_pairings(root, reference, tmp_path, capsys):
    squeeze = backbone_file(tmp_path, "squeezenet1_1")[0]
    for name in reference:  # the unpaired images exist already (same seed and settings): only scored
        (tmp_path / "eval" / "unpaired").mkdir(parents=True, exist_ok=True)
        Image.fromarray(reference[name]).save(tmp_path / "eval" / "unpaired" / name)
    stamps = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "eval" / "unpaired").glob("*.png")}
    assert evaluate.main(evaluate_args(root, tmp_path / "eval", "--lpips-weights", str(squeeze))) == 0
    for pairing, computed in (("paired", {"ssim_vtoneval", "ssim_gaussian", "lpips", "psnr"}), ("unpaired", set())):
        folder = tmp_path / "eval" / pairing
        stored = json.loads((folder / "metrics.json").read_text())
        assert stored["n_generated"] == N_TEST and stored["resolution"] == list(SIZE)
        assert stored["protocol"] == f"vton-{pairing}" and stored["n_real"] == N_TEST
        assert set(stored["values"]) == computed
        assert set(stored["not_computed"]) == {"fid", "kid"}  # offline, no Inception weights
        assert "--inception-weights" in stored["not_computed"]["fid"]
        assert "random weights" in stored["details"]["model"]
        assert f"n = {N_TEST} generated images" in (folder / "metrics.md").read_text()
        assert len(list(folder.glob("*.png"))) == N_TEST

    assert {path.name: path.stat().st_mtime_ns
            for path in (tmp_path / "eval" / "unpaired").glob("*.png")} == stamps

    assert evaluate.main(evaluate_args(root / "missing", tmp_path / "bad")) == 2
    assert "missing: no such data folder (--data)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_two_ddp_processes_write_each_pair_once(root, reference, tmp_path):
    # unpaired: one pair left for two ranks (one rank idle); paired: all pairs, sharded 2 + 1
    (tmp_path / "unpaired").mkdir()
    for name in sorted(reference)[:-1]:
        Image.fromarray(reference[name]).save(tmp_path / "unpaired" / name)
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
                   "TORCH_HOME": str(tmp_path / "torch-home")}
    command = [sys.executable, "-m", "leffa_pl.evaluation.evaluate",
               *evaluate_args(root, tmp_path, "--devices", "2", "--pairing", "both")]
    finished = run_with_limit(command, 120, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "2 already written, 1 generated now" in finished.stderr
    generated = images(tmp_path / "unpaired")
    assert set(generated) == set(reference)
    assert_same_image(generated[sorted(reference)[-1]], reference[sorted(reference)[-1]], "the one generated")
    for pairing in ("paired", "unpaired"):
        assert len(list((tmp_path / pairing).glob("*.png"))) == N_TEST
        assert json.loads((tmp_path / pairing / "metrics.json").read_text())["n_generated"] == N_TEST


def test_evaluate_deepfashion_scores_every_test_pair_against_the_training_images(tmp_path):
    from leffa_pl.datasets.deepfashion import synthetic as synthetic_deepfashion

    root = synthetic_deepfashion.make_deepfashion(tmp_path / "deepfashion", train_people=1, test_people=1,
                                               views=2, size=(110, 75), seed=2)
    out = tmp_path / "eval"
    assert evaluate.main(["--dataset", "deepfashion", "--data", str(root), "--out", str(out), "--resolution",
                          "80x56", "--steps", "1", "--guidance-scale", "1", "--num-workers", "0",
                          "--accelerator", "cpu", "--offline", "--cache-dir", str(tmp_path / "cache")]) == 0
    pairs = [line.split(",") for line in (root / "fasion-resize-pairs-test.csv").read_text().split()[1:]]
    assert sorted(path.name for path in out.glob("*.png")) == sorted(
        f"{Path(source).stem}__to__{Path(target).stem}.png" for source, target in pairs)
    stored = json.loads((out / "metrics.json").read_text())
    assert (stored["protocol"], stored["n_generated"], stored["n_paired"]) == ("deepfashion", 2, 2)
    assert stored["n_real"] == len((root / "train.lst").read_text().split())  # all training images
    assert set(stored["values"]) == {"ssim_gaussian", "ssim_uniform51", "psnr"}


def test_evaluate_refuses_what_training_would_and_unwritable_output_before_generating(root, tmp_path, capsys):
    assert evaluate.main(evaluate_args(root, tmp_path / "odd", "--resolution", "60x44")) == 2
    assert "--resolution 60x44: height and width must be multiples of 8" in capsys.readouterr().err
    assert not list((tmp_path / "odd").rglob("*.png"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert evaluate.main(evaluate_args(root, blocker / "out")) == 2
    assert f"{blocker / 'out'}: the output folder cannot be written" in capsys.readouterr().err
