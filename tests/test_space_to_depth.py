"""The opt-in `space_to_depth` key of the SR3 U-Net: pixel-unshuffle the 6-channel input,
run the U-Net at 1/f resolution, pixel-shuffle the output back; off by default, so configs and weights without
the key load and re-save unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.utils.flop_counter import FlopCounterMode

from sr3infer.models.registry import UNET_MAPS_PER_CHANNEL, get_architecture
from sr3infer.runtime.validate import MAX_SPACE_TO_DEPTH, ConfigError
from sr3infer.models.config import ModelConfig, Recipe
from sr3infer.models.unet import UNet, UNetConfig
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "sr3infer" / "bundled"
TINY = dict(inner_channel=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(4,), norm_groups=4,
            image_size=16)


def tiny_s2d_config(scale: int = 2, lowres_size: int = 8, **network) -> ModelConfig:
    return ModelConfig(network=UNetConfig(**{**TINY, "space_to_depth": 2, "image_size": scale * lowres_size,
                                             **network}),
                       scale=scale, lowres_size=lowres_size, sampling=Recipe(sampler="ddim", num_steps=3))


def flops(model: torch.nn.Module, side: int) -> int:
    """FLOPs of one network call on a (1, 6, side, side) input (convolutions, matmuls, attention)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 6, side, side), torch.full((1,), 0.5))
    return counter.get_total_flops()


@pytest.mark.parametrize("size", [(16, 16), (18, 22), (7, 9)])
def test_output_has_the_input_size_and_the_first_and_last_convs_widen(size):
    model = UNet(**{**TINY, "space_to_depth": 2}).eval()
    assert model.downs[0].weight.shape[1] == 6 * 4  # 6 channels unshuffled by 2
    assert model.final_conv.block[-1].weight.shape[0] == 3 * 4
    assert model.config.downscale_factor == 2 * 2
    with torch.no_grad():
        out = model(torch.randn(2, 6, *size), torch.rand(2))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_the_unet_runs_at_half_resolution():
    """The first res block sees the unshuffled (H/2, W/2) map, and attention sits at the stated internal side."""
    model = UNet(**{**TINY, "space_to_depth": 2}).eval()
    seen = {}

    def record(module, args, out) -> None:
        seen["side"] = out.shape[-1]

    model.downs[1].register_forward_hook(record)
    with torch.no_grad():
        model(torch.randn(1, 6, 16, 16), torch.rand(1))
    assert seen["side"] == 8
    assert [m.with_attn for m in model.downs if hasattr(m, "with_attn")] == [False, True]  # level 1: side 4


def test_equals_unshuffle_then_a_plain_unet_then_shuffle():
    """The option is exactly pixel_unshuffle -> a plain U-Net with 24 in / 12 out channels at half size ->
    pixel_shuffle, with the same weights."""
    s2d = UNet(**{**TINY, "space_to_depth": 2}).eval()
    inner = UNet(**{**TINY, "in_channels": 24, "out_channels": 12, "image_size": 8}).eval()
    inner.load_state_dict(s2d.state_dict())
    x, level = torch.randn(2, 6, 16, 24), torch.rand(2)
    with torch.no_grad():
        expected = F.pixel_shuffle(inner(F.pixel_unshuffle(x, 2), level), 2)
        assert torch.allclose(s2d(x, level), expected, atol=1e-6)


def test_default_config_is_unchanged():
    """Without the key: no new key in config.json, the same weight names and shapes as the bundled models,
    and their config.json re-saved byte for byte."""
    assert "space_to_depth" not in UNetConfig().to_dict()
    assert UNetConfig().space_to_depth == 1
    for name in ("sr3-64-256", "sr3-face-8x"):
        path = BUNDLED / name / "config.json"
        config = ModelConfig.from_json_file(path)
        assert config.network.space_to_depth == 1
        assert config.to_json() == path.read_text(encoding="utf-8")
        with safe_open(str(BUNDLED / name / "model.safetensors"), framework="pt") as weights:
            stored = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
        built = {key: tuple(value.shape) for key, value in build_model(config).state_dict().items()}
        assert built == stored


def test_space_to_depth_keeps_every_weight_name():
    """Without attention (whose place follows the internal side): only the first and last convs change shape."""
    plain = UNet(**{**TINY, "attn_resolutions": ()}).state_dict()
    s2d = UNet(**{**TINY, "attn_resolutions": (), "space_to_depth": 2}).state_dict()
    assert list(plain) == list(s2d)
    widened = {key for key in plain if plain[key].shape != s2d[key].shape}
    assert widened == {"downs.0.weight", "final_conv.block.3.weight", "final_conv.block.3.bias"}


