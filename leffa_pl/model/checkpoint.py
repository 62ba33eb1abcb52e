"""Reading and writing flat state dicts (.pth/.pt/.bin via weights-only torch.load, .safetensors).

Nothing here executes code from a file: pickles are read with ``weights_only=True`` and any
failure is reported as a ``CheckpointError`` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file

from leffa_pl.atomic_write import atomic_write

SAFETENSORS_SUFFIX = ".safetensors"
MAX_LISTED_KEYS = 8
# LeffaEMA's entry in a Lightning checkpoint: {"shadow": {parameter name: average}, "n_averaged": tensor}
EMA_KEY = "ema"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_PROTOCOL_2_PLUS = b"\x80"  # the legacy format: a bare pickle (protocol 2 or later)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with the file and the reason in the message."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a flat ``{name: tensor}`` dict without executing any code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix != SAFETENSORS_SUFFIX:
        with open(path, "rb") as handle:
            head = handle.read(len(ZIP_MAGIC))
        if not head.startswith((ZIP_MAGIC, PICKLE_PROTOCOL_2_PLUS)):
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle; the "
                                  f"file starts with {head!r}); expected .pth/.pt/.bin from torch.save or "
                                  ".safetensors")
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused to load: the pickle holds more than tensors "
                              f"(weights-only loading): {error}") from None
    except Exception as error:  # torch.load raises many types on garbage input; all mean the same here
        raise CheckpointError(f"{path}: not a readable checkpoint: {error}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a dict of tensors")
    if "pytorch-lightning_version" in state:
        raise CheckpointError(f"{path}: a Lightning training checkpoint, not a weights file. Resume its run with "
                              f"leffa-pl fit --ckpt_path={path}; to start a new run from its weights, give the "
                              "run's export (<run>/export/leffa.safetensors)")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: not a flat state dict; non-tensor entries: {_listing(not_tensors)}")
    return dict(state)


def check_state_dict(path: str | os.PathLike, state: Mapping[str, torch.Tensor],
                     expected: Mapping[str, torch.Tensor]) -> None:
    """Raise a ``CheckpointError`` listing missing keys, unexpected keys and shape mismatches."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{path}: does not match the model ({'; '.join(problems)})")


def write_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write atomically (``atomic_write``); the format follows the suffix."""
    path = Path(path)
    with atomic_write(path) as temporary:
        save_state_dict(state, temporary, path.suffix)
    return path


def save_state_dict(state: Mapping[str, torch.Tensor], target: Path, suffix: str,
                    metadata: Mapping[str, str] | None = None) -> None:
    """Write ``state`` to ``target`` in the format of ``suffix`` (``metadata``: safetensors only)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if suffix == SAFETENSORS_SUFFIX:
        save_file(tensors, str(target), metadata=dict(metadata) if metadata else None)
    else:
        torch.save(tensors, target)


FILE_HASH_CHUNK = 1 << 24  # read 16 MiB at a time: weight files are GiBs


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(FILE_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes: the weights themselves, whatever file or
    format (``.ckpt``, ``.pth``, ``.safetensors``) they came from. Cost: ``make bench-fingerprint``."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    return shown + (f", ... ({len(items) - MAX_LISTED_KEYS} more)" if len(items) > MAX_LISTED_KEYS else "")
