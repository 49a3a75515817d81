"""A recipe that averages K samples (`Recipe.num_samples`): stored in presets, honoured by every entry point
(`upscale`, `upscale_tensor`, the batch runner and CLI, cascades, `evaluate`) with the same seeds, and counted
as K x the network calls by the preset rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr3infer.sampling import preset_rule as presets
from sr3infer.runtime.validate import ConfigError
from sr3infer.cascade import Cascade
from sr3infer.models.config import Recipe
from sr3infer.train.evaluate import evaluate
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

from test_cli import _cli, _png  # noqa: F401

MEAN3 = Recipe(sampler="ancestral", num_steps=2, spacing="linear", consistency="every", num_samples=3)
ONE = Recipe(sampler="ancestral", num_steps=2, spacing="linear", consistency="every")


@pytest.fixture
def mean_upscaler(tiny_config) -> Upscaler:
    config = tiny_config.replace(presets={"fidelity": MEAN3, "realism": ONE}, sampling=ONE, task={})
    torch.manual_seed(0)
    return Upscaler(config, build_model(config), device="cpu")


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(5))


def test_recipe_round_trips_and_checks_num_samples():
    assert MEAN3.to_dict()["num_samples"] == 3 and Recipe.from_dict(MEAN3.to_dict()) == MEAN3
    assert "num_samples" not in ONE.to_dict()  # configs written before the field read the same
    assert MEAN3 != ONE and hash(MEAN3) != hash(ONE)
    assert ONE.override(num_samples=3) == MEAN3 and MEAN3.override(num_samples=None) == MEAN3
    for bad in (0, 257, True, 2.0, "4"):
        with pytest.raises(ConfigError, match="num_samples"):
            Recipe(num_samples=bad)


def test_a_mean_preset_is_upscale_with_num_samples(mean_upscaler):
    images = _images()
    by_preset = mean_upscaler.upscale(images, preset="fidelity", seed=7, output_type="pt", progress=False,
                                      return_dict=True)
    spelled = mean_upscaler.upscale(images, recipe=ONE, num_samples=3, seed=7, output_type="pt", progress=False)
    assert torch.equal(by_preset.images, spelled)
    assert by_preset.uncertainty is not None and len(by_preset.samples[0]) == 3  # K >= 2: the map comes with it
    one = mean_upscaler.upscale(images, preset="fidelity", num_samples=1, seed=7, output_type="pt", progress=False)
    assert torch.equal(one, mean_upscaler.upscale(images, recipe=ONE, seed=7, output_type="pt", progress=False))
    assert not torch.allclose(one, spelled)


def test_upscale_tensor_averages_with_the_same_seeds_as_upscale(mean_upscaler):
    images = _images()
    reference = mean_upscaler.upscale(images, preset="fidelity", seed=11, output_type="pt", progress=False)
    gens = [torch.Generator().manual_seed(11 + k) for k in range(2 * 3)]  # image i, sample j: seed + i*K + j
    tensor = mean_upscaler.upscale_tensor(images * 2 - 1, preset="fidelity", generator=gens, progress=False)
    assert torch.allclose((tensor + 1) / 2, reference, atol=1e-5)
    with pytest.raises(ValueError, match="2 generators for 2 images x 3 samples"):
        mean_upscaler.upscale_tensor(images * 2 - 1, preset="fidelity", generator=gens[:2], progress=False)


def test_evaluate_scores_the_mean_and_uses_upscales_seeds(mean_upscaler):
    hr = list(torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1)
    mean = evaluate(mean_upscaler, hr, batch_size=4, seed=3, fid=False, preset="fidelity")
    again = evaluate(mean_upscaler, hr, batch_size=1, seed=3, fid=False, preset="fidelity")
    assert torch.allclose(mean["outputs"], again["outputs"], atol=1e-5)  # seeds do not depend on batching
    one = evaluate(mean_upscaler, hr, batch_size=4, seed=3, fid=False, preset="fidelity", num_samples=1)
    assert not torch.allclose(mean["outputs"], one["outputs"])


def test_a_cascade_stage_averages_like_upscale(mean_upscaler):
    images = list(_images())
    cascade = Cascade([mean_upscaler])
    staged = cascade.run(images, preset="fidelity", seed=4, output_type="pt", progress=False)
    direct = mean_upscaler.upscale(images, preset="fidelity", seed=4, output_type="pt", progress=False)
    assert torch.allclose(torch.stack(list(staged)), torch.stack(list(direct)), atol=1e-5)
    single = cascade.run(images, preset="fidelity", num_samples=1, seed=4, output_type="pt", progress=False)
    assert not torch.allclose(torch.stack(list(single)), torch.stack(list(staged)))


def test_cli_preset_with_a_mean_writes_its_uncertainty_without_samples(tmp_path, mean_upscaler, capsys):
    model = str(mean_upscaler.save_pretrained(tmp_path / "model"))
    src = _png(tmp_path / "in.png")
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", model, "--preset", "fidelity", "--quiet",
                       "--uncertainty", tmp_path / "u.npy", "--seed", 1)
    assert code == 0, lines
    assert np.load(tmp_path / "u.npy").max() > 0  # the preset's three samples disagree somewhere
    code, lines = _cli(capsys, src, "-o", tmp_path / "out2.png", "--model", model, "--preset", "realism", "--quiet",
                       "--uncertainty", tmp_path / "u2.npy")
    assert code == 2 and "--uncertainty needs --samples 2 or more" in "\n".join(lines)
    assert not (tmp_path / "out2.png").exists()


def test_the_rule_counts_k_times_the_calls():
    base = {"sampler": "ancestral", "eta": 0.0, "spacing": "quadratic", "consistency": "every",
            "bicubic": {"psnr": 20.0}}
    runs = {}
    for steps, k, psnr in ((5, 1, 24.0), (5, 16, 24.60), (3, 4, 24.58), (2, 16, 24.62)):
        row = {**base, "num_steps": steps, "model": {"psnr": psnr, "consistency_1e5": 0.01, "kid_1e3": 40.0 - k},
               **({"num_samples": k} if k > 1 else {})}
        runs[presets.key(row)] = row
    assert presets.key(runs["ancestral|eta=0|3|quadratic|every|mean4"]) == "ancestral|eta=0|3|quadratic|every|mean4"
    assert presets.network_calls(runs["ancestral|eta=0|2|quadratic|every|mean16"]) == 32
    chosen = presets.choose(runs)
    assert presets.key(chosen["fidelity"]) == "ancestral|eta=0|3|quadratic|every|mean4"  # 12 calls, within 0.05 dB
    assert Recipe.from_dict(presets.recipe_of(chosen["fidelity"])).num_samples == 4
    assert "num_samples" not in presets.recipe_of(runs["ancestral|eta=0|5|quadratic|every"])
    assert [r.get("num_samples", 1) for r in presets.grid((1, 5), [("ancestral", 0.0)], ("quadratic",), ("every",),
                                                          (1, 8))] == [1, 1, 8, 8]
