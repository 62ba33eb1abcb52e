"""Where the preprocessing networks' weights come from: an explicit path, the Hugging Face cache, a download.

``resolve_file`` looks a single file up in that order; ``pretrained_source`` does the same for a model folder
that transformers loads with ``from_pretrained`` (a local folder, else the hub id, cache first). Offline (or
when the download fails) without the file, ``WeightsNotFoundError`` names the file, where to put it and
where to get it. Nothing here executes code from a weight file: the callers load ONNX, TorchScript or
safetensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError


class WeightsNotFoundError(FileNotFoundError):
    """A preprocessing network's weights that are neither given, cached, nor downloadable."""


@dataclass(frozen=True)
class WeightFile:
    """A released weight file: its Hugging Face repository and path there, and what it is."""

    repo_id: str
    filename: str
    what: str

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/blob/main/{self.filename}"

    def remedy(self) -> str:
        return (f"put it at a path given with the command's option, or into the Hugging Face cache "
                f"(`huggingface-cli download {self.repo_id} {self.filename}`, cache {constants.HF_HUB_CACHE}); "
                f"it comes from {self.url}")


# The files the Leffa demo (and IDM-VTON / OOTDiffusion) use, and the DensePose TorchScript export.
SCHP_ATR = WeightFile("franciszzj/Leffa", "humanparsing/parsing_atr.onnx", "SCHP human parsing, ATR labels (ONNX)")
SCHP_LIP = WeightFile("franciszzj/Leffa", "humanparsing/parsing_lip.onnx", "SCHP human parsing, LIP labels (ONNX)")
DENSEPOSE_R50 = WeightFile("LayerNorm/DensePose-TorchScript-with-hint-image", "densepose_r50_fpn_dl.torchscript",
                           "DensePose R50-FPN (TorchScript)")
VITPOSE = "usyd-community/vitpose-base-simple"  # transformers VitPoseForPoseEstimation, COCO-17
PERSON_DETECTOR = "PekingU/rtdetr_r50vd_coco_o365"  # transformers RT-DETR, COCO class 0 = person


def offline_mode(offline: bool | None = None) -> bool:
    """``offline`` when given, else the Hugging Face setting (``HF_HUB_OFFLINE``)."""
    return bool(constants.HF_HUB_OFFLINE) if offline is None else offline


def resolve_file(spec: WeightFile, explicit: str | os.PathLike | None = None, offline: bool | None = None) -> Path:
    """The local path of ``spec``: ``explicit`` (must exist), else the cached copy, else a download."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: no such file ({spec.what}); {spec.remedy()}")
        return path
    cached = try_to_load_from_cache(spec.repo_id, spec.filename)
    if isinstance(cached, str):
        return Path(cached)
    if offline_mode(offline):
        raise WeightsNotFoundError(f"{spec.filename} ({spec.what}) is not in the Hugging Face cache and downloads "
                                   f"are off; {spec.remedy()}")
    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise WeightsNotFoundError(f"{spec.filename} ({spec.what}): download failed ({error}); "
                                   f"{spec.remedy()}") from None


def pretrained_source(explicit: str | os.PathLike | None, repo_id: str, what: str,
                      offline: bool | None = None) -> tuple[str, bool]:
    """``(name_or_path, local_files_only)`` for ``from_pretrained``: an explicit folder (must exist), else the
    hub id (transformers reads its cache first and downloads only where online)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise WeightsNotFoundError(f"{path}: no such folder ({what}, a `save_pretrained` folder); it comes "
                                       f"from https://huggingface.co/{repo_id}")
        return str(path), True
    return repo_id, offline_mode(offline)


def pretrained_error(repo_id: str, what: str, error: Exception) -> WeightsNotFoundError:
    """The error for a hub model that could not be loaded from the cache or downloaded."""
    return WeightsNotFoundError(
        f"{repo_id} ({what}, safetensors weights) could not be loaded from a folder, the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) or a download ({type(error).__name__}: {error}); run `huggingface-cli "
        f"download {repo_id}` where online, or give the folder it was saved to; it comes from "
        f"https://huggingface.co/{repo_id}")
