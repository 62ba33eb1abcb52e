"""Checkpoint IO that never leaves a half-written checkpoint behind."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from leffa_pl.atomic_write import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes with ``atomic_write`` (temporary file in the same folder, then a rename); loads weights-only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_write(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # Resuming never executes code from a checkpoint file.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
