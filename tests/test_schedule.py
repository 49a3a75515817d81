"""SR3's training schedule against the reference buffers, inference grids, and the training noise-level draw."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sr3infer.sampling.schedule import SPACINGS, NoiseSchedule

from conftest import FIXTURES, require

T = 2000


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(require(FIXTURES / "schedule_2000.safetensors")))


def test_schedule_matches_the_reference(reference):
    schedule = NoiseSchedule()
    assert schedule.betas.dtype == torch.float64 and schedule.betas.shape == (T,)
    assert torch.allclose(schedule.betas, reference["betas_f64"], rtol=1e-14, atol=0)
    assert torch.allclose(schedule.gammas, reference["alphas_cumprod_f64"], rtol=1e-12, atol=0)
    assert torch.allclose(schedule.noise_levels, reference["sqrt_alphas_cumprod_prev"], rtol=1e-12, atol=0)
    # The float32 buffers of a checkpoint are casts of the same float64 values.
    assert torch.equal(schedule.betas.float(), reference["betas"])
    assert torch.equal(schedule.gammas.float(), reference["alphas_cumprod"])
    assert torch.equal(schedule.gammas.sqrt().float(), reference["sqrt_alphas_cumprod"])
    # Values quoted in the fixture README.
    levels = schedule.noise_levels
    assert levels[0] == 1.0
    assert levels[1000 + 1].item() == pytest.approx(0.28526238, abs=1e-8)
    assert levels[200 + 1].item() == pytest.approx(0.95086092, abs=1e-8)
    assert levels[1999 + 1].item() == pytest.approx(0.0066226716, abs=1e-9)


def test_full_inference_grid_is_the_training_grid():
    schedule = NoiseSchedule()
    grid = schedule.inference_grid(T)
    assert grid.dtype == torch.float64 and grid.shape == (T + 1,)
    assert torch.equal(grid[:-1], schedule.gammas.flip(0))
    assert grid[-1] == 1.0


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("num_steps", [1, 2, 3, 10, 50, 80, 250, 1999, 2000])
def test_respaced_grids(spacing, num_steps):
    schedule = NoiseSchedule()
    grid = schedule.inference_grid(num_steps, spacing=spacing)
    assert grid.shape == (num_steps + 1,)
    assert grid[-1] == 1.0
    assert (grid[1:] > grid[:-1]).all(), "noisiest first, strictly increasing to 1.0"
    assert torch.isin(grid[:-1], schedule.gammas).all(), "respacing picks training gammas"
    assert grid[0] == schedule.gammas[-1]  # starts at the noisiest training level
    if num_steps > 1 and spacing != "trailing":  # trailing ends T/num_steps - 1 steps above t = 0
        assert grid[-2] == schedule.gammas[0]  # the last model call is at the cleanest training level


def test_quadratic_spacing_is_denser_at_the_clean_end():
    schedule = NoiseSchedule()
    t_of = {g.item(): t for t, g in enumerate(schedule.gammas)}
    ts = [t_of[g.item()] for g in schedule.inference_grid(20, spacing="quadratic")[:-1]]
    steps = [a - b for a, b in zip(ts, ts[1:])]
    assert steps[-1] < steps[0] / 10


def test_start_noise_level_truncates_the_grid():
    schedule = NoiseSchedule()
    grid = schedule.inference_grid(10, start_noise_level=0.5)
    levels = schedule.gammas.sqrt()
    assert grid[0].sqrt() <= 0.5
    first = int((levels > 0.5).sum())  # the first training index at or below 0.5
    assert grid[0] == schedule.gammas[first]
    assert grid.shape == (11,) and grid[-1] == 1.0
    with pytest.raises(ValueError, match=r"between 1 and \d+ \(at start_noise_level=0.5\)"):
        schedule.inference_grid(first + 2, start_noise_level=0.5)


@pytest.mark.parametrize("num_steps, message", [
    (0, "between 1 and"), (-3, "between 1 and"), (T + 1, "between 1 and"), (2.5, "integer"), (True, "integer"),
])
def test_bad_step_counts(num_steps, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule().inference_grid(num_steps)


def test_bad_grid_options():
    with pytest.raises(ValueError, match="Unknown grid spacing 'log'"):
        NoiseSchedule().inference_grid(10, spacing="log")
    for start in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="start_noise_level"):
            NoiseSchedule().inference_grid(10, start_noise_level=start)
    with pytest.raises(ValueError, match="only 'linear'"):
        NoiseSchedule(kind="cosine")
    with pytest.raises(ValueError, match="beta"):
        NoiseSchedule(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="Unknown schedule config keys \\['n_timestep'\\]"):
        NoiseSchedule.from_dict({"n_timestep": 2000})


def test_training_noise_levels_follow_sr3s_draw():
    """t ~ U{1..T}, then sqrt(gamma) ~ U(levels[t], levels[t-1]): compare the empirical CDF with the exact one."""
    schedule = NoiseSchedule()
    n = 20_000
    draws = schedule.sample_training_noise_levels(n, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (n,) and draws.dtype == torch.float32
    levels = schedule.noise_levels  # decreasing from 1.0
    assert draws.min() >= levels[-1].float() and draws.max() <= 1.0

    low, high = levels[1:], levels[:-1]  # the interval of step t = 1..T

    def exact_cdf(x: torch.Tensor) -> torch.Tensor:
        inside = ((x[:, None] - low) / (high - low)).clamp(0, 1)
        return inside.mean(dim=1)

    points = torch.linspace(0.01, 0.999, 60, dtype=torch.float64)
    empirical = (draws.double()[None, :] <= points[:, None]).double().mean(dim=1)
    # Kolmogorov-Smirnov at ~1e-5 significance: sup |F_n - F| < 2.4 / sqrt(n).
    assert (empirical - exact_cdf(points)).abs().max() < 2.4 / n**0.5
    # Half the steps have t > T/2, i.e. sqrt(gamma) below the level of step T/2.
    assert abs((draws < levels[T // 2].float()).double().mean() - 0.5) < 4 * 0.5 / n**0.5

    again = schedule.sample_training_noise_levels(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
