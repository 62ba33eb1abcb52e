"""Feature statistics of a real image set for FID (and its features for KID), cached on disk.

The cache key covers everything that changes the statistics: the image files (resolved path, mtime and
size of each), the resolution they are resized to, the resize method, and the feature extractor's
identity (network, preprocessing, weights digest). Files are safetensors with the key description in
their metadata, checked again on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from leffa_pl.atomic_write import atomic_write

CACHE_FORMAT = 1
log = logging.getLogger(__name__)


@dataclass
class RealStatistics:
    """Sums that FID needs (as torchmetrics' FID keeps them) and, optionally, the features for KID."""

    feature_sum: torch.Tensor  # [D] float64
    outer_sum: torch.Tensor  # [D, D] float64, sum of f f^T
    count: int
    features: torch.Tensor | None = None  # [N, D] float32

    @classmethod
    def empty(cls, num_features: int, keep_features: bool) -> "RealStatistics":
        return cls(torch.zeros(num_features, dtype=torch.float64),
                   torch.zeros(num_features, num_features, dtype=torch.float64), 0,
                   torch.zeros(0, num_features) if keep_features else None)

    def add(self, features: torch.Tensor) -> None:
        """Accumulate a batch of features ``[B, D]``."""
        features64 = features.detach().double().cpu()
        self.feature_sum += features64.sum(dim=0)
        self.outer_sum += features64.T @ features64
        self.count += features.shape[0]
        if self.features is not None:
            self.features = torch.cat([self.features, features.detach().float().cpu()])


def describe_real_set(paths: Sequence[str | os.PathLike], resolution: tuple[int, int], resize: str,
                      extractor_identity: str) -> dict:
    """The cache key's content; raises ``FileNotFoundError`` naming a missing image."""
    files = []
    for path in sorted(str(Path(p).resolve()) for p in paths):
        status = os.stat(path)
        files.append([path, status.st_mtime_ns, status.st_size])
    file_digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return {"format": CACHE_FORMAT, "images": len(files), "files_sha256": file_digest,
            "resolution": list(resolution), "resize": resize, "feature_extractor": extractor_identity}


class RealStatisticsCache:
    """A folder of ``real-<key>.safetensors`` files."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path_for(self, description: dict) -> Path:
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]
        return self.directory / f"real-{key}.safetensors"

    def load(self, description: dict, need_features: bool) -> RealStatistics | None:
        """The cached statistics, or None when absent, unreadable, for another key, or lacking features."""
        path = self.path_for(description)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                stored = json.loads((handle.metadata() or {}).get("description", "null"))
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            log.warning("%s: unreadable real-set statistics (%s); computing them again", path, error)
            return None
        if stored != json.loads(json.dumps(description)):
            log.warning("%s: holds statistics of another real set; computing them again", path)
            return None
        if need_features and "features" not in tensors:
            return None
        return RealStatistics(tensors["feature_sum"], tensors["outer_sum"], int(tensors["count"]),
                              tensors.get("features") if need_features else None)

    def save(self, description: dict, statistics: RealStatistics) -> Path:
        """Write atomically (``atomic_write``)."""
        path = self.path_for(description)
        tensors = {"feature_sum": statistics.feature_sum, "outer_sum": statistics.outer_sum,
                   "count": torch.tensor(statistics.count, dtype=torch.int64)}
        if statistics.features is not None:
            tensors["features"] = statistics.features.contiguous()
        with atomic_write(path) as temporary:
            save_file(tensors, str(temporary), metadata={"description": json.dumps(description, sort_keys=True)})
        return path
