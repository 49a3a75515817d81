"""Samplers: SR3's reference step and loop, problems with known answers (a fixed target, Gaussian data), randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sr3infer.sampling import samplers
from sr3infer.models.checkpoints import load_community_checkpoint
from sr3infer.sampling.prediction import to_x0
from sr3infer.sampling.samplers import SAMPLERS, get_sampler, randn, sample_ancestral, sample_ddim, sample_dpmpp_2m
from sr3infer.sampling.schedule import NoiseSchedule
from sr3infer.models.weights import build_model

from conftest import FIXTURES, require

T = 2000


@pytest.fixture(scope="module")
def reference_model():
    config, state = load_community_checkpoint(require(FIXTURES / "tiny_gen.safetensors"), scale=2)
    return build_model(config, state)


def _eps_denoiser(model, cond):
    """The reference U-Net (eps-prediction) as a denoiser: its eps turned into x0 the library's one way."""
    def denoise(x, noise_level):
        return to_x0("eps", x, model(torch.cat([cond, x], dim=1), noise_level.float()), noise_level)

    return denoise


# SR3's reference: one ancestral step and the full 2000-step loop.


@pytest.mark.parametrize("t, suffix", [(1000, ""), (200, "_200"), (0, "_0")])
def test_single_ancestral_step_matches_reference(t, suffix, reference_model, monkeypatch):
    ref = load_file(str(require(FIXTURES / "tiny_sample_step.safetensors")))
    assert int(ref[f"t{suffix}"]) == t
    y_t, cond = ref["y_t"], ref["cond"]
    gammas = NoiseSchedule().inference_grid(T)[T - 1 - t : T + 1 - t]  # (gamma_t, gamma_{t-1}); 1.0 at t = 0
    seen: dict[str, torch.Tensor] = {}

    def denoise(x, noise_level):
        seen["noise_level"] = noise_level.float()
        seen["eps"] = reference_model(torch.cat([cond, x], dim=1), noise_level.float())
        return to_x0("eps", x, seen["eps"], noise_level)

    def run(z):
        draws = []

        def fake_randn(shape, **kwargs):
            draws.append(shape)
            return z.clone()

        monkeypatch.setattr(samplers, "randn", fake_randn)
        y = sample_ancestral(denoise, y_t.clone(), gammas, callback=lambda info: seen.update(x0=info["x0"]),
                             disable=True)
        return y, draws

    z = ref.get(f"z{suffix}", torch.zeros_like(y_t))
    y_prev, draws = run(z)
    assert len(draws) == (0 if t == 0 else 1)  # no noise is drawn at t = 0
    assert torch.allclose(seen["noise_level"], ref[f"noise_level{suffix}"].view(-1), rtol=0, atol=1e-7)
    assert (seen["eps"] - ref[f"eps{suffix}"]).abs().max() <= 1e-5
    assert (seen["x0"] - ref[f"x0_pred{suffix}"]).abs().max() <= 1e-5
    assert (y_prev - ref[f"y_prev{suffix}"]).abs().max() <= 1e-5
    if t > 0:
        mean, _ = run(torch.zeros_like(y_t))
        if f"model_mean{suffix}" in ref:  # stored for t = 1000 only
            assert (mean - ref[f"model_mean{suffix}"]).abs().max() <= 1e-5
        std = ((y_prev - mean) / z).median()
        assert std.item() == pytest.approx(ref[f"model_log_variance{suffix}"].mul(0.5).exp().item(), rel=1e-4)


@pytest.mark.slow
def test_full_2000_step_loop_matches_reference(reference_model):
    """2000 tiny U-Net calls: about 12 s on one idle core."""
    ref = load_file(str(require(FIXTURES / "tiny_sr_loop.safetensors")))
    generator = torch.Generator().manual_seed(int(ref["seed"]))
    y = torch.randn((1, 3, 32, 32), generator=generator)  # the reference's first draw after torch.manual_seed(1)
    assert torch.equal(y, ref["y_T"])
    cond = ref["cond"]
    out = sample_ancestral(_eps_denoiser(reference_model, cond), y, NoiseSchedule().inference_grid(T),
                           generator=generator, disable=True)
    assert (out[0] - ref["sr"]).abs().max() <= 1e-4


# A denoiser that knows the answer.


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("num_steps", [1, 2, 7, 50])
@pytest.mark.parametrize("clip", [True, False])
def test_every_sampler_ends_at_the_target_of_an_exact_denoiser(name, num_steps, clip):
    target = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 1.8 - 0.9
    gammas = NoiseSchedule().inference_grid(num_steps)

    def denoise(x, noise_level):
        return target.float()

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = SAMPLERS[name](denoise, x, gammas, clip_denoised=clip, generator=torch.Generator().manual_seed(2),
                         disable=True)
    assert (out.double() - target).abs().max() <= 1e-5


