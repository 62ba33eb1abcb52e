"""Checkpoint IO that never leaves a half-written checkpoint behind and never holds a second copy in memory."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from leffa_pl.atomic_write import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Streams ``torch.save`` into ``atomic_write``'s temporary file (same folder, then a rename); loads
    weights-only. Lightning's own save serialises the whole checkpoint into a ``BytesIO`` first: a second copy of
    the checkpoint in host memory at every save (``make bench-checkpoint``). Local paths only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_write(path) as temporary:
            torch.save(checkpoint, temporary)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # Resuming never executes code from a checkpoint file. Tensors come to the CPU (the strategy moves them on),
        # as with Lightning's own default: torch.load's would put every rank's copy on the device each tensor was
        # saved from, cuda:0 for all ranks.
        return super().load_checkpoint(path, map_location=map_location or "cpu", weights_only=True)
