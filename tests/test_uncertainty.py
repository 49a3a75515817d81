"""Ensembles and uncertainty: num_samples / return_dict (UpscaleOutput), the known spread of a Gaussian
posterior, seeds, bad options, saving the map, and the CLI's --samples / --uncertainty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sr3infer.images.resample import bicubic, project_onto_input
from sr3infer.sampling.uncertainty import MAX_NUM_SAMPLES, heatmap, sample_spread, save_uncertainty
from sr3infer.upscaler import Upscaler, UpscaleOutput

from test_cli import _cli, _png, model  # noqa: F401 - `model` is the CLI tests' fixture (the tiny model on disk)

RNG = np.random.default_rng(0)


def _rgb(size: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)


def run(upscaler: Upscaler, images, **kwargs):
    kwargs = {"num_steps": 2, "seed": 0, "progress": False, "sampler": "ancestral", **kwargs}
    return upscaler.upscale(images, **kwargs)


def full(upscaler: Upscaler, images, **kwargs) -> tuple:
    """(images, uncertainty, samples) of one `return_dict=True` call."""
    out = run(upscaler, images, return_dict=True, **kwargs)
    assert isinstance(out, UpscaleOutput)
    return out.images, out.uncertainty, out.samples


def _as_array(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# One sample is exactly today's call.


def _fresh(options: dict) -> dict:
    """A generator is used up by a call: each call gets a new one, seeded alike."""
    return {**options, "generator": torch.Generator().manual_seed(3)} if "generator" in options else options


@pytest.mark.parametrize("options", [
    {},
    {"sampler": "ddim", "consistency": "final"},
    {"tile_size": 8, "consistency": "every"},
    {"seed": None, "generator": None},
])
def test_one_sample_is_bit_for_bit_the_plain_call(tiny_upscaler, options):
    images = [_rgb(), Image.fromarray(_rgb()), torch.rand(2, 3, 8, 8)]
    plain = run(tiny_upscaler, images, **_fresh(options))
    one = run(tiny_upscaler, images, num_samples=1, **_fresh(options))
    for a, b in zip(plain, one):
        assert np.array_equal(_as_array(a), _as_array(b))
    single, uncertainty, samples = full(tiny_upscaler, images[0], num_samples=1, **_fresh(options))
    assert uncertainty is None  # one sample has no spread
    assert len(samples) == 1 and np.array_equal(samples[0], single)
    if "generator" not in options:  # seeds, unlike one shared generator, make image 0 alone equal to it in a batch
        assert np.array_equal(single, plain[0])


# Shapes and types for every input kind.


@pytest.mark.parametrize("image, out_shape", [
    (Image.fromarray(_rgb()), (16, 16)),
    (Image.fromarray(_rgb()[..., 0]), (16, 16)),
    (Image.fromarray(RNG.integers(0, 65536, (8, 8), dtype=np.uint16)), (16, 16)),
    (Image.fromarray(RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8), mode="RGBA"), (16, 16)),
    (_rgb(), (16, 16, 3)),
    (_rgb()[..., 0], (16, 16)),
    (RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16), (16, 16, 3)),
    (RNG.random((8, 8, 3), dtype=np.float32), (16, 16, 3)),
    (torch.rand(3, 8, 8), (3, 16, 16)),
    (torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8), (1, 16, 16)),
])
def test_single_inputs_give_one_map_and_k_samples_of_their_kind(tiny_upscaler, image, out_shape):
    result, uncertainty, samples = full(tiny_upscaler, image, num_samples=3)
    plain = run(tiny_upscaler, image)
    assert type(result) is type(plain)
    if isinstance(plain, Image.Image):
        assert result.mode == plain.mode and result.size == out_shape[::-1]
    else:
        assert tuple(result.shape) == out_shape and result.dtype == plain.dtype
    assert isinstance(uncertainty, np.ndarray) and uncertainty.dtype == np.float32 and uncertainty.shape == (16, 16)
    assert 0 <= uncertainty.min() and uncertainty.max() <= 0.5 * math.sqrt(3 / 2) and uncertainty.max() > 0  # ddof=1
    assert isinstance(samples, list) and len(samples) == 3
    assert all(type(s) is type(plain) for s in samples)
    assert (full(tiny_upscaler, image, num_samples=3)[1] == uncertainty).all()  # reproducible


@pytest.mark.parametrize("batch, out_shape, samples_shape", [
    (RNG.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), (2, 16, 16, 3), (2, 3, 16, 16, 3)),
    (torch.rand(2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 3, 16, 16)),
])
def test_batches_give_stacked_maps_and_samples(tiny_upscaler, batch, out_shape, samples_shape):
    result, uncertainty, samples = full(tiny_upscaler, batch, num_samples=3)
    assert tuple(result.shape) == out_shape and type(result) is type(batch)
    assert isinstance(uncertainty, np.ndarray) and uncertainty.shape == (2, 16, 16)
    assert type(samples) is type(batch) and tuple(samples.shape) == samples_shape


def test_paths_and_lists_give_lists(tiny_upscaler, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(_rgb()).save(path)
    items = [str(path), _rgb(), torch.rand(2, 3, 8, 8)]
    result, uncertainty, samples = full(tiny_upscaler, items, num_samples=2)
    assert [type(r) for r in result] == [Image.Image, np.ndarray, torch.Tensor]
    assert [u.shape for u in uncertainty] == [(16, 16), (16, 16), (2, 16, 16)]
    assert [type(s) for s in samples] == [list, list, torch.Tensor]
    assert len(samples[0]) == 2 and isinstance(samples[0][0], Image.Image)
    assert tuple(samples[2].shape) == (2, 2, 3, 16, 16)
    assert full(tiny_upscaler, [], num_samples=2) == ([], None, None)
    assert isinstance(full(tiny_upscaler, (_rgb(),), num_samples=2)[1], list)


# What the numbers are.


def test_the_output_is_the_mean_and_the_map_the_ddof_1_std_of_the_samples(tiny_upscaler):
    image = RNG.random((8, 8, 3), dtype=np.float32)  # float in, float out: nothing is rounded
    result, uncertainty, samples = full(tiny_upscaler, image, num_samples=4, consistency="none")
    stack = np.stack(samples).astype(np.float64)
    assert np.abs(result - stack.mean(0)).max() <= 1e-6
    assert np.abs(uncertainty - stack.std(0, ddof=1).mean(-1)).max() <= 1e-6
    gray, gray_map, gray_samples = full(tiny_upscaler, image[..., 0], num_samples=4)
    assert np.abs(gray_map - np.stack(gray_samples).std(0, ddof=1)).max() <= 1e-6  # the gray value's spread


@pytest.mark.parametrize("consistency", ["final", "every"])
def test_the_mean_is_projected_onto_the_input(tiny_upscaler, consistency):
    lowres = torch.rand(1, 3, 8, 8) * 0.5 + 0.25  # mid-range: an in-range image can match it
    out, _, samples = full(tiny_upscaler, lowres, num_samples=3, consistency=consistency, output_type="pt")
    expected = project_onto_input(samples[0].mean(0, keepdim=True) * 2 - 1, lowres * 2 - 1)  # samples: (N, K, ...)
    assert (out[0] * 2 - 1 - expected[0]).abs().max() <= 1e-5
    assert (bicubic(out * 2 - 1, 8) - (lowres * 2 - 1)).abs().max() <= 2e-3


class _GaussianPosterior(nn.Module):
    """The exact denoiser of data x0 ~ N(0, S^2) per pixel, S a fixed map, on the float64 levels of `gammas`.

    Each DDIM step (eta 0) with it is linear in x, so the sampler maps pure noise z to A * z with A the
    product of the steps' factors (`_ddim_gain`): its output is exactly N(0, A^2), discretisation included.
    """

    def __init__(self, spread: torch.Tensor, gammas: torch.Tensor) -> None:
        super().__init__()
        self.noise_level_mlp = nn.Linear(1, 1)  # the Upscaler keeps this module in float32
        self.spread, self.gammas = spread.double(), gammas.double()

    def forward(self, inputs: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        x = inputs[:, 3:].double()
        # The grid gamma the sampler used (float32 levels fix 1 - gamma only to a few per cent near 1).
        index = (self.gammas.sqrt()[None, :] - noise_level.double()[:, None]).abs().argmin(dim=1)
        gamma, s2 = self.gammas[index].view(-1, 1, 1, 1), self.spread**2
        x0 = gamma.sqrt() * s2 * x / (gamma * s2 + 1 - gamma)
        return ((x - gamma.sqrt() * x0) / (1 - gamma).sqrt()).float()


def _ddim_gain(spread: float, gammas: torch.Tensor) -> float:
    """A: deterministic DDIM with `_GaussianPosterior` maps noise z to A * z."""
    gain = 1.0
    for g, g_next in zip(gammas.double()[:-1], gammas.double()[1:]):
        x0 = g.sqrt() * spread**2 / (g * spread**2 + 1 - g)  # x0_hat / x
        eps = (1 - g.sqrt() * x0) / (1 - g).sqrt()            # eps_hat / x
        gain *= float(g_next.sqrt() * x0 + (1 - g_next).sqrt() * eps)
    return gain


def test_a_known_posterior_spread_is_measured_within_5_standard_errors(tiny_config):
    """Left half S = 0.05, right half 0.2 (in [-1, 1]): the map must read c4(K) * A / 2 in [0, 1] units.

    A is the sampler's exact output std (0.04 and 0.18 on this 20-step grid); the expected value of the
    ddof=1 sample std of K normal draws is c4(K) times the true one (c4(8) = 0.965, where ddof=0 would
    read 6.5% lower); the standard error comes from the pixels themselves, which are independent.
    """
    config = tiny_config.replace(lowres_size=32)  # 64x64 out: one tile
    gammas = config.schedule.inference_grid(20, spacing="quadratic")
    spread = torch.full((1, 1, 64, 64), 0.05)
    spread[..., 32:] = 0.2
    upscaler = Upscaler(config, _GaussianPosterior(spread, gammas), device="cpu")
    k = 8
    out = upscaler.upscale(RNG.random((32, 32, 3), dtype=np.float32), num_samples=k, seed=0, sampler="ddim", eta=0.0,
                           num_steps=20, spacing="quadratic", consistency="none", progress=False, return_dict=True)
    mean, uncertainty = out.images, out.uncertainty
    c4 = math.sqrt(2 / (k - 1)) * math.gamma(k / 2) / math.gamma((k - 1) / 2)
    for half, s in ((uncertainty[:, :32], 0.05), (uncertainty[:, 32:], 0.2)):
        expected = c4 * _ddim_gain(s, gammas) / 2
        standard_error = half.std() / math.sqrt(half.size)
        assert abs(half.mean() - expected) < 5 * standard_error, (half.mean(), expected, standard_error)
        assert 0.75 * s / 2 < expected < s / 2  # the grid's discretisation shrinks the spread a little
    # The ensemble mean of K draws of N(0.5, (A/2)^2) in [0, 1] units: std A / 2 / sqrt(K) per pixel.
    right, sigma = mean[:, 32:].astype(np.float64), _ddim_gain(0.2, gammas) / 2 / math.sqrt(k)
    assert abs(right.mean() - 0.5) < 5 * sigma / math.sqrt(right.size)
    assert abs(right.std() / sigma - 1) < 5 / math.sqrt(2 * right.size)


# Seeds.


def test_sample_k_of_image_i_uses_seed_plus_i_times_k_plus_k(tiny_upscaler):
    images = [RNG.random((8, 8, 3), dtype=np.float32) for _ in range(2)]
    _, _, samples = full(tiny_upscaler, images, num_samples=3, seed=5, batch_size=4)
    for i, image in enumerate(images):
        for k in range(3):
            alone = run(tiny_upscaler, image, seed=5 + 3 * i + k)
            assert np.abs(samples[i][k] - alone).max() <= 1e-4  # batching changes only float rounding
    again = full(tiny_upscaler, images, num_samples=3, seed=5, batch_size=2)
    first = full(tiny_upscaler, images, num_samples=3, seed=5, batch_size=2)
    assert all(np.array_equal(a, b) for a, b in zip(again[1], first[1]))  # reproducible
    other = full(tiny_upscaler, images, num_samples=3, seed=6)
    assert not np.allclose(other[1][0], first[1][0], atol=1e-3)
    # One generator per sample, image-major, is the same as the seeds.
    gens = [torch.Generator().manual_seed(5 + j) for j in range(6)]
    by_generators = full(tiny_upscaler, images, num_samples=3, seed=None, generator=gens, batch_size=2)
    assert all(np.array_equal(a, b) for a, b in zip(by_generators[1], first[1]))


# Bad options.


@pytest.mark.parametrize("options, message", [
    ({"num_samples": 0}, "between 1 and 256 samples per image, got 0"),
    ({"num_samples": -1}, "between 1 and 256"),
    ({"num_samples": MAX_NUM_SAMPLES + 1}, "between 1 and 256 samples per image, got 257"),
    ({"num_samples": 10**12}, "between 1 and 256"),
    ({"num_samples": 1.5}, "whole number of samples per image, got 1.5"),
    ({"num_samples": 2.0}, "whole number"),
    ({"num_samples": True}, "whole number"),
    ({"num_samples": "8"}, "whole number"),
    ({"num_samples": 2, "seed": None, "generator": [torch.Generator()] * 3},
     r"3 generators for 1 images x 2 samples; pass one per sample \(2, image-major\)"),
])
def test_bad_num_samples_are_clear_errors(tiny_upscaler, options, message):
    with pytest.raises(ValueError, match=message):
        run(tiny_upscaler, _rgb(), **options)


def test_the_size_guard_counts_the_samples(tiny_upscaler):
    # Each image is 16x16 = 256 output pixels; K samples of it are held at once.
    assert full(tiny_upscaler, _rgb(), num_samples=3, max_output_pixels=3 * 256)[1].shape == (16, 16)
    with pytest.raises(ValueError, match=r"4 samples of a 16x16 output are 0.0 MP held at once, over max_output_pixels"):
        run(tiny_upscaler, _rgb(), num_samples=4, max_output_pixels=3 * 256)
    assert run(tiny_upscaler, _rgb(), num_samples=4, max_output_pixels=None).shape == (16, 16, 3)


def test_numpy_integers_are_accepted(tiny_upscaler):
    assert full(tiny_upscaler, _rgb(), num_samples=np.int64(2))[1].shape == (16, 16)


# The map on disk.


def test_heatmap_colours_and_saving(tmp_path):
    values = np.array([[0.0, 0.025, 0.05, 1.0, np.nan]], dtype=np.float32)  # 0, half and all of HEATMAP_MAX
    picture = np.asarray(heatmap(values))
    assert picture.shape == (1, 5, 3) and picture.dtype == np.uint8
    assert tuple(picture[0, 0]) == (0, 0, 4) and tuple(picture[0, 2]) == tuple(picture[0, 3]) == (252, 255, 164)
    assert tuple(picture[0, 1]) == (188, 55, 84) and tuple(picture[0, 4]) == (0, 0, 4)
    array = RNG.random((4, 6)).astype(np.float32)
    npy = save_uncertainty(array, tmp_path / "u.npy")
    loaded = np.load(npy)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, array)
    png = save_uncertainty(array, tmp_path / "u.png")
    assert Image.open(png).mode == "RGB" and Image.open(png).size == (6, 4)
    for path in (npy, png):
        with pytest.raises(FileExistsError, match="already exists"):
            save_uncertainty(array, path)
        save_uncertainty(array * 0, path, overwrite=True)
    assert np.load(npy).max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.npy", "u.png"]  # no temporary files left
    with pytest.raises(ValueError, match="at least 2"):
        sample_spread(torch.zeros(1, 3, 4, 4))


# The command line.


def test_cli_writes_the_mean_and_its_map(tmp_path, model, capsys):
    src = _png(tmp_path / "in.png")
    common = ["--model", model, "--steps", 2, "--sampler", "ancestral", "--seed", 3, "--quiet", "--samples", 4]
    assert _cli(capsys, src, "-o", tmp_path / "out.png", *common, "--uncertainty", tmp_path / "u.png")[0] == 0
    assert _cli(capsys, src, "-o", tmp_path / "out2.png", *common, "--uncertainty", tmp_path / "u.npy")[0] == 0
    upscaler = Upscaler.from_pretrained(model, device="cpu")
    out = upscaler.upscale(Image.open(src), num_steps=2, sampler="ancestral", seed=3, num_samples=4, return_dict=True,
                           progress=False)
    mean, uncertainty = out.images, out.uncertainty
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(mean))
    assert np.array_equal(np.load(tmp_path / "u.npy"), uncertainty)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "u.png")), np.asarray(heatmap(uncertainty)))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (tmp_path / "maps").mkdir()  # an existing folder: the map is named after the output
    assert _cli(capsys, src, "-o", tmp_path / "out3.png", *common, "--uncertainty", tmp_path / "maps")[0] == 0
    assert [p.name for p in (tmp_path / "maps").iterdir()] == ["out3_uncertainty.png"]


def test_cli_folder_mode_writes_one_map_per_image(tmp_path, model, capsys):
    for name in ("a", "b", "c"):
        _png(tmp_path / "in" / f"{name}.png")
    common = ["--model", model, "--steps", 2, "--quiet", "--samples", 2, "--batch-size", 3]
    code, _ = _cli(capsys, tmp_path / "in", "-o", tmp_path / "out", *common, "--uncertainty", tmp_path / "out")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.png", "a_uncertainty.png", "b.png", "b_uncertainty.png", "c.png", "c_uncertainty.png"]
    code, _ = _cli(capsys, tmp_path / "in", "-o", tmp_path / "out2", *common, "--uncertainty", tmp_path / "maps",
                   "--uncertainty-format", "npy")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "a_uncertainty.npy", "b_uncertainty.npy", "c_uncertainty.npy"]
    # File k keeps seed --seed + k * K + j whatever the batching.
    one_by_one = ["--model", model, "--steps", 2, "--quiet", "--samples", 2, "--batch-size", 1]
    assert _cli(capsys, tmp_path / "in", "-o", tmp_path / "out3", *one_by_one, "--uncertainty", tmp_path / "maps3",
                "--uncertainty-format", "npy")[0] == 0
    for name in ("a", "b", "c"):
        assert np.abs(np.load(tmp_path / "maps" / f"{name}_uncertainty.npy")
                      - np.load(tmp_path / "maps3" / f"{name}_uncertainty.npy")).max() <= 1e-4  # float rounding only


@pytest.mark.parametrize("args, message", [
    (["--samples", 0], "--samples must be between 1 and 256"),
    (["--samples", -1], "--samples must be between 1 and 256"),
    (["--samples", 1.5], "argument --samples: invalid int value: '1.5'"),
    (["--samples", 10**9], "--samples must be between 1 and 256"),
    (["--uncertainty", "u.png"], "--uncertainty needs --samples 2 or more"),
    (["--samples", 2, "--uncertainty", "OUT"], "would both be written to"),
    (["--samples", 2, "--uncertainty", "u.npy", "--uncertainty-format", "png"], "--uncertainty-format is for folder"),
    (["--samples", 2, "--uncertainty-format", "npy"], "--uncertainty-format needs --uncertainty"),
])
def test_cli_bad_samples_and_maps_are_usage_errors(tmp_path, model, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    src = _png(tmp_path / "in.png")
    args = [tmp_path / "out.png" if a == "OUT" else a for a in args]
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", model, *args)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out.png").exists()


def test_cli_refuses_an_existing_map_before_any_work(tmp_path, model, capsys):
    src = _png(tmp_path / "in.png")
    (tmp_path / "u.png").write_bytes(b"keep")
    code, lines = _cli(capsys, src, "-o", tmp_path / "out.png", "--model", model, "--samples", 2,
                       "--uncertainty", tmp_path / "u.png")
    assert code == 1 and "already exists; pass --overwrite" in lines[0]
    assert not (tmp_path / "out.png").exists() and (tmp_path / "u.png").read_bytes() == b"keep"
