"""Regression test of the Leffa loss's effect: from a near-correct init it moves attention flow toward the truth.

The init is seeded as in ``make exp-flow`` (experiments/teacher_flow.py: attention-flow supervision toward the
ground truth shifted by a few pixels) on one fixed batch of synthetic VITON-HD pairs; then a few steps of the
Leffa loss alone must lower that batch's attention-flow EPE, and the same steps of the diffusion loss alone
must not. A sign, coordinate-order or layer-selection bug in the loss breaks the first half.
"""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic
from leffa_pl.losses.leffa_loss import LeffaLossSettings
from leffa_pl.metrics.flow_error import end_point_error
from leffa_pl.training.leffa_module import LeffaModule

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
RESOLUTION = (64, 48)


def load_teacher_flow():
    spec = importlib.util.spec_from_file_location("teacher_flow", EXPERIMENTS / "teacher_flow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    root = vitonhd_synthetic.make_vitonhd(tmp_path_factory.mktemp("effect") / "zalando-hd-resized", n_train=1, n_test=4,
                                    size=(128, 96), seed=5)
    data = VitonHDDataModule(root=str(root), resolution=RESOLUTION, batch_size=4, num_workers=0, val_size=1)
    data.setup("test")
    return next(iter(data.test_dataloader()))


class FixedBatchSteps:
    """Steps on one batch with fixed noise and timesteps (t < 500, every reference kept)."""

    def __init__(self, module: LeffaModule, batch: dict):
        self.module, self.batch = module, batch
        generators = [torch.Generator().manual_seed(zlib.crc32(pid.encode())) for pid in batch["person_id"]]
        timesteps = torch.tensor([50, 150, 250, 350])
        self.inputs = module.diffusion_inputs(batch, generators, timesteps, reference_dropout=0.0)

    def forward(self):
        noisy, noise, timesteps, conditioning, _ = self.inputs
        records = []
        prediction = self.module.model(noisy, timesteps, conditioning, attention_records=records)
        leffa = self.module.leffa_loss(records, self.batch["reference"], self.batch["person"],
                                       self.batch["loss_region"], timesteps)
        return records, F.mse_loss(prediction, noise), leffa

    def epe(self) -> float:
        with torch.no_grad():
            _, _, leffa = self.forward()
        return torch.stack([end_point_error(layer.flow, self.batch["flow"]) for layer in leffa.layers]).mean().item()

    def train(self, steps: int, lr: float, loss_of) -> None:
        optimizer = torch.optim.Adam(self.module.model.parameters(), lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            loss_of(*self.forward()).backward()
            optimizer.step()


def test_leffa_steps_lower_the_flow_error_from_a_near_correct_init_and_diffusion_steps_do_not(batch):
    teacher_flow = load_teacher_flow()
    torch.manual_seed(0)
    module = LeffaModule(leffa_loss=LeffaLossSettings(weight=1.0))
    steps = FixedBatchSteps(module, batch)
    teacher = teacher_flow.shifted_flow(batch["flow"], (2.0, 2.0))
    select = module.leffa_loss.select_layers

    def teacher_loss(records, mse, leffa):
        flows = teacher_flow.layer_flows(records, select, RESOLUTION, RESOLUTION, module.leffa_loss.tau)
        return teacher_flow.flow_supervision_loss(flows, teacher)

    start = steps.epe()
    steps.train(30, 3e-3, teacher_loss)
    init, init_state = steps.epe(), {k: v.clone() for k, v in module.model.state_dict().items()}
    assert init < 0.7 * start, f"teacher seeding failed: EPE {start:.2f} -> {init:.2f}"

    steps.train(10, 3e-4, lambda records, mse, leffa: leffa.loss)
    with_leffa = steps.epe()
    module.model.load_state_dict(init_state)
    steps.train(10, 3e-4, lambda records, mse, leffa: mse)
    without = steps.epe()
    assert with_leffa < init - 0.5, f"Leffa steps: EPE {init:.2f} -> {with_leffa:.2f}"
    assert without > max(0.95 * init, with_leffa + 0.5), f"diffusion steps: EPE {init:.2f} -> {without:.2f}"
