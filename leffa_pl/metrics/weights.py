"""Finding pretrained backbone weights (Inception for FID, AlexNet/SqueezeNet for LPIPS) without surprises.

A weights file comes from, in this order: a local path given by the user; the torch hub cache, where the
libraries themselves (torchvision, torch-fidelity) keep what they downloaded; a download from the
library's own URL into that cache, when downloads are allowed. When none works, ``WeightsUnavailable``
says what is missing, why, and how to fix it, so that the metric can be reported as not computed.

Files are always read with ``read_state_dict`` (weights-only unpickling or safetensors): the libraries'
own loaders would unpickle with ``weights_only=False``.
"""

from __future__ import annotations

import os
import socket
import urllib.error
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.hub

from leffa_pl.model.checkpoint import CheckpointError, read_state_dict

# Seconds a download may wait for the server (to connect, or for the next data): torch.hub has no timeout, so a
# stalled server would hang a training run's validation set-up forever.
DOWNLOAD_TIMEOUT_S = 60.0


class WeightsUnavailable(RuntimeError):
    """Backbone weights that cannot be had; ``reason`` and ``remedy`` go into the report."""

    def __init__(self, what: str, reason: str, remedy: str) -> None:
        super().__init__(f"{what}: {reason}. {remedy}")
        self.what = what
        self.reason = reason
        self.remedy = remedy


@dataclass(frozen=True)
class WeightsSource:
    """Where a library downloads a backbone from, and whether it checks the file's hash."""

    description: str
    url: str
    check_hash: bool
    option: str  # the command-line option that gives a local file instead

    @property
    def file_name(self) -> str:
        return os.path.basename(self.url)


def hub_cache_path(source: WeightsSource) -> Path:
    """The file torch.hub (and so torchvision / torch-fidelity) uses for this URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / source.file_name


def resolve_weights_file(source: WeightsSource, local_path: str | os.PathLike | None = None,
                         allow_download: bool = True) -> Path:
    """Return a local file holding the weights, downloading into the hub cache only when allowed."""
    cached = hub_cache_path(source)
    remedy = (f"Give a local copy with {source.option} PATH, or put {source.url} at {cached} "
              f"(the torch hub cache; TORCH_HOME moves it)")
    if local_path is not None:
        path = Path(local_path)
        if not path.is_file():
            raise WeightsUnavailable(source.description, f"{path}: no such file", remedy)
        return path
    if cached.is_file():
        return cached
    if not allow_download:
        raise WeightsUnavailable(source.description,
                                 f"not in the torch hub cache ({cached}) and downloads are switched off", remedy)
    cached.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = None
    if source.check_hash:
        match = torch.hub.HASH_REGEX.search(source.file_name)
        hash_prefix = match.group(1) if match else None
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            torch.hub.download_url_to_file(source.url, str(cached), hash_prefix=hash_prefix, progress=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise WeightsUnavailable(source.description, f"download of {source.url} failed ({error})",
                                 remedy) from None
    return cached


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib (torch.hub's downloader) opens its sockets with the default timeout: set it for the download."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_weights(source: WeightsSource, local_path: str | os.PathLike | None = None,
                 allow_download: bool = True) -> tuple[dict[str, torch.Tensor], Path]:
    """Resolve and read the weights; an unreadable file is reported like a missing one."""
    path = resolve_weights_file(source, local_path, allow_download)
    try:
        return read_state_dict(path), path
    except CheckpointError as error:
        remedy = f"Replace the file (from {source.url}) or give another with {source.option}"
        raise WeightsUnavailable(source.description, str(error), remedy) from None
