"""FID/KID feature extractors: 2048-d Inception-v3 pool features of uint8 images ``[B, 3, H, W]``.

Two extractors are in use in the literature (see docs/evaluation.md):
- ``tf-inception``: the TF-FID Inception (pytorch-fid, clean-fid, torch-fidelity, torchmetrics' default),
  inputs resized to 299x299 with TF1.x-compatible bilinear interpolation. Leffa's try-on evaluator.
- ``torchvision-inception``: torchvision's ImageNet Inception-v3 as the CFLD/PIDM pose-transfer code uses
  it: [0, 1] input, bilinear resize to 299x299, then the ``transform_input`` pre-scaling.

Every extractor has ``num_features`` and ``preprocessing``; ``feature_extractor_identity`` names the
network, its preprocessing and a digest of its weights (part of the FID real-statistics cache key).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torchmetrics.image.fid import NoTrainInceptionV3
from torchvision.models import Inception_V3_Weights

from leffa_pl.metrics.weights import WeightsSource, WeightsUnavailable, load_weights

INCEPTION_SIZE = 299
FEATURES = 2048
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TFInceptionFeatures(nn.Module):
    """Pool features of the TF-FID Inception (torch-fidelity's network, run by torchmetrics)."""

    num_features = FEATURES
    preprocessing = "uint8; TF1.x-compatible bilinear resize to 299x299; (x - 128) / 128"

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().__init__()
        # torch-fidelity builds this network only while loading weights from a file, with weights_only=False;
        # the file handed to it is written here from tensors already read safely.
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "inception.pth")
            torch.save(state_dict, path)
            self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(FEATURES)],
                                                feature_extractor_weights_path=path, antialias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception(images)


class TorchvisionInceptionFeatures(nn.Module):
    """Pool features of torchvision's ImageNet Inception-v3, with CFLD's input handling."""

    num_features = FEATURES
    preprocessing = ("uint8 / 255; bilinear resize to 299x299 (align_corners=False, no antialias); "
                     "x * std / 0.5 + (mean - 0.5) / 0.5 per channel (ImageNet mean/std)")

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.inception = torchvision.models.Inception3(aux_logits=True, transform_input=False, init_weights=False)
        self.inception.load_state_dict(state_dict)
        self.inception.fc = nn.Identity()
        self.register_buffer("scale", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) / 0.5, persistent=False)
        self.register_buffer("shift", (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) - 0.5) / 0.5, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "TorchvisionInceptionFeatures":
        return super().train(False)  # batch norm and dropout stay in inference mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return self.inception(x * self.scale + self.shift)


FID_EXTRACTORS: dict[str, tuple[type[nn.Module], WeightsSource]] = {
    "tf-inception": (TFInceptionFeatures, WeightsSource(
        "Inception-v3 FID weights (TF 2015-12-05, as in pytorch-fid / torch-fidelity)", URL_INCEPTION_V3,
        check_hash=False, option="--inception-weights")),  # torch-fidelity does not check this file's hash
    "torchvision-inception": (TorchvisionInceptionFeatures, WeightsSource(
        "Inception-v3 ImageNet weights (torchvision IMAGENET1K_V1)", Inception_V3_Weights.IMAGENET1K_V1.url,
        check_hash=True, option="--inception-weights")),
}


def build_fid_feature_extractor(kind: str = "tf-inception", weights: str | os.PathLike | None = None,
                                allow_download: bool = True) -> nn.Module:
    """The named extractor with its pretrained weights; raises ``WeightsUnavailable`` when they cannot be had."""
    if kind not in FID_EXTRACTORS:
        raise ValueError(f"FID feature extractor {kind!r}: expected one of {sorted(FID_EXTRACTORS)}")
    state, path = load_weights(FID_EXTRACTORS[kind][1], weights, allow_download)
    return extractor_from_state_dict(kind, state, path)


def extractor_from_state_dict(kind: str, state: dict[str, torch.Tensor],
                              path: Path | str = "<state dict>") -> nn.Module:
    """Build the named extractor from weights already in memory."""
    extractor_class, source = FID_EXTRACTORS[kind]
    try:
        return extractor_class(state)
    except RuntimeError as error:
        raise WeightsUnavailable(source.description, f"{path} does not fit the {kind} network: "
                                 f"{str(error).splitlines()[0]}", f"Give the {source.url} file") from None


def random_inception_state_dict(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Randomly initialised weights for the named extractor's Inception (for timing without the real ones).

    torchvision's Inception3 has the parameter names and shapes of torch-fidelity's TF-FID network when
    built without auxiliary logits and with its 1008 classes.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "tf-inception":
            network = torchvision.models.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        else:
            network = torchvision.models.Inception3(aux_logits=True, init_weights=False)
    return network.state_dict()


def state_digest(module: nn.Module) -> str:
    """SHA-256 over the module's state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_extractor_identity(module: nn.Module) -> str:
    """What determines the features: class, preprocessing and weights."""
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    preprocessing = getattr(module, "preprocessing", "unspecified preprocessing")
    return f"{kind} [{preprocessing}] sha256:{state_digest(module)[:16]}"
