"""A fourth dataset is one folder (tests/toy_dataset/) plus one registry line: make-synthetic writes it,
check-data walks it, a training step runs on it and predict generates its test pairs, with no other file
changed."""

import dataclasses

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image
from toy_dataset import spec as toy

from leffa_pl.data import check_data, make_synthetic
from leffa_pl.data.registry import build_data_module
from leffa_pl.datasets import registry
from leffa_pl.evaluation import evaluate
from leffa_pl.evaluation.predict import LeffaPredictor, PredictionOptions, predict_pairs
from leffa_pl.model.sampler import SamplerSettings
from leffa_pl.training.leffa_module import LeffaModule

SIZE = (64, 48)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    registry.register(toy.SPEC)  # the one registry line
    out = tmp_path_factory.mktemp("synthetic")
    assert make_synthetic.main(["--out", str(out), "--datasets", "toy", "--size", "64x48", "--train", "4",
                                "--test", "2"]) == 0
    yield out / "toy"
    registry.unregister("toy")


def data(root, **settings):
    return build_data_module("toy", str(root), resolution=SIZE, batch_size=2, num_workers=0, pin_memory=False,
                             augment=False, **settings)


def test_the_commands_know_the_toy_dataset(root):
    assert registry.get("toy") is toy.SPEC and "toy" in registry.names()
    assert registry.register(toy.SPEC) is toy.SPEC  # again: a no-op
    with pytest.raises(ValueError, match="'toy' is registered already"):
        registry.register(dataclasses.replace(toy.SPEC, title="Another toy"))
    assert evaluate.protocol_for("toy", "paired") == "vton-paired"
    with pytest.raises(ValueError, match="category does not apply"):
        data(root, category="dresses")


def test_check_data_walks_it_and_finds_a_missing_file(root, tmp_path, capsys):
    assert check_data.main([str(root), "--dataset", "toy"]) == 0
    broken = tmp_path / "toy"
    broken.mkdir()
    for split in ("train", "test"):
        (broken / f"{split}_pairs.txt").write_text("gone.png gone.png\n")
    assert check_data.main([str(broken), "--dataset", "toy", "--level", "exists"]) == 1
    assert "gone.png" in capsys.readouterr().out


def test_a_training_step_then_predict(root, tmp_path):
    torch.manual_seed(0)
    module = LeffaModule(learning_rate=1e-3)
    before = {k: v.clone() for k, v in module.model.unet.state_dict().items()}
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, data(root))
    assert trainer.global_step == 1
    assert any(not torch.equal(before[k], v) for k, v in module.model.unet.state_dict().items())

    predictor = LeffaPredictor(module.model.eval(), SamplerSettings(num_inference_steps=2, guidance_scale=1.0),
                               seed=42)
    plan = predict_pairs(data(root), predictor, tmp_path / "predicted",
                         PredictionOptions(batch_size=2, accelerator="cpu", progress=False))
    assert sorted(path.name for path in plan.files) == ["test000__to__test000.png", "test001__to__test001.png"]
    assert all(np.asarray(Image.open(path)).shape == (*SIZE, 3) for path in plan.files)
