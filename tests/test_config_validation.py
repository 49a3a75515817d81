"""One typed, bounded validation of a model's config at load, one source of truth (config.json), weight dtypes,
and a recipe that checks itself."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sr3infer.runtime.validate import ConfigError
from sr3infer.cli import main
from sr3infer.models.config import ModelConfig, Recipe
from sr3infer.sampling.schedule import NoiseSchedule
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import METADATA_KEY

BUNDLED = Path(__file__).resolve().parents[1] / "sr3infer" / "bundled"


def _edit(folder: Path, key: str, value) -> Path:
    """Set `key` ("network.channel_mults", "scale", ...) in the folder's config.json."""
    config = json.loads((folder / "config.json").read_text())
    *path, last = key.split(".")
    section = config
    for part in path:
        section = section[part]
    section[last] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("key, value, expected", [
    ("lowres_size", "8", "'lowres_size' must be an integer from 1 to 4,096, got '8' (str)"),
    ("lowres_size", 8.5, "'lowres_size' must be an integer from 1 to 4,096, got 8.5"),
    ("lowres_size", 0, "'lowres_size' must be an integer from 1 to 4,096, got 0"),
    ("lowres_size", -8, "'lowres_size' must be an integer from 1 to 4,096, got -8"),
    ("lowres_size", True, "got True (bool)"),
    ("scale", True, "'scale' must be an integer from 1 to 64, got True (bool)"),
    ("scale", 1000, "'scale' must be an integer from 1 to 64, got 1000"),
    ("residual", "false", "'residual' must be true or false, got 'false' (str)"),
    ("task", "x", "'task' must be an object"),
    ("sampling", None, "'sampling' must be an object ({...}), got None"),
    ("prediction", "score", "Unknown prediction 'score'; expected one of eps, v, x0"),
    ("network.channel_mults", 5, "'network.channel_mults' must be a list of 1 to 8 integers from 1 to 64, got 5"),
    ("network.channel_mults", [1, 2, 0], "'network.channel_mults' must be a list"),
    ("network.dropout", "0.1", "'network.dropout' must be a number in [0, 1), got '0.1' (str)"),
    ("network.inner_channel", 10**6, "'network.inner_channel' must be an integer from 2 to 4,096"),
    ("network.in_channels", 7, "'network.in_channels' must be twice out_channels (6)"),
    ("schedule.num_train_timesteps", 3_000_000_000, "'schedule.num_train_timesteps' must be an integer from 1 to 100,000"),
    ("schedule.beta_end", 2.0, "'schedule.beta_end' must be a number in"),
    ("sampling.num_steps", 3000, "'sampling.num_steps' must be at most the schedule's num_train_timesteps (2000)"),
    ("sampling.sampler", "euler", "Unknown sampler 'euler' (key 'sampling.sampler')"),
    ("sampling.options", {"eta": 2.0}, "'sampling.options.eta' must be a number in [0, 1], got 2.0"),
    ("architecture", "esrgan", "Unknown architecture 'esrgan'; expected one of sr3_unet"),
])
def test_each_bad_config_value_is_refused_naming_file_key_expected_and_got(tiny_model_dir, key, value, expected):
    _edit(tiny_model_dir, key, value)
    with pytest.raises(ConfigError) as info:
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")
    message = str(info.value)
    assert str(tiny_model_dir / "config.json") in message and expected in message, message


def test_a_huge_schedule_is_refused_before_anything_is_allocated_under_4_gib(tmp_path, tiny_model_dir):
    """a 3e9-step schedule (the old key, as the issue wrote it) used to take all the machine's memory."""
    _edit(tiny_model_dir, "schedule", {"num_steps": 3_000_000_000})
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sr3infer.cli", str(tmp_path / "a.png"), "-o", str(tmp_path / "x.png"),
                           "--model", str(tiny_model_dir), "--steps", "1"], preexec_fn=limit, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert time.monotonic() - start < 30
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "'schedule.num_train_timesteps' must be an integer from 1 to 100,000" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_network_over_the_parameter_bound_is_refused_from_the_header(tiny_model_dir):
    _edit(tiny_model_dir, "network.inner_channel", 4096)
    _edit(tiny_model_dir, "network.channel_mults", [16, 16])
    _edit(tiny_model_dir, "network.norm_groups", 32)
    with pytest.raises(ValueError, match=r"config.json describes a network of [\d,]+ parameters"):
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")


