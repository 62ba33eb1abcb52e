"""``make plan-fits``: the lever search and largest batch agree with the planner, and docs/fits.md is current.

The fake-tensor activation fits take minutes at paper size (tens of seconds even for the tiny model), so these tests
give the planner a fixed linear activation model; static memory (weights, gradients, optimizer, EMA) is the
planner's own, counted on the tiny architecture."""

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from leffa_pl.callbacks.stage_schedule import Stage
from leffa_pl.planning import fits
from leffa_pl.planning.activations import ActivationModel, StepActivations
from leffa_pl.planning.plan import GIB, HEADROOM, build_model, plan_stage, static_memory, step_peak

STAGE = Stage(name="low-res", steps=1, resolution=(64, 48), batch_size=4, accumulate_grad_batches=2)
# 1 MiB per sample plus 8 MiB: a linear model, as the fit gives (per token, per sample, fixed)
LINEAR = ActivationModel(per_token=2**20 / 48, per_token_pair=0.0, per_sample=0.0, fixed=8 * 2**20, downsampling=8)


@pytest.fixture
def linear_activations(monkeypatch):
    monkeypatch.setattr(fits, "_activations", lambda architecture, setup, leffa_loss: StepActivations(LINEAR, LINEAR))


def plans_on(gpus: fits.Gpus):
    return [fits.plan_cell("tiny", STAGE, rung, gpus) for rung in fits.LADDER]


def test_too_small_a_gpu_is_made_to_fit_by_the_first_lever_the_planner_says_fits(linear_activations):
    configured = plans_on(fits.Gpus(8, 1.0))
    # memory between LoRA r16's total and the full model's: as configured does not fit, a later rung does
    gib = (configured[0].total + configured[4].total) / 2 / GIB / (1 - HEADROOM)
    plans = plans_on(fits.Gpus(1, gib))
    assert not plans[0].fits and plans[-1] is None  # FSDP needs several devices
    first, at_all = fits.first_fitting(plans)
    assert first is not None and all(not plan.fits for plan in plans[:first])
    rung = fits.LADDER[first]
    setup = rung.setup(1)
    static = static_memory(build_model("tiny", setup.trainable, setup.lora), setup)
    usable = gib * GIB * (1 - HEADROOM)
    assert step_peak(static, LINEAR.bytes(STAGE.batch_size, STAGE.resolution)) <= usable  # the planner's own terms
    # one device keeps the paper's global batch (4 x 2 accumulation x 8 devices = 64) by accumulating
    batch, accumulation = plans[at_all].accumulation_for_global
    assert batch * accumulation == 64 and batch <= plans[at_all].largest_batch
    assert f"| {rung.label} |" in fits.table_row(STAGE, fits.Gpus(1, gib), plans)


def test_the_largest_batch_fits_and_one_more_does_not(linear_activations):
    for gpus in (fits.Gpus(1, 0.2), fits.Gpus(8, 0.2)):
        for rung, plan in zip(fits.LADDER, plans_on(gpus)):
            if plan is None:
                continue
            assert plan.largest_batch > 0, rung.label
            activations = StepActivations(LINEAR, LINEAR)
            setup = rung.setup(gpus.devices)
            for batch, fits_it in ((plan.largest_batch, True), (plan.largest_batch + 1, False)):
                stage = dataclasses.replace(STAGE, batch_size=batch)
                assert plan_stage(stage, plan.static, activations, setup, plan.usable).fits is fits_it, rung.label


def test_fsdp_and_lora_rungs_set_up_what_the_configs_say():
    fsdp, lora16 = fits.LADDER[-1].setup(8), fits.LADDER[4].setup(1)
    assert (fsdp.strategy, fsdp.ema, fsdp.trainable, fsdp.optimizer) == ("fsdp", False, "both", "adamw8bit")
    assert (lora16.trainable, lora16.lora.rank, lora16.lora.frozen_dtype) == ("lora", 16, "bfloat16")
    assert fits._activation_setup(lora16).lora.rank == fits.FIT_LORA_RANK  # the upper bound shares r64's fit


def test_docs_fits_md_was_generated_from_the_current_planner_and_configs():
    committed = (Path(fits.ROOT) / "docs/fits.md").read_text()
    recorded = re.search(r"inputs digest (\w+)", committed).group(1)
    assert recorded == fits.inputs_digest(), "docs/fits.md is stale: regenerate it with `make plan-fits`"


def test_the_digest_follows_what_the_configs_resolve_to_not_their_text(tmp_path, monkeypatch):
    for name in (*fits.INPUTS, "configs"):
        source, copy = Path(fits.ROOT) / name, tmp_path / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(source.read_bytes()) if source.is_file() else shutil.copytree(source, copy)
    monkeypatch.setattr(fits, "ROOT", tmp_path)
    digest = fits.inputs_digest()
    gpu = tmp_path / fits.GPU_YAML
    gpu.write_text(gpu.read_text() + "# a comment\n")
    assert fits.inputs_digest() == digest
    gpu.write_text(gpu.read_text().replace("gradient_checkpointing: true", "gradient_checkpointing: false"))
    assert fits.inputs_digest() != digest
