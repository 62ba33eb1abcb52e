"""LoRA (``model.trainable=lora``) on the tiny model: only adapters train, the exports reload, resume is exact."""

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from safetensors import safe_open

from leffa_pl.callbacks.export_checkpoint import ADAPTER_FILE, ExportReleasedCheckpoint
from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.datasets.synthetic_people import PANTS, UPPER, draw_person
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.inference.single_image import tryon_main
from leffa_pl.model.checkpoint import CheckpointError, read_state_dict
from leffa_pl.model.leffa_model import Conditioning, LeffaModel
from leffa_pl.model.loading import load_model
from leffa_pl.model.lora import METADATA_KEY, LoraSettings, load_lora, merged_state_dict
from leffa_pl.testing.training import RandomTryOnDataModule
from leffa_pl.training.atomic_checkpoint import AtomicCheckpointIO
from leffa_pl.training.leffa_module import LeffaModule
from leffa_pl.training.sharding import LeffaFSDPStrategy
from leffa_pl.training.trainable import select_trainable

LORA = LoraSettings(rank=4, alpha=8, reference_unet=True)
STAGES = [Stage("a", 2, (32, 24), 2), Stage("leffa", 2, (64, 48), 2, leffa_loss=True)]


class Losses(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.global_step, outputs["loss"].item()))


def _module(lora: LoraSettings = LORA, **kwargs) -> LeffaModule:
    torch.manual_seed(0)  # the base weights of LeffaModel.tiny() after torch.manual_seed(0): see _base()
    return LeffaModule(trainable="lora", lora=lora, learning_rate=1e-2, **kwargs)


def _base() -> LeffaModel:
    torch.manual_seed(0)
    return LeffaModel.tiny()


