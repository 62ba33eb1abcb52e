"""Building a dataset's data module by name (its ``DatasetSpec``, ``leffa_pl.datasets.registry``): for the checker
command and the evaluation."""

from __future__ import annotations

import inspect
from typing import Any

from leffa_pl.data.datamodule import PersonImageDataModule
from leffa_pl.datasets import registry


def data_module_settings(dataset: str) -> set[str]:
    """The constructor settings the data module of ``dataset`` takes (its own and its base's)."""
    names: set[str] = set()
    for cls in registry.get(dataset).data_module.__mro__:
        if issubclass(cls, PersonImageDataModule):
            names.update(p.name for p in inspect.signature(cls.__init__).parameters.values()
                         if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self")
    return names


def build_data_module(dataset: str, root: str, **settings: Any) -> PersonImageDataModule:
    """The data module of ``dataset`` at ``root``. Settings given as None keep the module's default; one the
    module does not take is an error (e.g. ``category`` for VITON-HD)."""
    spec = registry.get(dataset)
    given = {name: value for name, value in settings.items() if value is not None}
    foreign = sorted(set(given) - data_module_settings(dataset))
    if foreign:
        raise ValueError(f"{dataset}: {', '.join(foreign)} does not apply to this dataset")
    return spec.data_module(root=root, **given)
