"""A second network architecture, registered in this file alone, runs through the whole package: from_pretrained,
upscale, estimate, save_pretrained, `sr3infer publish --dry-run` and Cascade."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sr3infer.models.registry import ARCHITECTURES, Architecture, concat_condition, get_architecture, register
from sr3infer.runtime.validate import ConfigError, check_int
from sr3infer.cascade import Cascade
from sr3infer.cli import main
from sr3infer.models.config import ModelConfig, Recipe
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model


@dataclass(frozen=True)
class ToyConfig:
    """Two convolutions; the condition is added to the noisy image instead of concatenated."""

    channels: int = 3
    width: int = 4

    def __post_init__(self) -> None:
        check_int(self.channels, "channels", 1, 4)
        check_int(self.width, "width", 1, 64)

    @classmethod
    def from_dict(cls, data: dict) -> ToyConfig:
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.inp = nn.Conv2d(config.channels, config.width, 3, padding=1)
        self.out = nn.Conv2d(config.width, config.channels, 3, padding=1)

    def forward(self, x: Tensor, noise_level: Tensor) -> Tensor:
        return self.out(F.silu(self.inp(x) + noise_level.to(x.dtype).view(-1, 1, 1, 1)))


TOY = Architecture(
    name="toy_add",
    config_class=ToyConfig,
    build=ToyNet,
    image_channels=lambda config: config.channels,
    condition=lambda cond, x: cond + x,
    bytes_per_pixel=lambda config, element_size: 1000 * config.width * element_size,
)


@pytest.fixture
def toy_config():
    register(TOY)
    yield ModelConfig(architecture="toy_add", network=ToyConfig(), scale=2, lowres_size=8,
                      sampling=Recipe(sampler="ddim", num_steps=2), task={"domain": "toy"})
    ARCHITECTURES.pop("toy_add")


@pytest.fixture
def toy_upscaler(toy_config) -> Upscaler:
    torch.manual_seed(0)
    return Upscaler(toy_config, build_model(toy_config), device="cpu")


def test_a_toy_architecture_goes_through_save_load_upscale_and_estimate(tmp_path, toy_upscaler):
    folder = toy_upscaler.save_pretrained(tmp_path / "toy")
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architecture"] == "toy_add" and saved["network"] == {"channels": 3, "width": 4}
    loaded = Upscaler.from_pretrained(folder, device="cpu")
    assert isinstance(loaded.model, ToyNet) and loaded.config == toy_upscaler.config
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = loaded.upscale(image, seed=1, progress=False)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out, toy_upscaler.upscale(image, seed=1, progress=False))
    # The size guard prices the toy's activations through its own entry: 1000 * width * 4 bytes per pixel.
    run = loaded.estimate((8, 8), num_steps=2)
    assert run.peak_bytes >= 16 * 16 * 1000 * 4 * 4


def test_the_condition_is_fed_the_architectures_way(toy_upscaler):
    seen = []
    toy_upscaler.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    toy_upscaler.upscale(np.zeros((8, 8, 3), np.uint8), seed=0, progress=False)
    assert seen and all(shape[1] == 3 for shape in seen)  # cond + x, not concatenated to 6 channels
    assert get_architecture("sr3_unet").condition is concat_condition


def test_a_toy_model_folder_publishes_in_dry_run(tmp_path, toy_upscaler, capsys):
    folder = toy_upscaler.save_pretrained(tmp_path / "toy")
    assert main(["publish", str(folder), "--repo-id", "someone/toy", "--dry-run"]) == 0
    assert "someone/toy" in capsys.readouterr().out


def test_a_toy_stage_runs_in_a_cascade(toy_upscaler, tiny_upscaler):
    cascade = Cascade([toy_upscaler, tiny_upscaler])
    out = cascade(np.zeros((1, 8, 8, 3), np.uint8), seed=0, num_steps=2, progress=False)
    assert out.shape == (1, 32, 32, 3)


def test_weights_are_checked_against_the_architectures_shapes(tmp_path, toy_upscaler):
    folder = toy_upscaler.save_pretrained(tmp_path / "toy")
    config = json.loads((folder / "config.json").read_text())
    config["network"]["width"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match the model config.*shape mismatches"):
        Upscaler.from_pretrained(folder, device="cpu")


def test_unknown_architectures_and_mismatched_networks_are_refused(toy_config, tiny_config):
    data = tiny_config.to_dict()
    with pytest.raises(ConfigError, match="Unknown architecture 'resnet'; expected one of sr3_unet, toy_add"):
        ModelConfig.from_dict({**data, "architecture": "resnet"}, source="m/config.json")
    with pytest.raises(ValueError, match="Unknown U-Net config keys"):  # a toy network under the U-Net's name
        ModelConfig.from_dict({**data, "network": {"channels": 3, "width": 4}})
    with pytest.raises(ConfigError, match="'network' must be a ToyConfig"):
        ModelConfig(architecture="toy_add", network=tiny_config.network)
    with pytest.raises(ValueError, match="already registered"):
        register(TOY)


def test_old_configs_read_as_the_sr3_unet(tiny_config):
    old = tiny_config.to_dict()
    del old["architecture"]
    old["unet"] = old.pop("network")
    assert ModelConfig.from_dict(old) == tiny_config