def test_the_schedule_reads_its_old_key_and_checks_types():
    assert NoiseSchedule.from_dict({"num_steps": 100}).num_train_timesteps == 100
    with pytest.raises(ConfigError, match="'num_train_timesteps' must be an integer"):
        NoiseSchedule(num_train_timesteps=True)


# Weights dtypes.


def _with_dtype(folder: Path, dtype: torch.dtype) -> Path:
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v.to(dtype) for k, v in state.items()}, str(weights), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("dtype, name", [(torch.int8, "I8"), (torch.bool, "BOOL"), (torch.float8_e4m3fn, "F8_E4M3"),
                                         (torch.int64, "I64")])
def test_weights_that_are_not_floating_point_are_refused_by_name(tiny_model_dir, dtype, name):
    _with_dtype(tiny_model_dir, dtype)
    with pytest.raises(ValueError, match=f"tensors of dtype {name} .*must be floating point: float16, bfloat16"):
        Upscaler.from_pretrained(tiny_model_dir, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_weights_load_as_float32(tiny_model_dir, tiny_upscaler, dtype):
    """float16/bfloat16/float32 load as they are; float64 is converted to float32 (what the model computes in)."""
    _with_dtype(tiny_model_dir, dtype)
    loaded = Upscaler.from_pretrained(tiny_model_dir, device="cpu")
    for name, value in loaded.model.state_dict().items():
        assert value.dtype == torch.float32
        expected = tiny_upscaler.model.state_dict()[name].to(dtype).float()
        assert torch.equal(value, expected), name


# One source of truth: config.json.


def test_saved_weights_carry_a_format_marker_and_no_config(tiny_model_dir):
    with safe_open(str(tiny_model_dir / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "sr3infer_weights": "1"}


@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLED.iterdir() if (p / "config.json").is_file()))
def test_every_bundled_folder_publishes_and_loads_one_recipe_from_folder_and_file(name, capsys):
    folder = BUNDLED / name
    assert main(["publish", str(folder), "--repo-id", "someone/x", "--dry-run"]) == 0, capsys.readouterr().err
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert METADATA_KEY not in (handle.metadata() or {})
    from_folder = Upscaler.from_pretrained(folder, device="cpu")
    from_file = Upscaler.from_pretrained(folder / "model.safetensors", device="cpu")
    assert from_folder.config == from_file.config == ModelConfig.from_json_file(folder / "config.json")
    preset = "realism" if from_folder.config.presets else None  # a distilled student has its one default recipe
    assert from_file.config.recipe(preset) == from_folder.config.recipe(preset)


def _legacy_file(path: Path, config: dict, state: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(config)})
    return path


def _old_style_dict(config: ModelConfig) -> dict:
    """The config as sr3infer wrote it before "architecture": "unet", a flat "eta", schedule "num_steps"."""
    data = config.to_dict()
    del data["architecture"]
    data["unet"] = data.pop("network")
    data["schedule"]["num_steps"] = data["schedule"].pop("num_train_timesteps")
    data["sampling"]["eta"] = data["sampling"].pop("options").get("eta", 0.0)
    return data


def test_a_lone_old_file_still_loads_from_its_metadata_and_config_json_wins_beside_it(tmp_path, tiny_model_dir):
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    current = ModelConfig.from_json_file(tiny_model_dir / "config.json")
    lone = _legacy_file(tmp_path / "lone" / "old.safetensors", _old_style_dict(current), state)
    assert Upscaler.from_pretrained(lone, device="cpu").config == current
    drifted = current.replace(sampling=Recipe(sampler="ddim", num_steps=1))
    beside = _legacy_file(tmp_path / "beside" / "model.safetensors", _old_style_dict(drifted), state)
    (beside.parent / "config.json").write_text(current.to_json())
    assert Upscaler.from_pretrained(beside, device="cpu").config == current
    assert Upscaler.from_pretrained(beside.parent, device="cpu").config == current


def test_publishing_refuses_an_old_file_whose_metadata_copy_has_drifted(tmp_path, tiny_model_dir, capsys):
    """A file carrying a drifted copy would give another recipe when loaded alone: re-save it before publishing."""
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    current = ModelConfig.from_json_file(tiny_model_dir / "config.json")
    folder = tmp_path / "old"
    _legacy_file(folder / "model.safetensors", _old_style_dict(current), state)
    (folder / "config.json").write_text(current.to_json())
    assert main(["publish", str(folder), "--repo-id", "someone/x", "--dry-run"]) == 0
    _legacy_file(folder / "model.safetensors", _old_style_dict(current.replace(sampling=Recipe(num_steps=1))), state)
    assert main(["publish", str(folder), "--repo-id", "someone/x", "--dry-run"]) != 0
    assert "differs from the config in model.safetensors's metadata" in capsys.readouterr().err


