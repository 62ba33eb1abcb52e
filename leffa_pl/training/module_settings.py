"""``LeffaModule``'s config sections beyond its flat settings, and the flat keys they replaced.

``model.leffa_loss`` (``LeffaLossSettings``) and ``model.validation_sampler`` (``ValidationSamplerSettings``)
were flat ``model.leffa_*`` / ``model.validation_*`` settings up to f8eb75b. A config or command line that
still gives a flat key is refused with its new name (``leffa_pl/cli.py``); the hyper_parameters of checkpoints
written before hold them too, and those are moved into the sections when such a checkpoint is loaded
(``sections_of_flat_settings``): old runs resume, and load, with the settings they trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from leffa_pl.model.sampler import SamplerSettings


@dataclass(frozen=True)
class ValidationSamplerSettings:
    """The ``model.validation_sampler`` section: how validation generates its samples (the other sampler
    options at ``SamplerSettings``' defaults, those of the released inference)."""

    scheduler: str = "ddpm"
    steps: int = 10
    guidance_scale: float = 2.5

    def __post_init__(self) -> None:
        try:
            self.sampler_settings()  # its checks
        except ValueError as error:
            raise ValueError(f"model.validation_sampler: {error}") from None

    def sampler_settings(self) -> SamplerSettings:
        return SamplerSettings(scheduler=self.scheduler, num_inference_steps=self.steps,
                               guidance_scale=self.guidance_scale)


# flat model setting up to f8eb75b -> (its section, the key in it)
FLAT_SETTINGS = {
    "leffa_tau": ("leffa_loss", "tau"),
    "leffa_weight": ("leffa_loss", "weight"),
    "leffa_theta_resolution": ("leffa_loss", "theta_resolution"),
    "leffa_theta_timestep": ("leffa_loss", "theta_timestep"),
    "leffa_distance": ("leffa_loss", "distance"),
    "validation_scheduler": ("validation_sampler", "scheduler"),
    "validation_steps": ("validation_sampler", "steps"),
    "validation_guidance_scale": ("validation_sampler", "guidance_scale"),
}


def new_key(flat: str) -> str:
    """``leffa_weight`` -> ``model.leffa_loss.weight``."""
    section, key = FLAT_SETTINGS[flat]
    return f"model.{section}.{key}"


def flat_settings_refusal(config: Mapping[str, Any]) -> str | None:
    """What to say when ``config`` (a config's model settings) gives flat keys; None when it gives none."""
    given = [name for name in FLAT_SETTINGS if config.get(name) is not None]
    if not given:
        return None
    first, value = given[0], config[given[0]]
    section, key = FLAT_SETTINGS[first]
    moves = ", ".join(f"model.{name} -> {new_key(name)}" for name in given)
    return (f"flat model settings moved into config sections: {moves}. In a config: model: {{{section}: {{{key}: "
            f"{value}}}}}; on the command line: --{new_key(first)}={value} (docs/training.md)")


def sections_of_flat_settings(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The sections that the flat keys among ``settings`` (a checkpoint's hyper_parameters) fill, each holding
    the section's keys given there: {} for a checkpoint written after f8eb75b."""
    sections: dict[str, dict[str, Any]] = {}
    for flat, (section, key) in FLAT_SETTINGS.items():
        if settings.get(flat) is not None:
            sections.setdefault(section, {})[key] = settings[flat]
    return sections
