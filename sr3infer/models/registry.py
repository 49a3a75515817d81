"""The network architectures sr3infer can run, by the name in config.json's "architecture": how to
read, build, check and feed each, and bound its memory. Adding one is one `register(...)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..runtime.validate import ConfigError, check_choice
from .unet import UNet, UNetConfig

__all__ = ["Architecture", "ARCHITECTURES", "DEFAULT_ARCHITECTURE", "register", "get_architecture", "expected_shapes",
           "concat_condition"]

DEFAULT_ARCHITECTURE = "sr3_unet"
"""What a config.json without an "architecture" key (every config before it existed) describes."""


def concat_condition(cond: Tensor, x: Tensor) -> Tensor:
    """SR3's conditioning: the bicubic upsampled input, then the noisy image, as channels."""
    return torch.cat([cond, x], dim=1)


@dataclass(frozen=True)
class Architecture:
    """One network family.

    Attributes:
        name: the value of "architecture" in config.json.
        config_class: the frozen, self-checking dataclass stored under "network".
        build: `config -> nn.Module`, called as `module(network_input, noise_level (B,))`.
        image_channels: `config -> C`, the channels of the images and the prediction.
        condition: `(cond, x) -> network_input`: how the bicubic upsampled input meets `x`.
        bytes_per_pixel: `(config, element_size) -> bytes` of activations per output pixel of a call
            (an upper bound, for the size guard).
        check: `config -> None`, a `ConfigError` when the network cannot take the condition as fed.
    """

    name: str
    config_class: type[Any]
    build: Callable[[Any], nn.Module]
    image_channels: Callable[[Any], int]
    condition: Callable[[Tensor, Tensor], Tensor]
    bytes_per_pixel: Callable[[Any, int], int]
    check: Callable[[Any], None] = lambda config: None


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture, *, replace: bool = False) -> Architecture:
    """Add `architecture` to the table (`replace=True` to overwrite an entry of the same name)."""
    if architecture.name in ARCHITECTURES and not replace:
        raise ValueError(f"Architecture {architecture.name!r} is already registered; pass replace=True to overwrite it.")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def get_architecture(name: Any) -> Architecture:
    """The entry for `name`, or a `ConfigError` listing the registered ones."""
    return ARCHITECTURES[check_choice(name, "architecture", sorted(ARCHITECTURES))]


def expected_shapes(architecture: Architecture, config: Any) -> dict[str, tuple[int, ...]]:
    """The weight shapes `config` implies, from the network built on the meta device."""
    with torch.device("meta"):
        model = architecture.build(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# SR3's U-Net. Activations measured by benchmarks/memory_per_pixel.py (benchmarks/results/memory_per_pixel.json):
UNET_MAPS_PER_CHANNEL = 24
"""U-Net activations (and its input) per pixel of a U-Net call, in `inner_channel` elements of the U-Net's dtype."""


def unet_bytes_per_pixel(config: UNetConfig, element_size: int) -> int:
    """Activation bytes per output pixel of a U-Net call (`space_to_depth` f divides by f^2)."""
    per_channel = UNET_MAPS_PER_CHANNEL * config.inner_channel
    factor = config.space_to_depth
    if factor == 1:
        return per_channel * element_size
    maps = -(-per_channel // factor**2) + config.in_channels + config.out_channels
    return maps * element_size


def _check_sr3_unet(config: UNetConfig) -> None:
    if config.in_channels != 2 * config.out_channels:
        raise ConfigError("in_channels", f"twice out_channels ({2 * config.out_channels}): the condition and the "
                          "noisy image are concatenated", config.in_channels)


register(Architecture(
    name=DEFAULT_ARCHITECTURE,
    config_class=UNetConfig,
    build=lambda config: UNet(**config.to_dict()),
    image_channels=lambda config: config.out_channels,
    condition=concat_condition,
    bytes_per_pixel=unet_bytes_per_pixel,
    check=_check_sr3_unet,
))
