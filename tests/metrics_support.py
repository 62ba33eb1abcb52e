"""Helpers for the metric tests: no network, small injected networks, images in the datasets' layouts."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.hub
import torchvision
from PIL import Image
from torch import nn


def forbid_network(monkeypatch, tmp_path: Path) -> Path:
    """Point the torch hub cache at an empty folder and make every download path fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to reach the network: {args[:1]}")

    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return torch_home


class TinyFeatures(nn.Module):
    """A small random FID feature extractor that counts the images it has seen."""

    num_features = 4
    preprocessing = "uint8 / 255; 5x5 conv, stride 4; spatial mean"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, self.num_features, 5, stride=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator))
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += images.shape[0]
        return self.conv(images.float() / 255.0).mean(dim=(2, 3))


def textured_images(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """uint8 ``[count, 3, H, W]`` images with smooth structure and noise (closer to photos than white noise)."""
    coarse = rng.integers(0, 256, (count, 3, height // 8 + 1, width // 8 + 1)).astype(np.float64)
    smooth = np.kron(coarse, np.ones((1, 1, 8, 8)))[:, :, :height, :width]
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def perturbed(rng: np.random.Generator, images: np.ndarray, noise: float) -> np.ndarray:
    return np.clip(images + rng.normal(0, noise, images.shape), 0, 255).astype(np.uint8)


def write_image(path: Path, chw: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(path)
    return path


def backbone_file(directory: Path, architecture: str, seed: int = 0) -> tuple[Path, nn.Module]:
    """A randomly initialised torchvision classifier saved like its released weights file."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, architecture)(weights=None).eval()
    path = directory / f"{architecture}-random.pth"
    torch.save(model.state_dict(), path)
    return path, model


DEEPFASHION_NAMES = [
    "fashionWOMENBlouses_Shirtsid0000635004_1front.jpg",
    "fashionWOMENBlouses_Shirtsid0000635004_2side.jpg",
    "fashionMENTees_Tanksid0000404701_1front.jpg",
    "fashionMENTees_Tanksid0000404701_7additional.jpg",
    "fashionWOMENDressesid0000262902_3back.jpg",
    "fashionWOMENDressesid0000262902_1front.jpg",
    "fashionMENDenimid0000008001_4full.jpg",
]
