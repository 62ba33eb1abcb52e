"""The planner's exact terms equal direct counts; its activation model predicts held-out sizes (tiny model, CPU)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from leffa_pl.model.leffa_model import Conditioning, LeffaModel
from leffa_pl.model.lora import LoraSettings
from leffa_pl.planning.activations import StepSettings, fit_activation_model, measure_activations
from leffa_pl.planning.disk import checkpoint_bytes, plan_disk, plan_host_memory
from leffa_pl.planning.plan import (
    TrainingSetup,
    build_model,
    optimizer_state_bytes,
    read_plan_config,
    read_setup,
    static_memory,
)
from leffa_pl.training.trainable import select_trainable

BASE, GPU = Path("configs/trainer/base.yaml"), Path("configs/trainer/gpu.yaml")
PAPER = Path("configs/stages/vton_paper.yaml")
SETUP = TrainingSetup(devices=1, strategy="ddp", precision="32-true", gradient_checkpointing=False,
                      trainable="both", optimizer="adamw", ema=True)


def test_parameter_gradient_and_optimizer_bytes_equal_a_direct_count():
    planned = static_memory(build_model("tiny", "both"), SETUP)  # meta device

    torch.manual_seed(0)
    model = LeffaModel.tiny()
    select_trainable(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    conditioning = Conditioning(torch.ones(1, 1, 8, 6), torch.randn(1, 4, 8, 6), torch.randn(1, 3, 8, 6),
                                torch.randn(1, 4, 8, 6))
    F.mse_loss(model(torch.randn(1, 4, 8, 6), torch.tensor([3]), conditioning), torch.zeros(1, 4, 8, 6)).backward()
    optimizer.step()
    weights = sum(t.nbytes for t in model.state_dict().values())
    gradients = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    moments = sum(state[k].nbytes for state in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
    assert (planned.weights, planned.gradients, planned.optimizer) == (weights, gradients, moments)
    assert planned.ema == gradients  # LeffaEMA: a shadow of the trainable weights


def test_trainer_config_sets_up_the_plan():
    setup = read_setup([BASE, GPU])
    assert setup == TrainingSetup(devices=8, strategy="ddp", precision="bf16-mixed", gradient_checkpointing=True,
                                  trainable="both", optimizer="adamw", ema=True)


def test_the_fsdp_config_layered_over_gpu_yaml_plans_sharded_training(tmp_path):
    layered = [BASE, GPU, Path("configs/trainer/gpu_fsdp.yaml")]
    setup = read_setup(layered)
    # the strategy is a class_path dict; its block checkpointing stands for model.gradient_checkpointing
    assert setup == TrainingSetup(devices=8, strategy="fsdp", precision="bf16-mixed", gradient_checkpointing=True,
                                  trainable="both", optimizer="adamw", ema=False)
    named = tmp_path / "fsdp_by_name.yaml"  # Lightning's registry name, with gpu.yaml's LeffaEMA left in
    named.write_text("trainer: {strategy: fsdp}\n")
    with pytest.raises(SystemExit, match="LeffaEMA refuses FSDP"):
        read_setup([BASE, GPU, named])


def test_fsdp_divides_the_sharded_terms_by_the_devices_and_adds_the_unsharded_units():
    model = build_model("tiny", "both")
    ddp = static_memory(model, SETUP)
    fsdp = static_memory(model, TrainingSetup(devices=4, strategy="fsdp", precision="32-true",
                                              gradient_checkpointing=False, trainable="both", optimizer="adamw",
                                              ema=False))
    assert fsdp.optimizer == ddp.optimizer // 4 and fsdp.ema == 0
    vae = sum(p.nbytes for p in model.vae.parameters())
    assert vae + (ddp.weights - vae) // 4 < fsdp.weights < ddp.weights  # + root unit and two units, unsharded
    assert ddp.gradients // 4 < fsdp.gradients < ddp.gradients  # flat gradients hold the frozen attn2 too


def test_activation_model_predicts_two_held_out_sizes_within_20_percent():
    settings = StepSettings(leffa_loss=True, gradient_checkpointing=False, precision="32-true")
    # Fitted under fake tensors at the planner's four steps; measured on real CPU tensors at two other sizes.
    fitted = fit_activation_model(build_model("tiny", "both"), settings)
    torch.manual_seed(0)
    model = LeffaModel.tiny()
    select_trainable(model)
    for batch, size in ((2, (192, 144)), (1, (320, 240))):
        measured = measure_activations(model, batch, size, settings)
        for side in ("forward", "backward"):
            predicted = getattr(fitted, side).bytes(batch, size)
            assert abs(predicted - getattr(measured, side)) <= 0.2 * getattr(measured, side), (side, batch, size)


def test_disk_plan_counts_a_checkpoint_exactly_and_the_files_the_configs_keep(tmp_path):
    torch.manual_seed(0)
    model = LeffaModel.tiny()
    select_trainable(model)
    trainable = [(f"model.{n}", p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in trainable])
    for _, p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    # what Lightning and LeffaEMA write (the counters and hyper-parameters are a few kB)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "optimizer_states": [optimizer.state_dict()],
                "ema": {"shadow": {n: p.detach().clone() for n, p in trainable}}}, tmp_path / "step.ckpt")
    planned = checkpoint_bytes(build_model("tiny", "both"), "adamw", ema=True)
    # beyond the tensors: a zip record per tensor and AdamW's step counters, 2 % on the tiny model's small tensors
    assert 0 <= (tmp_path / "step.ckpt").stat().st_size - planned < 0.03 * planned

    disk = plan_disk(read_plan_config([BASE, GPU, PAPER]), build_model("tiny", "both"))
    assert disk.checkpoint == planned and disk.checkpoints_at_once == 2 + 1 + 3 + 1  # keep, writing, stages, SIGTERM
    assert disk.export == 2 * sum(t.nbytes for t in model.state_dict().values())  # .pth and .safetensors
    assert disk.total == disk.checkpoints + disk.export + disk.images and disk.images > 0


def test_host_memory_of_a_save_and_a_resume_follows_the_strategy():
    model = build_model("tiny", "both")
    disk = plan_disk(read_plan_config([BASE, GPU, PAPER]), model)
    weights = sum(t.nbytes for t in model.state_dict().values())
    moments = optimizer_state_bytes([p for p in model.parameters() if p.requires_grad], "adamw")
    ddp = plan_host_memory(model, disk, "ddp")
    # streamed save: one fp32 tensor at a time; memory-mapped resume: the file's pages, shared in the page cache
    assert ddp.model_load == weights and ddp.save == max(p.numel() * 4 for p in model.parameters())
    assert ddp.resume == 0 and ddp.save_in_memory == disk.checkpoint
    fsdp = plan_host_memory(model, disk, "fsdp")
    # FSDP's full state dict gathers the checkpoint on rank 0; its loader materialises the optimizer state per rank
    assert (fsdp.save, fsdp.resume) == (disk.checkpoint, moments) and fsdp.peak == max(weights, disk.checkpoint)


LORA = LoraSettings(rank=4, alpha=8, reference_unet=True, frozen_dtype="bfloat16")


def test_lora_terms_equal_a_direct_count_of_the_peft_wrapped_model():
    setup = TrainingSetup(devices=1, strategy="ddp", precision="bf16-mixed", gradient_checkpointing=False,
                          trainable="lora", optimizer="adamw", ema=True, lora=LORA)
    planned = static_memory(build_model("tiny", "lora", LORA), setup)  # meta device

    torch.manual_seed(0)
    model = LeffaModel.tiny()
    select_trainable(model, "lora", LORA)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    conditioning = Conditioning(torch.ones(1, 1, 8, 6), torch.randn(1, 4, 8, 6), torch.randn(1, 3, 8, 6),
                                torch.randn(1, 4, 8, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prediction = model(torch.randn(1, 4, 8, 6), torch.tensor([3]), conditioning)
    F.mse_loss(prediction.float(), torch.zeros(1, 4, 8, 6)).backward()
    optimizer.step()
    state = model.state_dict()
    assert {t.dtype for k, t in state.items() if k.startswith("unet") and ".lora_" not in k} == {torch.bfloat16}
    weights = sum(t.nbytes for t in state.values())  # the frozen base in bf16, the VAE and adapters in fp32
    gradients = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    moments = sum(s[k].nbytes for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
    assert gradients == sum(p.nbytes for n, p in model.named_parameters() if ".lora_" in n)
    assert (planned.weights, planned.gradients, planned.optimizer, planned.ema) == (weights, gradients, moments,
                                                                                    gradients)
    # CUDA's foreach AdamW: one fp32 copy of the second moments at once
    assert planned.optimizer_step == gradients


def test_the_lora_config_sets_up_the_plan_and_fsdp_is_refused(tmp_path):
    layered = [BASE, GPU, Path("configs/model/lora.yaml")]
    setup = read_setup(layered)
    assert (setup.trainable, setup.lora) == ("lora", LoraSettings(rank=64, alpha=64, frozen_dtype="bfloat16"))
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("trainer: {strategy: fsdp, callbacks: []}\n")
    with pytest.raises(SystemExit, match="LoRA does not train under FSDP"):
        read_setup([*layered, fsdp])

