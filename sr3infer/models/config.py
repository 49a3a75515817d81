"""`config.json` of a model folder: architecture, network, schedule, task and recipes in one record,
every value checked (`runtime.validate`) before anything is allocated."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .registry import DEFAULT_ARCHITECTURE, get_architecture
from ..runtime.validate import (
    MAX_LOWRES_SIZE, MAX_NUM_SAMPLES, MAX_SCALE, MAX_TRAIN_TIMESTEPS, ConfigError, check_bool, check_choice, check_float, check_int,
    check_mapping,
)
from ..errors import parse_json, reject_unknown_keys
from ..sampling.samplers import SAMPLERS, check_sampler_options, sampler_option_defaults, sampler_option_names
from ..sampling.flips import ENSEMBLES
from ..sampling.schedule import SPACINGS, NoiseSchedule
from .unet import UNetConfig

__all__ = ["ModelConfig", "Recipe", "ReportSettings", "FORMAT_VERSION", "PREDICTIONS", "PRESETS", "CONSISTENCY_MODES", "UNSET"]

FORMAT_VERSION = 1  # of the files sr3infer writes: the weights manifest and model config.json

PREDICTIONS = ("eps", "v", "x0")
CONSISTENCY_MODES = ("none", "final", "every")
PRESETS = ("fidelity", "realism", "fast")  # the named recipes a model folder may carry


class _Unset:
    """The type of `UNSET`: one object, shown as UNSET in signatures, kept by copy and pickle."""

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # an argument left out, where None is a value (start_noise_level)


@dataclass(frozen=True)
class Recipe:
    """A sampling recipe: what `upscale()` runs, a model's default (`sampling`) or a preset.

    Checked when made (ValueError naming the field). `options` holds the sampler's own options
    (DDIM's `eta`) with the sampler's defaults filled in. `num_samples` K > 1 outputs the per-pixel
    mean of K samples: higher PSNR, smoother, K times the network calls; `ensemble` "flips" takes
    sample j in the j-th of four flipped orientations (`sampling.flips`), at no extra calls.
    """

    sampler: str = "ancestral"
    num_steps: int = 2000                    # inference steps (at most num_train_timesteps)
    spacing: str = "linear"
    start_noise_level: float | None = None   # None: start from pure noise (plain SR3)
    consistency: str = "none"                # "none", "final" or "every" (DDNM-style, on each x0)
    options: Mapping[str, float] = field(default_factory=dict)  # e.g. {"eta": 1.0} for ddim
    num_samples: int = 1                     # samples per image averaged into the output
    weights: str | None = None               # a distilled student's weights, by name or folder
    ensemble: str = "none"                   # "none" or "flips" (sample j flipped, see sampling.flips)

    def __post_init__(self) -> None:
        check_choice(self.sampler, "sampler", sorted(SAMPLERS))
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights.strip()):
            raise ConfigError("weights", "a model name or folder (a distilled student), or null", self.weights)
        object.__setattr__(self, "num_steps", check_int(self.num_steps, "num_steps", 1, MAX_TRAIN_TIMESTEPS))
        check_choice(self.spacing, "spacing", SPACINGS)
        if self.start_noise_level is not None:
            object.__setattr__(self, "start_noise_level", check_float(
                self.start_noise_level, "start_noise_level", 0.0, 1.0, open_low=True, open_high=True))
        check_choice(self.consistency, "consistency", CONSISTENCY_MODES)
        check_choice(self.ensemble, "ensemble", ENSEMBLES)
        object.__setattr__(self, "num_samples", check_int(self.num_samples, "num_samples", 1, MAX_NUM_SAMPLES))
        options = check_mapping(dict(self.options) if isinstance(self.options, Mapping) else self.options, "options")
        # An option another sampler takes, left at its default, changes nothing: drop it.
        takes = sampler_option_defaults(self.sampler)
        options = {k: v for k, v in options.items() if k in takes or v != _default_elsewhere(k)}
        # Read-only, so the checked values cannot be changed behind the check.
        try:
            checked = check_sampler_options(self.sampler, options)
        except ConfigError as err:
            raise err.within("options") from None
        object.__setattr__(self, "options", MappingProxyType(checked))

    def __hash__(self) -> int:
        return hash((self.sampler, self.num_steps, self.spacing, self.start_noise_level, self.consistency,
                     tuple(sorted(self.options.items())), self.num_samples, self.weights, self.ensemble))

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        """From `config.json["sampling"]` or a preset; a flat "eta" goes to samplers taking it."""
        data = dict(check_mapping(data, "sampling"))
        reject_unknown_keys(data, [*(f.name for f in fields(cls)), "eta"], "sampling config")
        if "eta" in data:
            eta, sampler = data.pop("eta"), data.get("sampler", cls.sampler)
            if sampler not in SAMPLERS or "eta" in sampler_option_defaults(sampler):
                data["options"] = {"eta": eta, **check_mapping(data.get("options", {}), "options")}
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The `from_dict` input, leaving out defaults (`num_samples` 1, no `weights`, `ensemble` "none")."""
        left_out = {"num_samples": 1, "weights": None, "ensemble": "none"}
        return {f.name: (dict(self.options) if f.name == "options" else getattr(self, f.name)) for f in fields(self)
                if f.name not in left_out or getattr(self, f.name) != left_out[f.name]}

    def override(self, **settings: Any) -> Recipe:
        """This recipe with fields (num_steps, ...) or sampler options (eta, ...) replaced; None
        keeps a part, and a new sampler keeps only the options it takes."""
        names = {f.name for f in fields(self)} - {"options"}
        option_names = sampler_option_names()
        reject_unknown_keys(settings, names | option_names, "sampling setting")
        given = {k: v for k, v in settings.items() if v is not (UNSET if k == "start_noise_level" else None)}
        if not given:
            return self
        fields_given = {k: v for k, v in given.items() if k in names}
        options_given = {k: v for k, v in given.items() if k in option_names}
        sampler = fields_given.get("sampler", self.sampler)
        check_choice(sampler, "sampler", sorted(SAMPLERS))
        takes = sampler_option_defaults(sampler)
        options = {**{k: v for k, v in self.options.items() if k in takes}, **options_given}
        return replace(self, **fields_given, options=check_sampler_options(sampler, options))


def _default_elsewhere(option: str) -> Any:
    """The default of `option` in the samplers that take it (UNSET when none does)."""
    defaults = {sampler_option_defaults(name).get(option, UNSET) for name in SAMPLERS} - {UNSET}
    return defaults.pop() if len(defaults) == 1 else UNSET


@dataclass(frozen=True)
class ReportSettings:
    """What the fidelity report needs from a model: the made-up mask's std threshold (calibrated on
    val by benchmarks/calibrate_madeup.py) and its precision there. None: not calibrated."""

    madeup_std_threshold: float | None = None  # [0, 1] pixel units, as the uncertainty map
    madeup_precision: float | None = None      # P(|error| > 0.1 | std > threshold) there
    calibration: str = ""                      # what it was calibrated on

    def __post_init__(self) -> None:
        for name in ("madeup_std_threshold", "madeup_precision"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_float(getattr(self, name), name, 0.0, 1.0))
        if not isinstance(self.calibration, str):
            raise ConfigError("calibration", "a string", self.calibration)

    @classmethod
    def from_dict(cls, data: dict) -> ReportSettings:
        reject_unknown_keys(data, (f.name for f in fields(cls)), "report config")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and run a model, stored as `config.json`; `network` is the
    config of `architecture` (see `sr3infer.models.registry`)."""

    network: Any = field(default_factory=UNetConfig)
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    scale: int = 8                            # output side / input side
    lowres_size: int = 16                     # the input size the model was trained on
    prediction: str = "eps"                   # what the network predicts: eps (SR3), v or x0
    residual: bool = False                    # diffuses hr - bicubic(lowres) instead of hr
    sampling: Recipe = field(default_factory=Recipe)
    presets: dict[str, Recipe] = field(default_factory=dict)  # chosen by a stated rule
    task: dict = field(default_factory=dict)  # free-form: domain, dataset, licence notes
    report: ReportSettings = field(default_factory=ReportSettings)  # calibrated threshold
    architecture: str = DEFAULT_ARCHITECTURE
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        arch = get_architecture(self.architecture)
        if not isinstance(self.network, arch.config_class):
            raise ConfigError("network", f"a {arch.config_class.__name__} for architecture {self.architecture!r}",
                              self.network)
        try:
            arch.check(self.network)
        except ConfigError as err:
            raise err.within("network") from None
        for name, kind in (("schedule", NoiseSchedule), ("sampling", Recipe), ("report", ReportSettings)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(name, f"a {kind.__name__}", getattr(self, name))
        object.__setattr__(self, "scale", check_int(self.scale, "scale", 1, MAX_SCALE))
        object.__setattr__(self, "lowres_size", check_int(self.lowres_size, "lowres_size", 1, MAX_LOWRES_SIZE))
        check_choice(self.prediction, "prediction", PREDICTIONS)
        check_bool(self.residual, "residual")
        check_mapping(self.task, "task")
        check_mapping(self.presets, "presets")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"config.json has format_version {self.format_version!r}; this sr3infer reads {FORMAT_VERSION}. "
                "Upgrade sr3infer (pip install -U sr3infer)."
            )
        unknown = sorted(set(self.presets) - set(PRESETS))
        if unknown:
            raise ValueError(f"Unknown preset names {unknown} in the model config; expected a subset of {list(PRESETS)}.")
        total = self.schedule.num_train_timesteps
        for key, recipe in (("sampling", self.sampling), *((f"presets.{k}", r) for k, r in self.presets.items())):
            if not isinstance(recipe, Recipe):
                raise ConfigError(key, "a Recipe", recipe)
            if recipe.num_steps > total:
                raise ConfigError(f"{key}.num_steps", f"at most the schedule's num_train_timesteps ({total})",
                                  recipe.num_steps)

    @property
    def out_size(self) -> int:
        return self.lowres_size * self.scale

    @property
    def channels(self) -> int:
        """Image channels (3 for RGB)."""
        return get_architecture(self.architecture).image_channels(self.network)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "architecture": self.architecture,
            "scale": self.scale,
            "lowres_size": self.lowres_size,
            "prediction": self.prediction,
            "residual": self.residual,
            "network": self.network.to_dict(),
            "schedule": self.schedule.to_dict(),
            "sampling": self.sampling.to_dict(),
            **({"presets": {name: r.to_dict() for name, r in self.presets.items()}} if self.presets else {}),
            "task": dict(self.task),
            **({"report": self.report.to_dict()} if self.report != ReportSettings() else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ModelConfig:
        """Read and check a config dict, naming `source` in every error ("unet" without
        "architecture" reads as `architecture="sr3_unet"`)."""
        source = str(source) if source is not None else None
        try:
            return cls._from_dict(data)
        except ConfigError as err:
            raise err.within(source=source) from None
        except ValueError as err:
            raise ValueError(f"{source}: {err}" if source else str(err)) from None

    @classmethod
    def _from_dict(cls, data: Any) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"A model config must be a JSON object, got {type(data).__name__}.")
        data = dict(data)
        if "unet" in data and "network" not in data:  # before "architecture": always the SR3 U-Net
            data["network"] = data.pop("unet")
        reject_unknown_keys(data, (f.name for f in fields(cls)), "model config")
        if "network" not in data:
            raise ValueError("The model config has no 'network' (or 'unet') section; is this an sr3infer config.json?")
        arch = get_architecture(data.get("architecture", DEFAULT_ARCHITECTURE))
        for key, read in (("network", arch.config_class.from_dict), ("schedule", NoiseSchedule.from_dict),
                          ("sampling", Recipe.from_dict), ("report", ReportSettings.from_dict)):
            try:
                data[key] = read(check_mapping(data.get(key, {}), key))
            except ConfigError as err:
                raise (err if err.key == key else err.within(key)) from None
        presets = check_mapping(data.get("presets", {}), "presets")
        data["presets"] = {}
        for name, recipe in presets.items():
            if not isinstance(recipe, dict):
                raise ConfigError(f"presets.{name}", "an object ({...})", recipe)
            try:
                data["presets"][name] = Recipe.from_dict(recipe)
            except ConfigError as err:
                raise err.within(f"presets.{name}") from None
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelConfig:
        data = parse_json(Path(path).read_text(encoding="utf-8"), str(path))
        return cls.from_dict(data, source=path)

    def replace(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def recipe(self, preset: str | None = None, **settings: Any) -> Recipe:
        """The named preset's recipe (None: `sampling`), with `settings` overriding parts of it."""
        if preset is None:
            return self.sampling.override(**settings)
        if preset not in self.presets:
            have = ", ".join(sorted(self.presets)) or "none"
            raise ValueError(f"Unknown preset {preset!r} for this model; it has: {have}. Leave preset out for its default.")
        return self.presets[preset].override(**settings)
