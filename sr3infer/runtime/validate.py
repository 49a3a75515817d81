"""Every bound a model config or recipe is checked against, and typed checks naming key and value:
far above any SR3 model, far below what would exhaust a machine before anything is allocated."""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, cast

__all__ = ["ConfigError", "check_int", "check_float", "check_bool", "check_choice", "check_int_list", "check_mapping",
           "MAX_TRAIN_TIMESTEPS", "MAX_SCALE", "MAX_LOWRES_SIZE", "MAX_IMAGE_SIZE", "MAX_IMAGE_CHANNELS",
           "MAX_INNER_CHANNEL", "MAX_CHANNEL_MULT", "MAX_LEVELS", "MAX_RES_BLOCKS", "MAX_NORM_GROUPS",
           "MAX_SPACE_TO_DEPTH", "MAX_PARAMETERS", "ETA_RANGE", "OPTION_BOUNDS"]

MAX_TRAIN_TIMESTEPS = 100_000   # training schedule length T (SR3: 2000); the grid is T float64 numbers
MAX_SCALE = 64                  # output side / input side of one model
MAX_LOWRES_SIZE = 4096          # the input side a model was trained on
MAX_IMAGE_SIZE = 65536          # the output side a network was built for
MAX_IMAGE_CHANNELS = 64         # image channels (3 for RGB) and network in/out channels
MAX_INNER_CHANNEL = 4096        # channels at full resolution
MAX_CHANNEL_MULT = 64           # each entry of channel_mults
MAX_LEVELS = 8                  # len(channel_mults): the image is halved len - 1 times
MAX_RES_BLOCKS = 16             # res blocks per level
MAX_NORM_GROUPS = 1024
MAX_LIST = 16                   # entries of attn_resolutions
MAX_SPACE_TO_DEPTH = 8          # pixel-unshuffle factor of the U-Net input (1 = off; 8 makes 6 channels 384)
MAX_PARAMETERS = 4_000_000_000  # ~16 GB in float32; the largest community SR3 U-Nets have well under 1e9
ETA_RANGE = (0.0, 1.0)          # DDIM: 0 deterministic, 1 as stochastic as ancestral
OPTION_BOUNDS = {"eta": ETA_RANGE}  # sampler options (keyword arguments beyond the common signature) by name
MAX_NUM_SAMPLES = 256           # samples per image averaged into one output (std of 256 is within ~4 % of the spread)


class ConfigError(ValueError):
    """A config value of the wrong type or out of bounds: names the file, key, expected and got."""

    def __init__(self, key: str, expected: str, got: Any, source: str | None = None, *, choice: bool = False) -> None:
        self.key, self.expected, self.got, self.source, self.choice = key, expected, got, source, choice
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.source}: " if self.source else ""
        fix = " Fix that value in the model's config." if self.source else ""
        leaf = self.key.rsplit(".", 1)[-1]
        if self.choice:  # e.g. "Unknown sampler 'euler'; expected one of ancestral, ddim, dpmpp_2m."
            at = f" (key '{self.key}')" if self.key != leaf else ""
            return f"{where}Unknown {leaf} {self.got!r}{at}; expected {self.expected}.{fix}"
        return f"{where}'{self.key}' must be {self.expected}, got {_show(self.got)}.{fix}"

    def within(self, prefix: str | None = None, source: str | None = None) -> ConfigError:
        """The same error with the key under `prefix` (e.g. "network") and/or the file `source`."""
        key = f"{prefix}.{self.key}" if prefix else self.key
        return ConfigError(key, self.expected, self.got, source or self.source, choice=self.choice)


def _show(value: Any) -> str:
    text = repr(value)
    kind = type(value).__name__
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({kind})"


def check_int(value: Any, key: str, low: int, high: int) -> int:
    """`value` as an int in [low, high]; bools, strings and floats (even 8.0) are refused."""
    # cast: typeshed's numbers.Integral declares no comparison with int; at runtime it compares as one
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= cast(int, value) <= high:
        raise ConfigError(key, f"an integer from {low:,} to {high:,}", value)
    return int(value)


def check_float(value: Any, key: str, low: float, high: float, *, open_low: bool = False,
                open_high: bool = False) -> float:
    """`value` as a finite float in the interval (ints accepted; bools, strings refused)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        value = float(value)
        ok = (low < value if open_low else low <= value) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ConfigError(key, f"a number in {interval}", value)
    return value


def check_bool(value: Any, key: str) -> bool:
    """`value` if it is true or false (the JSON literals); "false", 0 and 1 are refused."""
    if not isinstance(value, bool):
        raise ConfigError(key, "true or false", value)
    return value


def check_choice(value: Any, key: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(key, f"one of {', '.join(choices)}", value, choice=True)
    return value


def check_int_list(value: Any, key: str, low: int, high: int, min_len: int, max_len: int) -> tuple[int, ...]:
    """`value` as a tuple of `min_len` to `max_len` ints, each in [low, high]."""
    expected = f"a list of {min_len} to {max_len} integers from {low:,} to {high:,}"
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise ConfigError(key, expected, value)
    items = list(value)
    if not min_len <= len(items) <= max_len:
        raise ConfigError(key, expected, value)
    for item in items:  # cast: as in check_int
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or not low <= cast(int, item) <= high:
            raise ConfigError(key, expected, value)
    return tuple(int(item) for item in items)


def check_mapping(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(key, "an object ({...})", value)
    return value
