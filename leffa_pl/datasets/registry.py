"""The datasets by name: ``get(name)`` is the ``DatasetSpec`` every command asks; ``register`` adds one.

The built-in datasets (VITON-HD, DressCode, DeepFashion) are registered here; another dataset is one folder with
a ``DatasetSpec`` and one ``register(SPEC)`` call before the command runs (the toy dataset of the tests does that).
"""

from __future__ import annotations

from leffa_pl.datasets.deepfashion.spec import SPEC as DEEPFASHION
from leffa_pl.datasets.dresscode.spec import SPEC as DRESSCODE
from leffa_pl.datasets.spec import DatasetSpec
from leffa_pl.datasets.vitonhd.spec import SPEC as VITONHD
from leffa_pl.evaluation.protocols import Protocol

_SPECS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` under its name; registering the same spec again is a no-op, another one of that name an
    error."""
    if _SPECS.get(spec.name, spec) is not spec:
        raise ValueError(f"dataset {spec.name!r} is registered already")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _SPECS.pop(name, None)


for _builtin in (VITONHD, DRESSCODE, DEEPFASHION):
    register(_builtin)


def names() -> list[str]:
    """The registered dataset names, in registration order."""
    return list(_SPECS)


def specs() -> list[DatasetSpec]:
    return list(_SPECS.values())


def get(name: str) -> DatasetSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_SPECS)}")
    return _SPECS[name]


def of_module(module: object) -> DatasetSpec | None:
    """The spec whose data module class ``module`` is an instance of exactly, or None."""
    return next((spec for spec in _SPECS.values() if type(module) is spec.data_module), None)


def protocols() -> dict[str, Protocol]:
    """Every registered dataset's evaluation protocols by protocol name."""
    return {protocol.name: protocol for spec in _SPECS.values() for protocol in spec.protocols.values()}


def get_protocol(name: str) -> Protocol:
    """The protocol of that name (``deepfashion``, ``vton-paired``, ``vton-unpaired``, ...)."""
    known = protocols()
    if name not in known:
        raise ValueError(f"unknown protocol {name!r}; expected one of {sorted(known)}")
    return known[name]
