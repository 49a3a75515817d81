"""benchmarks/preset_search.py measures exactly the recipe a row names (run as users run it, a script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from sr3infer.models.config import Recipe
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model


@pytest.mark.slow
def test_a_one_sample_row_is_one_sample_when_the_default_recipe_averages_k(tmp_path, tiny_config):
    """A K = 1 row carries no num_samples; it once inherited the model default's K (the sr3-64-256 default
    averages 4), so its 'one sample' row was a 4-sample mean. Default K = 2 here: the bug makes both rows equal."""
    config = tiny_config.replace(sampling=Recipe(sampler="ancestral", num_steps=2, spacing="quadratic",
                                                 consistency="every", num_samples=2))
    model_dir = Upscaler(config, build_model(config), device="cpu").save_pretrained(tmp_path / "model")
    val = tmp_path / "val"
    val.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(val / f"{i}.png")
    out = tmp_path / "search.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "preset_search.py"), "sr3-64-256",
                    "--model-path", str(model_dir), "--data", str(val), "--protocol", "plain", "--reference", str(val),
                    "--steps", "2", "--samplers", "ancestral", "--spacings", "quadratic", "--consistency", "every",
                    "--samples", "1", "2", "--out", str(out)],
                   check=True, capture_output=True, env={**os.environ, "SR3INFER_CACHE": str(tmp_path / "cache")})
    runs = json.loads(out.read_text())["runs"]
    one, mean = (runs[f"ancestral|eta=0|2|quadratic|every{tail}"]["model"] for tail in ("", "|mean2"))
    assert one["psnr"] != mean["psnr"]
