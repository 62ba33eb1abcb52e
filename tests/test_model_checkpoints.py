"""Building from base models, loading/exporting released-layout checkpoints, refusing bad files."""

import json
import logging
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from leffa_pl.model.checkpoint import CheckpointError, read_state_dict
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.presets import sd15_scheduler_config, tiny_unet_config, tiny_vae_config


@pytest.fixture(scope="module")
def released_state(official_tiny):
    return torch.load(official_tiny / "leffa_tiny.pth", weights_only=True)


@pytest.fixture()
def base_folder(official_tiny):
    return official_tiny / "tiny-stable-diffusion-inpainting"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_export_is_identical_to_the_loaded_checkpoint(official_tiny, base_folder, released_state, tmp_path, suffix):
    model = LeffaModel.from_checkpoint(official_tiny / "leffa_tiny.pth", base_folder)
    exported = read_state_dict(model.export(tmp_path / f"exported{suffix}"))
    assert sorted(exported) == sorted(released_state)
    if suffix == ".pth":  # safetensors files do not keep key order
        assert list(exported) == list(released_state)
    for key, tensor in released_state.items():
        assert exported[key].dtype == tensor.dtype and exported[key].shape == tensor.shape, key
        assert torch.equal(exported[key], tensor), key
    # and the export loads back (also as safetensors)
    LeffaModel.from_checkpoint(tmp_path / f"exported{suffix}", base_folder)


def test_released_layout(official_tiny, base_folder, released_state):
    model = LeffaModel.from_checkpoint(official_tiny / "leffa_tiny.pth", base_folder)
    assert model.unet.conv_in.weight.shape[1] == 12 and model.unet_encoder.conv_in.weight.shape[1] == 4
    assert not any(p.requires_grad for p in model.vae.parameters())
    assert all(p.requires_grad for p in model.unet.parameters())
    assert not any(t.is_meta for t in model.state_dict().values())


def _save(state, path):
    torch.save(state, path)
    return path


def test_missing_keys_are_named(base_folder, released_state, tmp_path):
    state = dict(released_state)
    del state["unet.conv_out.bias"]
    path = _save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth.*1 missing keys: unet\.conv_out\.bias"):
        LeffaModel.from_checkpoint(path, base_folder)


def test_unexpected_keys_and_wrong_shapes_are_named(base_folder, released_state, tmp_path):
    state = dict(released_state)
    state["unet.conv_in.weight"] = torch.zeros(32, 9, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = _save(state, tmp_path / "mismatch.pth")
    with pytest.raises(CheckpointError) as error:
        LeffaModel.from_checkpoint(path, base_folder)
    message = str(error.value)
    assert "mismatch.pth" in message and "extra.weight" in message
    assert "unet.conv_in.weight: file (32, 9, 3, 3) vs model (32, 12, 3, 3)" in message


def test_non_checkpoint_files_are_refused(base_folder, tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    truncated = tmp_path / "truncated.pth"
    torch.save({"a": torch.zeros(3)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:50])
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x00" * 16)
    for path in (text, truncated, bad_safetensors, tmp_path / "absent.pth"):
        with pytest.raises(CheckpointError, match=path.name):
            LeffaModel.from_checkpoint(path, base_folder)


class _Payload:
    """Unpickling this object would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_carrying_code_is_refused_without_running_it(base_folder, tmp_path):
    marker = tmp_path / "code-ran"
    path = _save({"unet.conv_in.weight": torch.zeros(1), "payload": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth.*refused"):
        LeffaModel.from_checkpoint(path, base_folder)
    assert not marker.exists()


def test_nested_checkpoint_is_not_a_flat_state_dict(base_folder, tmp_path):
    path = _save({"state_dict": {"unet.conv_in.weight": torch.zeros(1)}, "epoch": 3}, tmp_path / "lightning.pth")
    with pytest.raises(CheckpointError, match=r"lightning\.pth: not a flat state dict"):
        LeffaModel.from_checkpoint(path, base_folder)


def test_base_model_folder_errors_name_what_is_missing(tmp_path, official_tiny):
    shutil.copytree(official_tiny / "tiny-stable-diffusion-inpainting", tmp_path / "base")
    (tmp_path / "base" / "vae" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"vae/config\.json"):
        LeffaModel.from_checkpoint(official_tiny / "leffa_tiny.pth", tmp_path / "base")


def _write_base_model(folder, **unet_overrides):
    torch.manual_seed(0)
    UNet2DConditionModel.from_config(tiny_unet_config(**unet_overrides)).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(tiny_vae_config()).save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sd15_scheduler_config()))
    return UNet2DConditionModel.from_pretrained(folder / "unet")


def test_conv_in_surgery_from_an_inpainting_base_model(tmp_path):
    base = _write_base_model(tmp_path)
    model = LeffaModel.from_base_model(tmp_path)
    generative, reference = model.unet.conv_in, model.unet_encoder.conv_in
    assert torch.equal(generative.weight[:, :9], base.conv_in.weight)
    assert torch.count_nonzero(generative.weight[:, 9:]) == 0
    assert torch.equal(generative.bias, base.conv_in.bias)
    assert torch.equal(reference.weight, base.conv_in.weight[:, :4])
    assert model.unet.config.in_channels == 12 and model.unet_encoder.config.in_channels == 4
    assert torch.equal(model.unet.conv_out.weight, base.conv_out.weight)


def test_sdxl_inpainting_base_model_is_constructible_and_selects_its_schedule_from_config(tmp_path):
    _write_base_model(tmp_path, addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=32 + 6 * 8, use_linear_projection=True)
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(sd15_scheduler_config(rescale_betas_zero_snr=True)))
    model = LeffaModel.from_base_model(tmp_path)
    assert "add_embedding.linear_1.weight" in dict(model.unet.named_parameters())  # kept, as released
    assert model.unet.config.addition_embed_type is None
    assert model.scheduler_config["rescale_betas_zero_snr"] is True
    with torch.no_grad():
        features = model.encode_reference(torch.randn(1, 4, 8, 6), torch.tensor([5]))
        out = model.denoise(torch.randn(1, 12, 8, 6), torch.tensor([5]), features)
    assert out.shape == (1, 4, 8, 6)


def test_a_non_inpainting_unet_is_refused(tmp_path):
    _write_base_model(tmp_path, in_channels=4)
    with pytest.raises(ValueError, match="inpainting UNet"):
        LeffaModel.from_base_model(tmp_path)



class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_base_model_folder_loads_with_accelerate_and_without_its_fallback_warning(tmp_path, monkeypatch):
    _write_base_model(tmp_path)
    diffusers_logger, records = logging.getLogger("diffusers"), Records()  # diffusers' loggers do not propagate
    diffusers_logger.addHandler(records)
    try:
        LeffaModel.from_base_model(tmp_path)
        assert not [message for message in records.messages if "low_cpu_mem_usage" in message]
        # the warning looked for, as diffusers logs it without accelerate (once per model: 3 here)
        monkeypatch.setattr("diffusers.models.modeling_utils.is_accelerate_available", lambda: False)
        LeffaModel.from_base_model(tmp_path)
        assert len([message for message in records.messages if "low_cpu_mem_usage=False" in message]) == 3
    finally:
        diffusers_logger.removeHandler(records)
