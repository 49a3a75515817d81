"""The flip self-ensemble (`Recipe.ensemble = "flips"`): sample j of an image is the model run on the input flipped
the j-th of four ways and flipped back, with the seeds it has without flips, at every entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cascade import Cascade
from sr3infer.models.config import Recipe
from sr3infer.models.weights import build_model
from sr3infer.runtime.validate import ConfigError
from sr3infer.sampling.flips import FLIPS, flip_each
from sr3infer.upscaler import Upscaler

from test_cli import _cli, _png  # noqa: F401

ONE = Recipe(sampler="ancestral", num_steps=2, spacing="linear", consistency="every")
pytestmark = pytest.mark.filterwarnings("ignore:This model was trained on")

FLIPS4 = Recipe(sampler="ancestral", num_steps=2, spacing="linear", consistency="every", num_samples=4,
                ensemble="flips")


@pytest.fixture
def upscaler(tiny_config) -> Upscaler:
    config = tiny_config.replace(presets={"fidelity": FLIPS4, "realism": ONE}, sampling=ONE, task={})
    torch.manual_seed(0)
    return Upscaler(config, build_model(config), device="cpu")


def _images(n: int = 2, h: int = 8, w: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(5))


def test_flip_each_flips_each_row_its_own_way_and_undoes_itself():
    x = torch.arange(2 * 5 * 3 * 4 * 6, dtype=torch.float32).reshape(10, 3, 4, 6)
    indices = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    flipped = flip_each(x, indices)
    for r, j in enumerate(indices):
        assert torch.equal(flipped[r], x[r].flip(FLIPS[j % 4]) if FLIPS[j % 4] else x[r])
    assert torch.equal(flip_each(flipped, indices), x)
    assert flip_each(x, [0, 4, 8, 0, 4, 8, 0, 4, 8, 0]) is x  # nothing to flip: no copy
    with pytest.raises(ValueError, match="one sample index per row: 10 rows, got 2"):
        flip_each(x, [0, 1])


def test_recipe_round_trips_and_checks_ensemble():
    assert FLIPS4.to_dict()["ensemble"] == "flips" and Recipe.from_dict(FLIPS4.to_dict()) == FLIPS4
    assert "ensemble" not in ONE.to_dict()  # configs written before the field read the same
    assert FLIPS4 != FLIPS4.override(ensemble="none") and hash(FLIPS4) != hash(FLIPS4.override(ensemble="none"))
    assert ONE.override(num_samples=4, ensemble="flips") == FLIPS4
    with pytest.raises(ConfigError, match="ensemble"):
        Recipe(ensemble="rotations")


def test_sample_j_is_the_model_on_the_input_flipped_the_jth_way(upscaler):
    images = _images(h=8, w=6)  # not square: flips keep the shape
    out = upscaler.upscale(images, preset="fidelity", seed=7, output_type="pt", progress=False, return_dict=True)
    for k in range(2):
        for j in range(4):  # sample j of image k draws from seed + k*K + j, as without flips
            alone = upscaler.upscale(images[k].flip(FLIPS[j]) if FLIPS[j] else images[k], recipe=ONE,
                                     seed=7 + k * 4 + j, output_type="pt", progress=False)
            assert torch.allclose(out.samples[k][j], alone.flip(FLIPS[j]) if FLIPS[j] else alone, atol=1e-5)
    plain = upscaler.upscale(images, preset="fidelity", ensemble="none", seed=7, output_type="pt", progress=False)
    assert torch.allclose(plain[0], upscaler.upscale(images[0], recipe=ONE, num_samples=4, seed=7, output_type="pt",
                                                     progress=False), atol=1e-5)
    assert not torch.allclose(plain, out.images)


def test_upscale_tensor_and_cascades_flip_as_upscale_does(upscaler):
    images = _images()
    reference = upscaler.upscale(images, preset="fidelity", seed=11, output_type="pt", progress=False)
    gens = [torch.Generator().manual_seed(11 + k) for k in range(2 * 4)]
    tensor = upscaler.upscale_tensor(images * 2 - 1, preset="fidelity", generator=gens, progress=False)
    assert torch.allclose((tensor + 1) / 2, reference, atol=1e-5)
    staged = Cascade([upscaler]).run(list(images), preset="fidelity", seed=11, output_type="pt", progress=False)
    assert torch.allclose(torch.stack(list(staged)), reference, atol=1e-5)


def test_cli_takes_ensemble_and_refuses_an_unknown_one(tmp_path, upscaler, capsys):
    model = str(upscaler.save_pretrained(tmp_path / "model"))
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "flips.png", "--model", model, "--preset", "realism",
                       "--samples", 4, "--ensemble", "flips", "--seed", 3, "--quiet")
    assert code == 0, lines
    code, lines = _cli(capsys, src, "-o", tmp_path / "plain.png", "--model", model, "--preset", "realism",
                       "--samples", 4, "--seed", 3, "--quiet")
    assert code == 0, lines
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "flips.png")),
                              np.asarray(Image.open(tmp_path / "plain.png")))
    code, lines = _cli(capsys, src, "-o", tmp_path / "bad.png", "--model", model, "--ensemble", "rotations")
    assert code == 2 and "--ensemble" in "\n".join(lines) and not (tmp_path / "bad.png").exists()
