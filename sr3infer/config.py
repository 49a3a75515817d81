"""`config.json` of a model folder: architecture, noise schedule, task and sampling defaults in one typed record."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import reject_unknown_keys
from .manifest import FORMAT_VERSION
from .schedule import NoiseSchedule
from .unet import UNetConfig

__all__ = ["ModelConfig", "SamplingDefaults", "FORMAT_VERSION", "PREDICTIONS", "PRESETS", "UNSET"]

PREDICTIONS = ("eps", "v", "x0")
CONSISTENCY_MODES = ("none", "final", "every")
PRESETS = ("fidelity", "realism")  # the named recipes a model folder may carry (see `ModelConfig.presets`)
UNSET: Any = object()  # an argument left out, where None is a value (start_noise_level=None: start from pure noise)


@dataclass(frozen=True)
class SamplingDefaults:
    """A sampling recipe: what `upscale()` does when the caller does not say (`ModelConfig.sampling`), or a preset.

    The one sampling-settings object of `Upscaler.upscale`, `upscale_tensor`, `Cascade` and the CLI:
    `config.recipe(preset, num_steps=..., ...)` resolves a call's arguments into one.
    """

    sampler: str = "ancestral"
    num_steps: int = 2000
    spacing: str = "linear"
    start_noise_level: float | None = None   # None: start from pure noise (plain SR3)
    consistency: str = "none"                # "none", "final" or "every" (DDNM-style, on each x0)
    eta: float = 0.0                         # DDIM only: 0 deterministic, 1 as stochastic as ancestral

    @classmethod
    def from_dict(cls, data: dict) -> SamplingDefaults:
        reject_unknown_keys(data, (f.name for f in fields(cls)), "sampling config")
        return cls(**data)

    def override(self, **settings: Any) -> SamplingDefaults:
        """This recipe with `settings` replaced; a setting given as None (start_noise_level: UNSET) is kept."""
        reject_unknown_keys(settings, (f.name for f in fields(self)), "sampling setting")
        given = {k: v for k, v in settings.items() if v is not (UNSET if k == "start_noise_level" else None)}
        return replace(self, **given) if given else self


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and run a model; stored as `config.json` and in safetensors metadata."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    scale: int = 8                            # output side / input side
    lowres_size: int = 16                     # the input size the model was trained on
    prediction: str = "eps"                   # what the U-Net predicts: eps (SR3), v or x0
    residual: bool = False                    # diffuses hr - bicubic(lowres) instead of hr
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    presets: dict[str, SamplingDefaults] = field(default_factory=dict)  # "fidelity", "realism": chosen by a stated rule
    task: dict = field(default_factory=dict)  # free-form: domain, dataset, licence notes
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"Unknown prediction {self.prediction!r}; expected one of {', '.join(PREDICTIONS)}.")
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale!r}.")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"config.json has format_version {self.format_version!r}; this sr3infer reads {FORMAT_VERSION}. "
                "Upgrade sr3infer (pip install -U sr3infer)."
            )
        unknown = sorted(set(self.presets) - set(PRESETS))
        if unknown:
            raise ValueError(f"Unknown preset names {unknown} in the model config; expected a subset of {list(PRESETS)}.")
        if self.unet.in_channels != 2 * self.unet.out_channels:
            raise ValueError(
                f"U-Net in_channels ({self.unet.in_channels}) must be twice out_channels ({self.unet.out_channels}): "
                "the condition and the noisy image are concatenated."
            )

    @property
    def out_size(self) -> int:
        return self.lowres_size * self.scale

    @property
    def channels(self) -> int:
        return self.unet.out_channels

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "scale": self.scale,
            "lowres_size": self.lowres_size,
            "prediction": self.prediction,
            "residual": self.residual,
            "unet": self.unet.to_dict(),
            "schedule": self.schedule.to_dict(),
            "sampling": _recipe_dict(self.sampling),
            **({"presets": {name: _recipe_dict(r) for name, r in self.presets.items()}} if self.presets else {}),
            "task": dict(self.task),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"A model config must be a JSON object, got {type(data).__name__}.")
        reject_unknown_keys(data, (f.name for f in fields(cls)), "model config")
        data = dict(data)
        if "unet" not in data:
            raise ValueError("The model config has no 'unet' section; is this an sr3infer config.json?")
        data["unet"] = UNetConfig.from_dict(data["unet"])
        data["schedule"] = NoiseSchedule.from_dict(data.get("schedule", {}))
        data["sampling"] = SamplingDefaults.from_dict(data.get("sampling", {}))
        presets = data.get("presets", {})
        if not isinstance(presets, dict):
            raise ValueError(f"'presets' in the model config must be an object of recipes, got {type(presets).__name__}.")
        data["presets"] = {name: SamplingDefaults.from_dict(recipe) for name, recipe in presets.items()}
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelConfig:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}).") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def recipe(self, preset: str | None = None, **settings: Any) -> SamplingDefaults:
        """The named preset's recipe, or the default recipe (`sampling`) for None, with `settings` overriding parts
        of it (see `SamplingDefaults.override`)."""
        if preset is None:
            return self.sampling.override(**settings)
        if preset not in self.presets:
            have = ", ".join(sorted(self.presets)) or "none"
            raise ValueError(f"Unknown preset {preset!r} for this model; it has: {have}. Leave preset out for its default.")
        return self.presets[preset].override(**settings)


def _recipe_dict(recipe: SamplingDefaults) -> dict[str, Any]:
    return {f.name: getattr(recipe, f.name) for f in fields(SamplingDefaults)}