# Gaussian data N(MU, S^2) per pixel: the exact denoiser is analytic.

MU, S = 0.1, 0.35
N = 2**16  # independent pixels per run


def gaussian_denoiser(x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for x = g x0 + sqrt(1 - g^2) eps and x0 ~ N(MU, S^2): MU + g S^2 (x - g MU) / (g^2 S^2 + 1 - g^2)."""
    g = noise_level.double().view(-1, 1, 1, 1)
    return (MU + g * S**2 * (x.double() - g * MU) / (g**2 * S**2 + 1 - g**2)).to(x.dtype)


@pytest.mark.parametrize("name, num_steps, bias", [
    # `bias`: the discretisation error of the sample std on SR3's linear-t grid, measured with
    # 3 x 1e6 samples (ancestral -1.0%, ddim -0.76%, dpmpp_2m +0.17%), with headroom.
    ("ancestral", 1000, 0.015),
    ("ddim", 500, 0.01),
    ("dpmpp_2m", 50, 0.005),
])
def test_samplers_draw_the_right_gaussian(name, num_steps, bias):
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(1, 1, 256, 256, generator=generator)
    out = SAMPLERS[name](gaussian_denoiser, x, NoiseSchedule().inference_grid(num_steps), clip_denoised=False,
                         generator=generator, disable=True).double()
    # Five standard errors: the mean's is S / sqrt(N), the standard deviation's S / sqrt(2 N).
    assert abs(out.mean().item() - MU) < 5 * S / N**0.5
    assert abs(out.std().item() / S - 1) < 5 / (2 * N) ** 0.5 + bias


def _ode_error(sampler, gammas: torch.Tensor) -> float:
    """Max distance from the exact probability-flow map x_T -> MU + S (x_T - g MU) / sqrt(g^2 S^2 + 1 - g^2)."""
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = gammas[0].sqrt()
    exact = MU + S * (x - g * MU) / (g**2 * S**2 + 1 - g**2).sqrt()
    return (sampler(gaussian_denoiser, x, gammas, clip_denoised=False, disable=True) - exact).abs().max().item()


def _lambda_uniform_grid(num_steps: int) -> torch.Tensor:
    """Gammas evenly spaced in half log-SNR from -5 to 7, then 1.0 (DPM-Solver's own grid)."""
    lam = torch.linspace(-5, 7, num_steps, dtype=torch.float64)
    return torch.cat([torch.sigmoid(2 * lam), torch.ones(1, dtype=torch.float64)])


def test_deterministic_samplers_converge_to_the_probability_flow_at_their_order():
    ddim = [_ode_error(sample_ddim, NoiseSchedule().inference_grid(n)) for n in (100, 200, 400)]
    assert ddim[0] < 0.1
    for coarse, fine in zip(ddim, ddim[1:]):  # first order: halving the step halves the error
        assert 1.7 < coarse / fine < 2.3
    dpm = [_ode_error(sample_dpmpp_2m, _lambda_uniform_grid(n)) for n in (25, 50, 100)]
    assert dpm[0] < 0.03
    for coarse, fine in zip(dpm, dpm[1:]):  # second order: a quarter
        assert 3.4 < coarse / fine < 4.6
    # On SR3's grid, where the last step to t = 0 is much longer than the others, it still beats DDIM.
    assert _ode_error(sample_dpmpp_2m, NoiseSchedule().inference_grid(25)) < 0.5 * _ode_error(
        sample_ddim, NoiseSchedule().inference_grid(25))


def test_ddim_with_eta_1_is_the_ancestral_sampler():
    gammas = NoiseSchedule().inference_grid(20)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ancestral = sample_ancestral(gaussian_denoiser, x, gammas, generator=torch.Generator().manual_seed(5), disable=True)
    ddim = sample_ddim(gaussian_denoiser, x, gammas, eta=1.0, generator=torch.Generator().manual_seed(5), disable=True)
    assert (ancestral - ddim).abs().max() <= 1e-4


# Randomness and the registry.


def _run(name: str, seed: int, **kwargs) -> torch.Tensor:
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return SAMPLERS[name](gaussian_denoiser, x, NoiseSchedule().inference_grid(10),
                          generator=torch.Generator().manual_seed(seed), disable=True, **kwargs)


def test_seeds_control_the_stochastic_samplers():
    assert torch.equal(_run("ancestral", 1), _run("ancestral", 1))
    assert not torch.allclose(_run("ancestral", 1), _run("ancestral", 2), atol=1e-3)
    assert torch.equal(_run("ddim", 1, eta=0.0), _run("ddim", 2, eta=0.0))  # eta = 0 draws nothing
    assert not torch.allclose(_run("ddim", 1, eta=0.5), _run("ddim", 2, eta=0.5), atol=1e-3)
    assert torch.equal(_run("dpmpp_2m", 1), _run("dpmpp_2m", 2))


def test_a_list_of_generators_draws_each_item_on_its_own():
    batch = randn((3, 2, 4, 4), generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    for k, s in enumerate((7, 8, 9)):
        assert torch.equal(batch[k], torch.randn((1, 2, 4, 4), generator=torch.Generator().manual_seed(s))[0])
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn((3, 1), generator=[torch.Generator(), torch.Generator()])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_sees_every_step(name):
    steps: list[dict] = []
    x = torch.randn(1, 3, 4, 4)
    SAMPLERS[name](gaussian_denoiser, x, NoiseSchedule().inference_grid(6), callback=steps.append, disable=True)
    assert [s["i"] for s in steps] == list(range(6))
    levels = [s["noise_level"] for s in steps]
    assert levels == sorted(levels) and levels[0] < 0.01 and levels[-1] > 0.999
    assert all(s["x"].shape == s["x0"].shape == x.shape for s in steps)


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown sampler 'euler'; expected one of ancestral, ddim, dpmpp_2m"):
        get_sampler("euler")
    assert get_sampler("ddim") is sample_ddim


def test_a_new_sampler_with_its_own_option_is_one_function_and_one_registry_line(monkeypatch, tiny_upscaler):
    """Its options are its keyword arguments beyond the common ones; recipes check and carry them."""
    from sr3infer.models.config import Recipe

    seen = []

    def sample_toy(denoise, x, gammas, *, s_noise: float = 1.0, clip_denoised=True, generator=None, callback=None,
                   disable=False):
        seen.append(s_noise)
        return sample_ddim(denoise, x, gammas, clip_denoised=clip_denoised, generator=generator, disable=disable)

    monkeypatch.setitem(SAMPLERS, "toy", sample_toy)
    assert samplers.sampler_option_defaults("toy") == {"s_noise": 1.0}
    recipe = Recipe(sampler="toy", num_steps=2, options={"s_noise": 0.5})
    assert recipe.override(s_noise=0.25).options == {"s_noise": 0.25}
    with pytest.raises(ValueError, match="The ddim sampler takes eta; got s_noise=0.5.*\\(toy\\)"):
        recipe.override(sampler="ddim", s_noise=0.5)
    with pytest.raises(ValueError, match="'options.s_noise' must be a number"):
        Recipe(sampler="toy", options={"s_noise": "loud"})
    tiny_upscaler.upscale(torch.zeros(3, 8, 8), recipe=recipe, seed=0, progress=False)
    assert seen == [0.5]
    # Its option is a keyword of upscale, upscale_tensor and Cascade.run (one value or one per stage), unedited.
    from sr3infer import Cascade

    tiny_upscaler.upscale(torch.zeros(3, 8, 8), sampler="toy", num_steps=2, s_noise=0.75, seed=0, progress=False)
    tiny_upscaler.upscale_tensor(torch.zeros(1, 3, 8, 8), sampler="toy", num_steps=2, s_noise=0.5, progress=False)
    Cascade([tiny_upscaler, tiny_upscaler]).run(torch.zeros(1, 3, 8, 8), sampler="toy", num_steps=2,
                                               s_noise=[0.125, 0.375], seed=0, progress=False)
    assert seen == [0.5, 0.75, 0.5, 0.125, 0.375]
    with pytest.raises(TypeError, match="unexpected keyword argument 's_nosie'"):
        tiny_upscaler.upscale(torch.zeros(3, 8, 8), sampler="toy", s_nosie=0.5, progress=False)


def test_the_step_callback_sees_every_step_and_can_cancel(tiny_upscaler, tmp_path):
    from sr3infer import Cancelled, upscale_files

    seen = []
    tiny_upscaler.upscale(torch.rand(3, 8, 8), num_steps=4, seed=0, progress=False,
                          callback=lambda info: seen.append((info["step"], info["total"], info["x0"].shape)))
    assert [(s, t) for s, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)] and seen[0][2][-1] == 16
    stop_at_two = lambda info: info["step"] < 2  # noqa: E731 - False at step 2 cancels
    with pytest.raises(Cancelled, match="after step 2 of 4"):
        tiny_upscaler.upscale(torch.rand(3, 8, 8), num_steps=4, progress=False, callback=stop_at_two)
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(folder / f"{k}.png")
    with pytest.raises(Cancelled):
        upscale_files(tiny_upscaler, folder, tmp_path / "out", num_steps=4, callback=stop_at_two, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