def _fit(module, root, callbacks, max_steps=-1, ckpt_path=None, **kwargs):
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         default_root_dir=root, callbacks=[StageSchedule(STAGES), *callbacks], **kwargs)
    trainer.fit(module, RandomTryOnDataModule(size=8, shuffle=True), ckpt_path=ckpt_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four steps (the last two with the Leffa loss), exported."""
    root = tmp_path_factory.mktemp("lora")
    module, losses = _module(), Losses()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    _fit(module, root, [losses, ExportReleasedCheckpoint(str(root / "export"))], enable_checkpointing=False)
    return module, before, losses.rows, root / "export"


def test_lora_steps_change_only_the_adapters_and_keep_the_base_bit_identical(trained):
    module, before, _, _ = trained
    after = module.model.state_dict()
    adapters = [k for k in after if ".lora_" in k]
    assert {k.split(".", 1)[0] for k in adapters} == {"unet", "unet_encoder"}
    assert not any(".attn2." in k for k in adapters)  # cross-attention never reaches the loss: no adapter
    assert {n for n, p in module.model.named_parameters() if p.requires_grad} == set(adapters)
    for key in after:
        if key not in adapters:
            assert torch.equal(after[key], before[key]), key
    lora_b = [k for k in adapters if ".lora_B." in k]  # zero at the start
    assert sum(not torch.equal(after[k], before[k]) for k in lora_b) > len(lora_b) // 2


def _inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)

    def rand(channels):
        return torch.randn(2, channels, 8, 6, generator=generator)

    return rand(4), torch.tensor([10, 700]), Conditioning(rand(1), rand(4), rand(3), rand(4))


def test_the_exported_adapter_reloads_onto_the_base_and_reproduces_the_outputs(trained):
    module, _, _, export = trained
    with safe_open(str(export / ADAPTER_FILE), framework="pt") as file:
        assert METADATA_KEY in file.metadata() and all(".lora_A.weight" in k or ".lora_B.weight" in k
                                                       for k in file.keys())
    base = _base()
    load_lora(base, export / ADAPTER_FILE)
    assert not any(".lora_" in k for k in base.state_dict())  # merged: the plain model again
    noisy, timesteps, conditioning = _inputs()
    with torch.no_grad():
        expected = module.model.eval()(noisy, timesteps, conditioning)
        torch.testing.assert_close(base(noisy, timesteps, conditioning), expected, rtol=0, atol=1e-5)
        merged = _base()
        merged.load_checkpoint(export / "leffa.safetensors")
        torch.testing.assert_close(merged(noisy, timesteps, conditioning), expected, rtol=0, atol=1e-5)


def test_the_merged_export_is_base_plus_the_scaled_adapter(trained):
    _, before, _, export = trained
    merged, adapter = read_state_dict(export / "leffa.safetensors"), read_state_dict(export / ADAPTER_FILE)
    base = _base().state_dict()
    assert set(merged) == set(base)
    adapted = {k.removesuffix(".lora_A.weight") for k in adapter if k.endswith(".lora_A.weight")}
    for key in base:
        module = key.removesuffix(".weight")
        if module in adapted:
            delta = adapter[f"{module}.lora_B.weight"] @ adapter[f"{module}.lora_A.weight"] * (LORA.alpha / LORA.rank)
            assert delta.abs().max() > 0
            torch.testing.assert_close(merged[key], base[key] + delta, rtol=0, atol=1e-5)
        else:
            assert torch.equal(merged[key], base[key]), key


def test_a_scaled_adapter_merges_that_fraction(trained, tmp_path):
    _, _, _, export = trained
    full, half = _base(), _base()
    load_lora(full, export / ADAPTER_FILE)
    load_lora(half, export / ADAPTER_FILE, scale=0.5)
    base = _base().state_dict()
    key = next(k for k in base if k.endswith("attn1.to_q.weight") and k.startswith("unet."))
    torch.testing.assert_close(half.state_dict()[key] - base[key], (full.state_dict()[key] - base[key]) / 2)


def test_an_adapter_of_another_architecture_is_a_clear_error(trained):
    _, _, _, export = trained
    with pytest.raises(CheckpointError, match="leffa_lora.safetensors: the unet adapter does not fit"):
        load_lora(LeffaModel.tiny(attention_head_dim=4, block_out_channels=[16, 16, 32, 32]), export / ADAPTER_FILE)
    with pytest.raises(CheckpointError, match="not a Leffa LoRA adapter"):
        load_lora(_base(), export / "leffa.safetensors")


def test_resume_reproduces_the_losses(tmp_path, trained):
    full = trained[2]
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    killed, resumed = Losses(), Losses()
    _fit(_module(), tmp_path, [killed, checkpoint], max_steps=3, plugins=[AtomicCheckpointIO()])
    _fit(_module(), tmp_path, [resumed], ckpt_path=tmp_path / "ckpt" / "last.ckpt", plugins=[AtomicCheckpointIO()])
    assert killed.rows + resumed.rows == full


def test_the_tryon_command_applies_an_adapter(trained, tmp_path):
    _, _, _, export = trained
    _base().export(tmp_path / "base.safetensors")
    person = draw_person(np.random.default_rng(3), 100, 70, {UPPER: True, PANTS: False})
    Image.fromarray(person.image).save(tmp_path / "anna.jpg")
    Image.fromarray(person.garment.flat).save(tmp_path / "shirt.jpg")
    Image.fromarray((person.densepose > 0).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    Image.fromarray(vitonhd.encode_densepose(person.densepose)).save(tmp_path / "densepose.png")
    common = ["--person", str(tmp_path / "anna.jpg"), "--garment", str(tmp_path / "shirt.jpg"), "--mask",
              str(tmp_path / "mask.png"), "--densepose", str(tmp_path / "densepose.png"), "--resolution", "64x48",
              "--steps", "2", "--device", "cpu", "--offline"]
    runs = {"lora": ["--checkpoint", str(tmp_path / "base.safetensors"), "--lora", str(export / ADAPTER_FILE)],
            "merged": ["--checkpoint", str(export / "leffa.safetensors")]}
    images = {}
    for name, args in runs.items():
        assert tryon_main(common + args + ["--out", str(tmp_path / name)]) == 0
        images[name] = np.asarray(Image.open(tmp_path / name / "shirt.jpg__to__anna.jpg.png")).astype(int)
    assert np.abs(images["lora"] - images["merged"]).max() <= 1  # uint8 rounding of a 1e-6 difference
    assert "LoRA adapter" in (tmp_path / "lora" / "shirt.jpg__to__anna.jpg.json").read_text()


def test_frozen_base_in_bf16_trains_under_bf16_mixed_only(tmp_path):
    module = _module(LoraSettings(rank=2, frozen_dtype="bfloat16"))
    dtypes = {n: p.dtype for n, p in module.model.named_parameters() if n.startswith("unet")}
    assert {d for n, d in dtypes.items() if ".lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if ".lora_" not in n} == {torch.bfloat16}
    losses = Losses()
    _fit(module, tmp_path, [losses], max_steps=2, precision="bf16-mixed", enable_checkpointing=False)
    assert len(losses.rows) == 2 and all(np.isfinite(loss) for _, loss in losses.rows)
    with pytest.raises(ValueError, match="frozen_dtype=bfloat16 needs trainer.precision=bf16-mixed"):
        _fit(_module(LoraSettings(rank=2, frozen_dtype="bfloat16")), tmp_path, [], max_steps=1,
             enable_checkpointing=False)


def test_lora_settings_without_trainable_lora_and_fsdp_are_refused():
    with pytest.raises(ValueError, match="set model.trainable=lora"):
        LeffaModule(trainable="both", lora=LoraSettings())
    with pytest.raises(ValueError, match="LoRA does not train under FSDP here: .*flat parameter of one dtype"):
        LeffaFSDPStrategy()._setup_model(_module())


def test_unmatched_target_modules_are_refused():
    with pytest.raises(ValueError, match=r"target_modules \['attn2.to_q'\] match no Linear/Conv2d layer of unet "
                                         "that the training loss reaches"):
        _module(LoraSettings(target_modules=("attn2.to_q",)))


def test_checkpoint_hyperparameters_hold_plain_types(trained, tmp_path):
    module = trained[0]
    assert module.hparams["lora"] == {"rank": 4, "alpha": 8, "dropout": 0.0,
                                      "target_modules": ("to_q", "to_k", "to_v", "to_out.0"),
                                      "reference_unet": True, "frozen_dtype": "float32"}
    assert Path(trained[3] / "leffa.pth").is_file()


def test_a_lora_lightning_checkpoint_loads_for_evaluation_merged(tmp_path):
    torch.manual_seed(0)
    model = LeffaModel.tiny()
    select_trainable(model, "lora", LoraSettings(rank=4, alpha=8))
    for name, parameter in model.named_parameters():
        if ".lora_B." in name:
            torch.nn.init.normal_(parameter)  # a trained (non-zero) adapter
    path = tmp_path / "lora.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"lora": {"rank": 4, "alpha": 8}}}, path)
    loaded, description = load_model(path)
    assert "LoRA r4 merged" in description
    merged = merged_state_dict(model)
    assert all(torch.equal(value, merged[key]) for key, value in loaded.state_dict().items())
