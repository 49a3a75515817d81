"""The recipe flags (--steps, --sampler, ... and one per sampler option), built from the registries with the parser."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, NamedTuple

from ..errors import UsageError
from ..models.config import CONSISTENCY_MODES, PRESETS
from ..runtime.validate import OPTION_BOUNDS, ConfigError, check_float
from ..sampling.flips import ENSEMBLES
from ..sampling.samplers import SAMPLERS, sampler_option_defaults
from ..sampling.schedule import SPACINGS

OPTION_HELP = {"eta": "DDIM stochasticity, 0 (deterministic) to 1"}
"""What a sampler option does, for its flag's help; an option missing here still gets a flag, named by its samplers."""


class RecipeFlag(NamedTuple):
    """One recipe flag: the `upscale` keyword it sets, how it parses, and its bounds (None: not a number)."""

    name: str
    flag: str
    convert: Callable[[str], Any]
    choices: list[str] | None
    metavar: str
    help: str
    bounds: tuple[float, float] | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


def option_flag(option: str) -> str:
    """The flag of a sampler option: `s_noise` -> `--s-noise`."""
    return "--" + option.replace("_", "-")


def sampler_options() -> dict[str, list[str]]:
    """Every option of the registered samplers -> the samplers that take it."""
    takers: dict[str, list[str]] = {}
    for sampler in SAMPLERS:
        for option in sampler_option_defaults(sampler):
            takers.setdefault(option, []).append(sampler)
    return takers


def recipe_flags() -> list[RecipeFlag]:
    """The recipe flags, read from the registries when called, so that a sampler added at run time has its flags."""
    fixed = [
        RecipeFlag("num_steps", "--steps", int, None, "N", "denoising steps (default: the model's measured default)",
                   (1, math.inf)),
        RecipeFlag("sampler", "--sampler", str, sorted(SAMPLERS), "S", "sampler (default: the model's)"),
        RecipeFlag("spacing", "--spacing", str, list(SPACINGS), "S",
                   "how fewer steps pick noise levels (default: the model's)"),
        RecipeFlag("consistency", "--consistency", str, list(CONSISTENCY_MODES), "C",
                   "project onto the input: none, final (the output), every (each step); default: the model's"),
        RecipeFlag("ensemble", "--ensemble", str, list(ENSEMBLES), "E",
                   "flips: take the K samples (--samples) in four flipped orientations, so their mean also averages "
                   "the network's orientation errors; none: as given (default: the model's)"),
    ]
    options = [RecipeFlag(option, option_flag(option), float, None, "X", _option_help(option, takers),
                          OPTION_BOUNDS.get(option, (-math.inf, math.inf)))
               for option, takers in sampler_options().items()]
    overrides = "/".join(f.flag for f in fixed + options)
    preset = RecipeFlag("preset", "--preset", str, list(PRESETS), "P",
                        "the model's named recipe: fidelity (best PSNR), realism (lowest KID at a PSNR floor) or fast "
                        "(a distilled student, 1-2 network calls, where the model has one); "
                        f"{overrides} override parts of it (default: the model's default recipe)")
    return [*fixed, preset, *options]


def _option_help(option: str, takers: list[str]) -> str:
    what = OPTION_HELP.get(option) or f"option {option} of the {'/'.join(takers)} sampler"
    return f"{what} (default: the recipe's)"


def add_recipe_flags(parser: argparse.ArgumentParser, *, per_stage: bool = False) -> None:
    """Add the recipe flags; with `per_stage` (cascade) each takes one value for all stages or one per stage."""
    for f in recipe_flags():
        if per_stage:
            listed = f" ({', '.join(f.choices)})" if f.choices else ""
            parser.add_argument(f.flag, metavar=f"{f.metavar}[,{f.metavar}...]",
                                help=f"{f.help}{listed}; one value for all stages or one per stage")
        else:
            parser.add_argument(f.flag, type=f.convert, choices=f.choices, help=f.help)


def recipe_settings(args: argparse.Namespace, stages: int | None = None) -> dict[str, Any]:
    """The recipe flags as `upscale` keywords, None where not given (for `stages`, lists of one value per stage).

    Raises:
        UsageError: a value outside its choices or bounds, or a sampler option that the chosen sampler lacks.
    """
    columns: dict[str, list[Any]] = {}
    for f in recipe_flags():
        value = getattr(args, f.dest)
        columns[f.name] = [value] if stages is None else split_per_stage(value, f.flag, f.convert, stages)
        for v in columns[f.name]:
            if v is not None:
                _check_value(f, v)
    for stage in range(stages or 1):
        _check_sampler_takes({name: values[stage] for name, values in columns.items()})
    return {name: values if stages is not None else values[0] for name, values in columns.items()}


def _check_value(f: RecipeFlag, value: Any) -> None:
    if f.choices is not None and value not in f.choices:
        raise UsageError(f"argument {f.flag}: invalid choice: {value!r} (choose from {', '.join(f.choices)})")
    if f.bounds is None:
        return
    low, high = f.bounds
    try:
        check_float(value, f.name, low, high)
    except ConfigError:
        raise UsageError(f"{f.flag} must be {_interval(low, high)}, got {value}; leave {f.flag} out for the "
                         "recipe's value") from None


def _interval(low: float, high: float) -> str:
    if math.isfinite(low) and math.isfinite(high):
        return f"between {low:g} and {high:g}"
    if math.isfinite(low):
        return f"at least {low:g}"
    return f"at most {high:g}" if math.isfinite(high) else "a finite number"


def _check_sampler_takes(settings: dict[str, Any]) -> None:
    """A sampler option given with a --sampler that does not take it is refused before any work."""
    sampler = settings["sampler"]
    if sampler is None:  # the model's sampler, known once it is loaded; the library checks it then
        return
    takes = sampler_option_defaults(sampler)
    for option, takers in sampler_options().items():
        if settings[option] is not None and option not in takes:
            flag = option_flag(option)
            raise UsageError(f"--sampler {sampler} has no option {flag} (its options: "
                             f"{', '.join(map(option_flag, takes)) or 'none'}); leave {flag} out or pass --sampler "
                             f"{' or '.join(takers)}")


def split_per_stage(value: str | None, flag: str, convert: Callable[[str], object], stages: int) -> list:
    """`--flag a,b` -> one value per stage (a single value applies to every stage); None -> [None] * stages."""
    if value is None:
        return [None] * stages
    try:
        items = [convert(part.strip()) for part in value.split(",")]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated values, got {value!r}") from None
    if len(items) == 1:
        return items * stages
    if len(items) != stages:
        raise UsageError(f"{flag} has {len(items)} values for {stages} stages; give one value or one per stage")
    return items