def test_bad_json_in_old_metadata_is_refused_naming_the_file(tmp_path, tiny_model_dir):
    weights = tmp_path / "bad.safetensors"
    save_file(load_file(str(tiny_model_dir / "model.safetensors")), str(weights), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ValueError, match=f"{weights}.*{METADATA_KEY}.*is not valid JSON"):
        Upscaler.from_pretrained(weights, device="cpu")
    save_file(load_file(str(tiny_model_dir / "model.safetensors")), str(weights), metadata={METADATA_KEY: "[1]"})
    with pytest.raises(ValueError, match="must be a JSON object"):
        Upscaler.from_pretrained(weights, device="cpu")


DEEP = "[" * 100_000 + "]" * 100_000  # far past Python's recursion limit: json.loads raises RecursionError


def test_a_deeply_nested_config_json_is_refused_in_one_line_naming_the_file(tmp_path, tiny_model_dir, capsys):
    (tiny_model_dir / "config.json").write_text(DEEP)
    src = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(src)
    assert main([str(src), "-o", str(tmp_path / "out.png"), "--model", str(tiny_model_dir), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{tiny_model_dir / 'config.json'} is nested too deeply to read" in err and "Is it the right file?" in err
    assert len(err.strip().splitlines()) == 1 and "recursion depth" not in err


def test_deeply_nested_json_in_old_metadata_is_refused_naming_the_file(tmp_path, tiny_model_dir):
    weights = tmp_path / "deep.safetensors"
    save_file(load_file(str(tiny_model_dir / "model.safetensors")), str(weights), metadata={METADATA_KEY: DEEP})
    with pytest.raises(ValueError, match=f"{weights}.*{METADATA_KEY}.*is nested too deeply to read.*damaged"):
        Upscaler.from_pretrained(weights, device="cpu")


def test_a_lone_new_file_without_config_json_says_what_to_do(tmp_path, tiny_model_dir):
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="has no config.json beside it.*Put the model's config.json next to it"):
        Upscaler.from_pretrained(lone, device="cpu")


# The recipe checks itself.


@pytest.mark.parametrize("fields, expected", [
    (dict(num_steps=0), "'num_steps' must be an integer from 1 to 100,000, got 0"),
    (dict(num_steps="5"), "'num_steps' must be an integer"),
    (dict(sampler="euler"), "Unknown sampler 'euler'"),
    (dict(consistency="always"), "Unknown consistency 'always'"),
    (dict(start_noise_level=1.0), r"'start_noise_level' must be a number in \(0, 1\)"),
    (dict(sampler="ddim", options={"eta": float("nan")}), r"'options.eta' must be a number in \[0, 1\], got nan"),
    (dict(sampler="ancestral", options={"eta": 0.5}), "The ancestral sampler takes no options; got eta=0.5"),
    (dict(options={"s_noise": 1.0}), "takes no options; got s_noise"),
])
def test_a_recipe_refuses_bad_fields_when_made(fields, expected):
    with pytest.raises(ValueError, match=expected):
        Recipe(**fields)


def test_recipe_options_are_one_mapping_completed_with_the_samplers_defaults():
    assert Recipe(sampler="ddim").options == {"eta": 0.0}
    assert Recipe(sampler="ancestral").options == {}
    ddim = Recipe(sampler="ddim", options={"eta": 1.0})
    assert ddim.override(eta=0.5).options == {"eta": 0.5}
    assert ddim.override(sampler="ancestral").options == {}  # a new sampler keeps only the options it takes
    with pytest.raises(ValueError, match="The ancestral sampler takes no options; got eta=0.5"):
        ddim.override(sampler="ancestral", eta=0.5)
    old = Recipe.from_dict({"sampler": "ancestral", "num_steps": 3, "eta": 0.0})  # config.json before "options"
    assert old == Recipe(sampler="ancestral", num_steps=3)
    assert Recipe.from_dict({"sampler": "ddim", "eta": 1.0}).options == {"eta": 1.0}
    assert Recipe.from_dict(ddim.to_dict()) == ddim
    assert hash(ddim) == hash(Recipe(sampler="ddim", options={"eta": 1.0})) and len({ddim, ddim.override(eta=1.0)}) == 1
    with pytest.raises(TypeError):
        ddim.options["eta"] = 5.0  # read-only: a checked recipe stays checked

