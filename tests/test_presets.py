"""Named sampling recipes ("fidelity", "realism") stored in config.json: selection, overrides, errors, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cli import main
from sr3infer.models.config import ModelConfig, Recipe
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

FIDELITY = Recipe(sampler="ddim", num_steps=2, spacing="linear", consistency="every", options={"eta": 0.0})
REALISM = Recipe(sampler="ddim", num_steps=3, spacing="quadratic", consistency="every", options={"eta": 1.0})


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


# The preset rule (sr3infer.sampling.preset_rule), applied by benchmarks/preset_search.py, scripts/bundle_model.py and test_bundled.


def _row(sampler: str, steps: int, psnr: float, consistency: float, kid: float, bicubic_psnr: float = 30.0) -> dict:
    return {"sampler": sampler, "eta": 0.0, "num_steps": steps, "spacing": "linear", "consistency": "every",
            "model": {"psnr": psnr, "consistency_1e5": consistency, "kid_1e3": kid},
            "bicubic": {"psnr": bicubic_psnr}}


def test_the_rule_picks_fidelity_by_psnr_and_realism_by_kid_above_the_floor():
    from sr3infer.sampling import preset_rule as presets

    rows = [_row("ddim", 2, 31.0, 0.5, 20.0), _row("ancestral", 5, 30.6, 0.5, 10.0),
            _row("ancestral", 20, 30.2, 0.5, 5.0),   # best KID, but under bicubic + 0.5 dB
            _row("ddim", 3, 32.0, 3.0, 1.0)]         # best PSNR and KID, but not consistent enough
    chosen = presets.choose({presets.key(r): r for r in rows})
    assert (chosen["fidelity"]["num_steps"], chosen["realism"]["num_steps"]) == (2, 5)
    assert chosen["realism"]["psnr_floor_db"] == 30.5
    assert Recipe.from_dict(presets.recipe_of(chosen["realism"])) == Recipe(sampler="ancestral", num_steps=5,
                                                                          consistency="every")
    below = [_row("ddim", 2, 30.2, 0.5, 20.0), _row("ancestral", 5, 30.1, 0.5, 10.0)]
    chosen = presets.choose({presets.key(r): r for r in below})
    assert chosen["realism"]["num_steps"] == 5 and chosen["realism"]["psnr_floor_db"] == 30.0  # the floor drops
    assert presets.choose({"x": _row("ddim", 2, 40.0, 2.0, 1.0)}) == {}
    assert len(presets.grid()) == 182 and presets.grid()[0]["num_steps"] == 1


def test_a_model_floor_above_bicubic_plus_half_a_db_is_kept_and_drops_when_nothing_reaches_it():
    """REALISM_MIN_PSNR_DB (faces: the stated operating point, PSNR >= 23.5): the realism preset is the lowest KID
    among recipes at or above it; when no recipe reaches it the floor falls back to bicubic + 0.5 dB."""
    from sr3infer.sampling import preset_rule as presets

    rows = [_row("ancestral", 50, 30.8, 0.5, 10.0), _row("ancestral", 20, 31.2, 0.5, 14.0),
            _row("ddim", 1, 31.6, 0.5, 40.0)]
    runs = {presets.key(r): r for r in rows}
    assert presets.choose(runs)["realism"]["num_steps"] == 50                      # floor 30.5: lowest KID
    chosen = presets.choose(runs, min_psnr_db=31.0)
    assert chosen["realism"]["num_steps"] == 20 and chosen["realism"]["psnr_floor_db"] == 31.0
    assert presets.choose(runs, min_psnr_db=30.2)["realism"]["psnr_floor_db"] == 30.5  # lower than bicubic + 0.5: unused
    fallback = presets.choose(runs, min_psnr_db=32.0)["realism"]
    assert fallback["num_steps"] == 50 and fallback["psnr_floor_db"] == 30.5
    assert "23.5 dB" in presets.rule(presets.REALISM_MIN_PSNR_DB["sr3-face-8x"]) and "23.5" not in presets.RULE


def test_the_rule_is_cost_aware():
    """fidelity = the fewest network calls within 0.05 dB of the best PSNR; realism = the fewest
    calls with KID within 5 % of the lowest (above the floor). Outside the tolerances, quality wins."""
    from sr3infer.sampling import preset_rule as presets

    rows = [_row("ddim", 20, 31.50, 0.5, 30.0), _row("ddim", 5, 31.46, 0.5, 31.0),   # 0.04 dB: 5 steps win
            _row("dpmpp_2m", 2, 31.40, 0.5, 40.0),                                   # 0.10 dB: too far
            _row("ancestral", 50, 30.8, 0.5, 10.0), _row("ancestral", 10, 30.7, 0.5, 10.4),   # KID +4 %: 10 wins
            _row("ancestral", 5, 30.9, 0.5, 10.6)]                                   # KID +6 %: too far
    chosen = presets.choose({presets.key(r): r for r in rows})
    assert (chosen["fidelity"]["sampler"], chosen["fidelity"]["num_steps"]) == ("ddim", 5)
    assert (chosen["realism"]["sampler"], chosen["realism"]["num_steps"]) == ("ancestral", 10)
    assert presets.network_calls(rows[0]) == 20 and "fewest network calls" in presets.RULE


def test_no_sys_path_edits_in_tests_scripts_benchmarks_or_examples():
    """the preset rule and the metrics are package modules, imported normally; conftest.py
    does not depend on sr3infer.train."""
    from conftest import REPO

    offenders = [f"{path.relative_to(REPO)}:{n}" for folder in ("tests", "scripts", "benchmarks", "examples")
                 for path in sorted((REPO / folder).rglob("*.py")) if "node_modules" not in path.parts
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if "sys.path" in line and "offenders" not in line and '"sys.path"' not in line]
    assert offenders == []
    assert "sr3infer.train" not in (REPO / "tests" / "conftest.py").read_text()  # the fixtures need no training code
