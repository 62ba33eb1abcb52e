"""Where the annotator networks' weights (parsing, keypoints, DensePose) come from: an explicit path, the Hugging
Face cache, a download.

``resolve_file`` looks a single file up in that order; ``pretrained_source`` does the same for a model folder
that transformers loads with ``from_pretrained`` (a local folder, else the hub id, cache first). Offline (or
when the download fails) without the file, ``WeightsNotFoundError`` names the file, where to put it and
where to get it. Nothing here executes code from a weight file: the callers load ONNX, TorchScript or
safetensors (TorchScript is a program that ``torch.jit.load`` runs: docs/safety.md).

Every file a download can bring has its Hugging Face revision and SHA-256 in one table (the ``WeightFile``s
below): a download asks for that revision, and a downloaded or cached file whose SHA-256 differs is refused
naming both digests. A file given by path is the user's choice and is not checked. A default whose digest is
not recorded (``sha256=None``) is used with a warning saying so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from leffa_pl.model.checkpoint import file_sha256

log = logging.getLogger(__name__)


class WeightsNotFoundError(FileNotFoundError):
    """A preprocessing network's weights that are neither given, cached, nor downloadable."""


class WeightsChecksumError(ValueError):
    """A downloaded or cached weight file whose SHA-256 is not the recorded one."""


@dataclass(frozen=True)
class WeightFile:
    """A released weight file: its Hugging Face repository and path there, and what it is."""

    repo_id: str
    filename: str
    what: str
    revision: str = "main"  # a commit hash pins the file; a branch name does not
    sha256: str | None = None  # of the file at that revision; None: not recorded (used with a warning)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/blob/{self.revision}/{self.filename}"

    def remedy(self) -> str:
        return (f"put it at a path given with the command's option, or into the Hugging Face cache "
                f"(`huggingface-cli download {self.repo_id} {self.filename} --revision {self.revision}`, cache "
                f"{constants.HF_HUB_CACHE}); "
                f"it comes from {self.url}")


# The files the Leffa demo (and IDM-VTON / OOTDiffusion) use, and the DensePose TorchScript export. Digests: the
# Git LFS / Xet pointers on the hub (franciszzj/Leffa commit cfa6c99 "add humanparsing and openpose"; the
# DensePose file's page at 779f201, whose full commit id was not readable offline, so that file follows `main` and
# its digest is the pin).
LEFFA_WEIGHTS_REVISION = "cfa6c99ce3eb4d530fea2f1eaa91b8473156e0ab"
SCHP_ATR = WeightFile("franciszzj/Leffa", "humanparsing/parsing_atr.onnx", "SCHP human parsing, ATR labels (ONNX)",
                      LEFFA_WEIGHTS_REVISION, "04c7d1d070d0e0ae943d86b18cb5aaaea9e278d97462e9cfb270cbbe4cd977f4")
SCHP_LIP = WeightFile("franciszzj/Leffa", "humanparsing/parsing_lip.onnx", "SCHP human parsing, LIP labels (ONNX)",
                      LEFFA_WEIGHTS_REVISION, "8436e1dae96e2601c373d1ace29c8f0978b16357d9038c17a8ba756cca376dbc")
DENSEPOSE_R50 = WeightFile("LayerNorm/DensePose-TorchScript-with-hint-image", "densepose_r50_fpn_dl.torchscript",
                           "DensePose R50-FPN (TorchScript)",
                           sha256="4f7260daa498ce8d4b4679f0692ef2f1f426e39121a907181eab37b8b0585878")
# transformers folders (several files, no single digest): pinned by commit where the id could be read.
VITPOSE = "usyd-community/vitpose-base-simple"  # transformers VitPoseForPoseEstimation, COCO-17
VITPOSE_REVISION = "main"  # the latest upload's full commit id was not readable offline
PERSON_DETECTOR = "PekingU/rtdetr_r50vd_coco_o365"  # transformers RT-DETR, COCO class 0 = person
PERSON_DETECTOR_REVISION = "457857cec8ac28ddede40ecee9eed2beca321af8"


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
    cached = try_to_load_from_cache(spec.repo_id, spec.filename, revision=spec.revision)
    if not isinstance(cached, str) and spec.sha256 is not None:
        # A copy cached from `main` (e.g. by the Leffa app) is the same file when its digest matches.
        cached = try_to_load_from_cache(spec.repo_id, spec.filename, revision="main")
    if isinstance(cached, str):
        return verified(spec, Path(cached))
    if offline_mode(offline):
        raise WeightsNotFoundError(f"{spec.filename} ({spec.what}) is not in the Hugging Face cache and downloads "
                                   f"are off; {spec.remedy()}")
    try:
        return verified(spec, Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise WeightsNotFoundError(f"{spec.filename} ({spec.what}): download failed ({error}); "
                                   f"{spec.remedy()}") from None



def verified(spec: WeightFile, path: Path) -> Path:
    """``path`` (a downloaded or cached copy of ``spec``) when its SHA-256 is the recorded one."""
    actual = file_sha256(path)
    if spec.sha256 is None:
        log.warning("%s (%s): no SHA-256 recorded in leffa_pl/annotators/weight_files.py, so it is not verified; "
                    "its SHA-256 is %s", path, spec.what, actual)
    elif actual != spec.sha256:
        raise WeightsChecksumError(f"{path}: SHA-256 {actual}, expected {spec.sha256} for {spec.repo_id}/"
                                   f"{spec.filename} at revision {spec.revision} ({spec.what}): refused (a changed "
                                   "or damaged file). Delete it and download again, or give a file by path")
    return path


def pretrained_source(explicit: str | os.PathLike | None, repo_id: str, what: str, offline: bool | None = None,
                      revision: str = "main") -> tuple[str, bool, str | None]:
    """``(name_or_path, local_files_only, revision)`` for ``from_pretrained``: an explicit folder (must exist),
    else the hub id at ``revision`` (transformers reads its cache first and downloads only where online)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise WeightsNotFoundError(f"{path}: no such folder ({what}, a `save_pretrained` folder); it comes "
                                       f"from https://huggingface.co/{repo_id}")
        return str(path), True, None
    return repo_id, offline_mode(offline), revision


def pretrained_error(repo_id: str, what: str, error: Exception) -> WeightsNotFoundError:
    """The error for a hub model that could not be loaded from the cache or downloaded."""
    return WeightsNotFoundError(
        f"{repo_id} ({what}, safetensors weights) could not be loaded from a folder, the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) or a download ({type(error).__name__}: {error}); run `huggingface-cli "
        f"download {repo_id}` where online, or give the folder it was saved to; it comes from "
        f"https://huggingface.co/{repo_id}")
