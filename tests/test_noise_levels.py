"""Training noise-level draws: SR3's uniform draw, and the log-normal draw centred on the target's spread."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from sr3infer.sampling.schedule import NoiseSchedule
from sr3infer.train.loop import TrainConfig, measure_sigma_data, setup
from sr3infer.train.noise_levels import EDM_LOG_MEAN, NoiseLevelSampler

from test_train import TINY_MODEL, _config, face_folder  # noqa: F401 (face_folder is a fixture)

SCHEDULE = NoiseSchedule.from_dict({"kind": "linear", "num_train_timesteps": 2000, "beta_start": 1e-6, "beta_end": 1e-2})


def _sigma_over_data(levels: torch.Tensor, sigma_data: float) -> torch.Tensor:
    gamma = levels.double() ** 2
    return ((1 - gamma) / gamma).sqrt() / sigma_data


def test_sr3_draw_is_the_schedules_own():
    a = NoiseLevelSampler().sample(SCHEDULE, 64, generator=torch.Generator().manual_seed(3))
    b = SCHEDULE.sample_training_noise_levels(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_lognormal_draw_is_centred_on_sigma_data_and_stays_in_the_schedule():
    """ln(sigma / sigma_data) has EDM's mean and spread; every level lies in the schedule's range."""
    sampler = NoiseLevelSampler("lognormal", sigma_data=0.1)
    levels = sampler.sample(SCHEDULE, 20_000, generator=torch.Generator().manual_seed(0))
    assert levels.dtype == torch.float32 and levels.shape == (20_000,)
    assert float(levels.min()) >= float(SCHEDULE.noise_levels[-1]) - 1e-7 and float(levels.max()) < 1.0
    log_ratio = _sigma_over_data(levels, 0.1).log()
    assert abs(float(log_ratio.median()) - EDM_LOG_MEAN) < 0.05
    assert abs(float(log_ratio.std()) - 1.2) < 0.05


def test_lognormal_puts_far_more_draws_on_the_clean_end_than_sr3():
    """With a residual's sigma_data ~0.1, SR3 draws sigma < sigma_data (t < ~60 of 2000) a few % of the time."""
    generator = torch.Generator().manual_seed(1)
    sr3 = _sigma_over_data(NoiseLevelSampler().sample(SCHEDULE, 20_000, generator=generator), 0.1)
    mixed = NoiseLevelSampler("lognormal", sigma_data=0.1, uniform_fraction=0.25)
    ours = _sigma_over_data(mixed.sample(SCHEDULE, 20_000, generator=generator), 0.1)
    assert float((sr3 < 1).double().mean()) < 0.05
    assert float((ours < 1).double().mean()) > 0.5
    # the uniform quarter keeps the noisiest levels (sigma > 30 sigma_data, ~half of SR3's draws) in training
    noisiest = float((sr3 > 30).double().mean())
    assert noisiest > 0.4 and abs(float((ours > 30).double().mean()) - 0.25 * noisiest) < 0.02


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="Unknown noise sampling 'edm'"):
        NoiseLevelSampler("edm")
    with pytest.raises(ValueError, match="sigma_data > 0"):
        NoiseLevelSampler("lognormal", sigma_data=0.0)


def test_training_config_checks_the_new_keys(tmp_path):
    base = {"name": "x", "data_kind": "faces", "data_root": ".", "model": TINY_MODEL}
    for key, value, message in (("noise_sampling", "edm", "'noise_sampling' must be one of 'sr3', 'lognormal'"),
                                ("noise_uniform_fraction", 2, "'noise_uniform_fraction' must be a number from 0 to 1"),
                                ("sigma_data", -1, "'sigma_data' must be a number of at least 0"),
                                ("noise_log_mean", "low", "'noise_log_mean' must be a number, got 'low'")):
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps({**base, key: value}))
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_json_file(path)


def test_sigma_data_is_measured_from_the_training_residual(tmp_path, face_folder):
    run = setup(_config(tmp_path, face_folder, noise_sampling="lognormal"))
    measured = measure_sigma_data(run.data, run.model_config, random.Random(7919))
    assert 0 < measured < 1 and math.isclose(run.noise_sampler.sigma_data, measured, rel_tol=0.2)
    assert run.noise_sampler.kind == "lognormal"
    fixed = setup(_config(tmp_path, face_folder, noise_sampling="lognormal", sigma_data=0.3))
    assert fixed.noise_sampler.sigma_data == 0.3
    assert setup(_config(tmp_path, face_folder)).noise_sampler == NoiseLevelSampler()

