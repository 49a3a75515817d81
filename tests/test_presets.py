"""Named sampling recipes ("fidelity", "realism") stored in config.json: selection, overrides, errors, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cli import main
from sr3infer.config import ModelConfig, SamplingDefaults
from sr3infer.upscaler import Upscaler
from sr3infer.weights import build_model

FIDELITY = SamplingDefaults(sampler="ddim", num_steps=2, spacing="linear", consistency="every", eta=0.0)
REALISM = SamplingDefaults(sampler="ddim", num_steps=3, spacing="quadratic", consistency="every", eta=1.0)


@pytest.fixture
def preset_upscaler(tiny_config) -> Upscaler:
    config = tiny_config.replace(presets={"fidelity": FIDELITY, "realism": REALISM}, sampling=REALISM, task={})
    torch.manual_seed(0)
    return Upscaler(config, build_model(config), device="cpu")


def _lowres() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _run(upscaler: Upscaler, **kwargs) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    return upscaler.upscale_tensor(_lowres(), generator=gens, progress=False, **kwargs)


def test_a_preset_is_its_recipe_spelled_out(preset_upscaler):
    spelled = _run(preset_upscaler, sampler="ddim", num_steps=2, spacing="linear", consistency="every", eta=0.0)
    assert torch.equal(_run(preset_upscaler, preset="fidelity"), spelled)
    assert not torch.equal(_run(preset_upscaler, preset="realism"), spelled)


def test_no_preset_runs_the_default_recipe(preset_upscaler):
    assert torch.equal(_run(preset_upscaler), _run(preset_upscaler, preset="realism"))


def test_explicit_arguments_override_the_preset(preset_upscaler):
    overridden = _run(preset_upscaler, preset="realism", eta=0.0)
    spelled = _run(preset_upscaler, sampler="ddim", num_steps=3, spacing="quadratic", consistency="every", eta=0.0)
    assert torch.equal(overridden, spelled)
    assert not torch.equal(overridden, _run(preset_upscaler, preset="realism"))


def test_unknown_preset_is_a_clear_error(preset_upscaler, tiny_upscaler):
    with pytest.raises(ValueError, match="Unknown preset 'sharp'.*fidelity, realism"):
        preset_upscaler.upscale(np.zeros((8, 8, 3), np.uint8), preset="sharp")
    with pytest.raises(ValueError, match="it has: none"):
        tiny_upscaler.upscale_tensor(_lowres(), preset="realism")


def test_presets_round_trip_through_config_json(preset_upscaler, tmp_path):
    folder = preset_upscaler.save_pretrained(tmp_path / "m")
    loaded = Upscaler.from_pretrained(folder, device="cpu")
    assert loaded.config.presets == {"fidelity": FIDELITY, "realism": REALISM}
    assert ModelConfig.from_dict(loaded.config.to_dict()) == loaded.config


def test_config_rejects_unknown_preset_names_and_keys(tiny_config):
    data = tiny_config.to_dict()
    with pytest.raises(ValueError, match="Unknown preset names \\['sharp'\\]"):
        ModelConfig.from_dict({**data, "presets": {"sharp": {"num_steps": 2}}})
    with pytest.raises(ValueError, match="Unknown sampling config keys \\['stpes'\\]"):
        ModelConfig.from_dict({**data, "presets": {"realism": {"stpes": 2}}})


def test_cli_preset(tmp_path, preset_upscaler, tiny_model_dir, capsys):
    folder = str(preset_upscaler.save_pretrained(tmp_path / "m"))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    outs = {}
    for preset in ("fidelity", "realism"):
        out = tmp_path / f"{preset}.png"
        assert main([str(tmp_path / "in.png"), "-o", str(out), "--model", folder, "--preset", preset, "--quiet"]) == 0
        outs[preset] = np.asarray(Image.open(out))
    assert not np.array_equal(outs["fidelity"], outs["realism"])
    capsys.readouterr()
    code = main([str(tmp_path / "in.png"), "-o", str(tmp_path / "x.png"), "--model", str(tiny_model_dir),
                 "--preset", "realism", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "has no such preset" in err[-1] and not (tmp_path / "x.png").exists()
