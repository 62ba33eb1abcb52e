"""The model to generate with, from a Lightning checkpoint, an exported or released file, or nothing (the tiny
model): ``load_model``, shared by prediction, evaluation and the single-image commands."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Mapping

import torch
from lightning.pytorch.utilities import rank_zero_warn

from leffa_pl.model.checkpoint import EMA_KEY, CheckpointError, check_state_dict
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.lora import LoraSettings, add_lora, base_name, is_lora_parameter, merged_state_dict
from leffa_pl.model.provenance import check_task, read_provenance

LIGHTNING_SUFFIX = ".ckpt"
log = logging.getLogger(__name__)


def load_model(checkpoint: str | os.PathLike | None = None, base_model: str | os.PathLike | None = None,
               task: str | None = None, allow_other_task: bool = False) -> tuple[LeffaModel, str]:
    """The model and a line saying what it is. With ``task`` (``tryon``/``pose``), a checkpoint recorded as
    trained for the other task is refused (``TaskMismatchError``) unless ``allow_other_task``.

    - ``checkpoint`` ending in ``.ckpt``: a Lightning checkpoint of ``LeffaModule``; its ``state_dict`` with
      the EMA of the trainable weights on top when training ran ``LeffaEMA`` (Lightning's ``EMAWeightAveraging``
      stores the average in ``state_dict`` and the raw weights under ``current_model_state``). The architecture
      comes from ``base_model``, else from the checkpoint's own ``base_model`` hyperparameter, else the tiny model.
    - other files (``.pth``/``.safetensors``, the released layout, also our export): on ``base_model``'s
      configs, or on the tiny model's without one (the demo export).
    - nothing: the tiny model with random weights (seed 0); its images are meaningless (a pipeline check).
    """
    if checkpoint is None:
        if base_model is not None:
            raise CheckpointError(f"a base model ({base_model}) only gives the architecture: give the Leffa "
                                  "weights with --checkpoint")
        rank_zero_warn("no checkpoint given: the tiny model with RANDOM weights; the images and scores are "
                       "meaningless (a check of the pipeline only)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same weights in every process and run
            model = LeffaModel.tiny()
        return model, "tiny model, random weights (seed 0; no checkpoint given)"
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such file")
    if checkpoint.suffix == LIGHTNING_SUFFIX:
        return _from_lightning_checkpoint(checkpoint, base_model, task, allow_other_task)
    trained = _checked_task(checkpoint, None, task, allow_other_task)
    if base_model is not None:
        model = LeffaModel.from_checkpoint(checkpoint, base_model)
        return model, f"{checkpoint} on the configs of {base_model} ({trained})"
    model = LeffaModel.tiny()
    try:
        model.load_checkpoint(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{error}. Without --base-model the tiny architecture is assumed; give "
                              "the base model folder whose configs the checkpoint was trained on") from None
    return model, f"{checkpoint} on the tiny model's configs ({trained})"


def check_resolution(model: LeffaModel, resolution: tuple[int, int]) -> None:
    """Refuse a resolution the model cannot run at (``ValueError``)."""
    if any(side % model.vae_scale_factor for side in resolution):
        raise ValueError(f"--resolution {resolution[0]}x{resolution[1]}: height and width must be multiples of "
                         f"{model.vae_scale_factor} (the VAE's downsampling, as in training)")


def _checked_task(path: Path, content: Mapping | None, task: str | None, allow_other_task: bool) -> str:
    if task is None:
        return "task not checked"
    try:
        provenance = read_provenance(path, content)
    except Exception as error:  # an unreadable file: the loader names what is wrong with it next
        log.debug("no provenance read from %s: %s", path, error)
        return "task not recorded"
    return check_task(path, provenance, task, allow_other_task, "--allow-other-task")


def _from_lightning_checkpoint(path: Path, base_model: str | os.PathLike | None, task: str | None,
                               allow_other_task: bool) -> tuple[LeffaModel, str]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on bad input; all mean the same here
        raise CheckpointError(f"{path}: not a readable Lightning checkpoint (weights-only loading): "
                              f"{error}") from None
    if not isinstance(content, Mapping) or "state_dict" not in content:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    trained = _checked_task(path, content, task, allow_other_task)
    prefix = "model."
    weights = content["state_dict"] | (content.get(EMA_KEY) or {}).get("shadow", {})
    state = {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{path}: no 'model.' weights in its state_dict (not a LeffaModule checkpoint)")
    base_model = base_model or content.get("hyper_parameters", {}).get("base_model")
    ema = EMA_KEY in content or "current_model_state" in content
    weights = "EMA weights" if ema else "weights (no EMA in this checkpoint)"
    step = content.get("global_step", "?")
    if base_model is None:
        model, architecture = LeffaModel.tiny(), "the tiny model's configs"
    else:
        model, architecture = LeffaModel.from_base_model(base_model), f"the configs of {base_model}"
    lora = content.get("hyper_parameters", {}).get("lora")
    if lora is not None and any(is_lora_parameter(key) for key in state):
        state = _merged_lora_state(state, model, lora)
        weights += f", LoRA r{lora['rank']} merged"
    check_state_dict(path, state, model.state_dict())
    model.load_state_dict(state, strict=True)
    return model, f"{path} (Lightning checkpoint, step {step}, {weights}, {trained}) on {architecture}"


def _merged_lora_state(state: dict[str, torch.Tensor], model: LeffaModel, lora: Mapping) -> dict[str, torch.Tensor]:
    """A LoRA run's state (peft's wrapped keys) merged into the plain layout: the adapters are rebuilt on a copy of
    ``model`` on the layers the checkpoint adapted, loaded, and merged (base + scaled adapter)."""
    adapted = copy.deepcopy(model)
    reached = frozenset(base_name(key) for key in state if key.endswith(".base_layer.weight"))
    add_lora(adapted, LoraSettings(**lora), reached)
    adapted.load_state_dict(state, strict=True)
    return merged_state_dict(adapted)