def test_save_load_round_trip(tmp_path):
    config = tiny_s2d_config()
    torch.manual_seed(0)
    upscaler = Upscaler(config, build_model(config), device="cpu")
    folder = upscaler.save_pretrained(tmp_path / "s2d")
    assert json.loads((folder / "config.json").read_text())["network"]["space_to_depth"] == 2
    loaded = Upscaler.from_pretrained(str(folder), device="cpu")
    assert loaded.config == config
    assert loaded.config.to_json() == (folder / "config.json").read_text()
    for key, value in upscaler.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_upscale_whole_and_tiled():
    config = tiny_s2d_config()
    upscaler = Upscaler(config, build_model(config), device="cpu")
    lowres = torch.rand(1, 3, 8, 8)
    out = upscaler.upscale_tensor(lowres, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    # Tiles at the minimum size (half the trained output) on an output larger than one tile.
    assert upscaler.tile_plan((24, 40), tile_size=8) == (8, 2)
    tiled = upscaler.upscale_tensor(torch.rand(1, 3, 12, 20), tile_size=8, generator=torch.Generator().manual_seed(0),
                                    progress=False)
    assert tiled.shape == (1, 3, 24, 40) and torch.isfinite(tiled).all()


def test_odd_scale_tiles_are_padded_inside_the_network():
    """Scale 3: tiles on the scale grid (9 px) are not multiples of the factor; the U-Net pads and crops them."""
    config = tiny_s2d_config(scale=3, lowres_size=6)
    upscaler = Upscaler(config, build_model(config), device="cpu")
    out = upscaler.upscale_tensor(torch.rand(1, 3, 7, 11), tile_size=9, generator=torch.Generator().manual_seed(0),
                                  progress=False)
    assert out.shape == (1, 3, 21, 33) and torch.isfinite(out).all()


@pytest.mark.parametrize("value", [0, MAX_SPACE_TO_DEPTH + 1, 2.0, "2", True, None])
def test_bad_values_are_refused_naming_the_key(value):
    data = json.loads(tiny_s2d_config().to_json())
    data["network"]["space_to_depth"] = value
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_dict(data, source="config.json")
    message = str(err.value)
    assert "config.json: 'network.space_to_depth' must be an integer from 1 to 8" in message
    assert "Fix that value" in message


def test_image_size_must_be_a_multiple_of_the_factor():
    with pytest.raises(ConfigError, match=r"'image_size' must be a multiple of space_to_depth \(2\).*got 15"):
        UNetConfig(**{**TINY, "image_size": 15, "space_to_depth": 2})
    UNetConfig(**{**TINY, "image_size": 15})  # without the key, any size


def test_space_to_depth_costs_a_quarter_of_the_flops():
    """Same inner_channel at half resolution: about 1/4 of the FLOPs of the full-resolution call; with doubled
    inner_channel about the same as the plain net (counted by torch.utils.flop_counter, not timed)."""
    plain = flops(UNet(**TINY).eval(), 32)
    same_width = flops(UNet(**{**TINY, "space_to_depth": 2}).eval(), 32)
    doubled = flops(UNet(**{**TINY, "inner_channel": 16, "space_to_depth": 2}).eval(), 32)
    full_doubled = flops(UNet(**{**TINY, "inner_channel": 16}).eval(), 32)
    assert same_width < 0.35 * plain
    assert doubled < 0.35 * full_doubled
    assert 0.8 < doubled / plain < 1.2


def test_size_guard_prices_the_smaller_maps():
    arch = get_architecture("sr3_unet")
    plain, s2d = UNetConfig(**TINY), UNetConfig(**{**TINY, "space_to_depth": 2})
    assert arch.bytes_per_pixel(plain, 4) == UNET_MAPS_PER_CHANNEL * 8 * 4  # unchanged without the key
    assert arch.bytes_per_pixel(s2d, 4) == (UNET_MAPS_PER_CHANNEL * 8 // 4 + 6 + 3) * 4
    config = tiny_s2d_config()
    upscaler = Upscaler(config, build_model(config), device="cpu")
    plain_upscaler = Upscaler(config.replace(network=plain), build_model(config.replace(network=plain)), device="cpu")
    peak = upscaler.estimate((64, 64), tile_size=0).peak_bytes
    assert peak < plain_upscaler.estimate((64, 64), tile_size=0).peak_bytes


def test_natural_ab_arms_differ_only_in_the_network():
    """The three pre-registered arms (benchmarks/results/sr3-64-256/train_ab.md) load, build, and share
    data, recipe, seed and time budget; only the network section and the run name differ."""
    from sr3infer.train.loop import TrainConfig

    arms = {arm: TrainConfig.from_json_file(REPO / "training" / "ab" / f"sr3-64-256-ab-{arm}.json")
            for arm in ("rb1", "rb2", "s2d")}
    networks = {arm: ModelConfig.from_dict(cfg.model).network for arm, cfg in arms.items()}
    assert networks["rb1"] == ModelConfig.from_dict(TrainConfig.from_json_file(REPO / "training" / "sr3-64-256.json")
                                                    .model).network
    assert (networks["rb2"].num_res_blocks, networks["s2d"].space_to_depth) == (2, 2)
    assert networks["s2d"].inner_channel == 2 * networks["rb1"].inner_channel
    for cfg in arms.values():
        assert (cfg.max_minutes, cfg.threads, cfg.seed) == (45, 1, 0)
        same = {**vars(cfg), "name": None, "model": {**cfg.model, "unet": None}}
        assert same == {**vars(arms["rb1"]), "name": None, "model": {**arms["rb1"].model, "unet": None}}
