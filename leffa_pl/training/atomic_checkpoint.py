"""Checkpoint IO that never leaves a half-written checkpoint behind and never holds a second copy in memory."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from leffa_pl.atomic_write import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Streams ``torch.save`` into ``atomic_write``'s temporary file (same folder, then a rename); loads
    weights-only and memory-mapped. Lightning's own save serialises the whole checkpoint into a ``BytesIO`` first:
    a second copy of the checkpoint in host memory at every save; its load reads the whole file into each rank's
    memory (``make bench-checkpoint``). Local paths only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_write(path) as temporary:
            torch.save(checkpoint, temporary)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # Weights-only: resuming never executes code from a checkpoint file. Memory-mapped: the tensors stay in the
        # file's pages until used, so the ranks of a node share one copy in the page cache instead of each reading
        # the whole checkpoint into its own memory. On the CPU, as with Lightning's own IO (the strategy moves them
        # on): torch.load's default would put every rank's copy on the device it was saved from, cuda:0.
        return torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=True)
