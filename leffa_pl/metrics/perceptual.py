"""LPIPS networks (torchmetrics' implementation) with the ImageNet backbone loaded from a known file.

torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` always asks torchvision for the pretrained
backbone, i.e. downloads it; here the network is built with a random backbone (no download) and the
backbone weights are loaded from a file found by ``leffa_pl.metrics.weights``. The linear calibration
layers ship inside the torchmetrics package.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

import torch
from torch import nn
from torchmetrics.functional.image.lpips import _NoTrainLpips
from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights

from leffa_pl.metrics.weights import WeightsSource, WeightsUnavailable, load_weights

LPIPS_BACKBONES: dict[str, tuple[str, WeightsSource]] = {
    "alex": ("alexnet", WeightsSource("AlexNet ImageNet weights (torchvision; LPIPS backbone)",
                                      AlexNet_Weights.DEFAULT.url, check_hash=True, option="--lpips-weights")),
    "squeeze": ("squeezenet1_1", WeightsSource("SqueezeNet 1.1 ImageNet weights (torchvision; LPIPS backbone)",
                                               SqueezeNet1_1_Weights.DEFAULT.url, check_hash=True,
                                               option="--lpips-weights")),
}
# LPIPS keeps torchvision's ``features[i]`` as ``slice<k>.<i>`` (lpips package, torchmetrics' AlexNet) or
# ``slices.<k>.<i>`` (torchmetrics' SqueezeNet): without that prefix, the key is ``features.<i>...``.
_SLICE_PREFIX = re.compile(r"^(slices\.\d+|slice\d+)\.")


def backbone_state_for_lpips(lpips_backbone: nn.Module,
                             classifier_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of an LPIPS backbone (sliced torchvision ``features``) from a classifier's state dict."""
    state = {}
    for key, tensor in lpips_backbone.state_dict().items():
        source_key = "features." + _SLICE_PREFIX.sub("", key)
        if source_key not in classifier_state or classifier_state[source_key].shape != tensor.shape:
            raise ValueError(f"no {source_key} of shape {tuple(tensor.shape)}")
        state[key] = classifier_state[source_key]
    return state


def build_lpips_network(net: str = "alex", backbone_weights: str | os.PathLike | None = None,
                        allow_download: bool = True, option: str | None = None) -> nn.Module:
    """An LPIPS network (inputs in [-1, 1], output ``[B, 1, 1, 1]``) with ImageNet backbone weights.

    ``backbone_weights`` is a torchvision state dict of the whole classifier (e.g. ``alexnet-owt-7be5be79.pth``);
    without it the torch hub cache is used, then a download when allowed. Raises ``WeightsUnavailable``, whose
    remedy names ``option`` (the caller's way to give the file; default: leffa-pl-score's ``--lpips-weights``).
    """
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS network {net!r}: expected one of {sorted(LPIPS_BACKBONES)}")
    architecture, source = LPIPS_BACKBONES[net]
    if option is not None:
        source = dataclasses.replace(source, option=option)
    state, path = load_weights(source, backbone_weights, allow_download)
    network = _NoTrainLpips(net=net, pnet_rand=True)
    try:
        backbone_state = backbone_state_for_lpips(network.net, state)
    except ValueError as error:
        raise WeightsUnavailable(source.description, f"{path} is not torchvision's {architecture} ({error})",
                                 f"Give the {source.url} file") from None
    network.net.load_state_dict(backbone_state)
    return network
