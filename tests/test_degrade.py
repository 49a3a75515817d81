"""The real-world degradation pipeline: seeded, on the 8-bit grid, each stage doing what it says, checked configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr3infer.quality.metrics import psnr
from sr3infer.images.resample import bicubic, quantize
from sr3infer.train.degrade import VAL_KINDS, Degradation, Pass, degrade, jpeg, random_kernel, val_kind


@pytest.fixture
def images() -> torch.Tensor:
    """Smooth random images (a blurred field) so that downsampling and JPEG behave as on photos."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    return bicubic(x, 64).clamp(-1, 1)


def test_same_seed_same_inputs_and_the_8_bit_grid(images):
    a = degrade(images, 4, np.random.default_rng(5))
    b = degrade(images, 4, np.random.default_rng(5))
    c = degrade(images, 4, np.random.default_rng(6))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, quantize(a))


def test_clean_share_is_the_papers_input(images):
    clean = degrade(images, 4, np.random.default_rng(0), Degradation(clean_prob=1))
    assert torch.equal(clean, quantize(bicubic(images, 16)))


@pytest.mark.parametrize("kind", list(VAL_KINDS))
def test_every_val_kind_is_fixed_and_differs_from_the_clean_input(images, kind):
    lowres = val_kind(images, 4, kind)
    assert torch.equal(lowres, val_kind(images, 4, kind))
    clean = quantize(bicubic(images, 16))
    assert (lowres - clean).abs().mean() > 1 / 255


def test_jpeg_round_trip_loses_detail_by_quality():
    x = torch.rand(1, 3, 32, 32)
    low, high = jpeg(x, 30), jpeg(x, 95)
    assert (low - x).abs().mean() > (high - x).abs().mean() > 0


def test_kernels_are_normalised_odd_and_bounded():
    rng = np.random.default_rng(1)
    for _ in range(50):
        k = random_kernel(rng, Pass(blur_sigma=(0.2, 3.0)))
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
        assert abs(float(k.sum()) - 1) < 1e-5 and float(k.min()) >= 0


def test_heavier_noise_scores_lower(images):
    def noisy(sigma: float) -> float:
        spec = Degradation(clean_prob=0, second_prob=0, final_jpeg_prob=0, final_mode_weights=(0, 0, 1, 0),
                           first=Pass(blur_prob=0, jpeg_prob=0, noise_prob=1, gaussian_share=1,
                                      gaussian_sigma=(sigma, sigma), resize_scale=(0.25, 0.25)))
        return float(psnr(degrade(images, 4, np.random.default_rng(0), spec), bicubic(images, 16)).mean())
    assert noisy(2) > noisy(20)


@pytest.mark.parametrize("block, message", [
    ({"clean_prob": 2}, "clean_prob must be a probability"),
    ({"first": {"jpeg_quality": [90, 30]}}, "first.jpeg_quality must be"),
    ({"first": {"colour": 1}}, r"degradation.first: unknown key\(s\) \['colour'\]"),
    ({"sharpen": 1}, r"unknown key\(s\) \['sharpen'\]"),
])
def test_config_blocks_are_checked(block, message):
    with pytest.raises(ValueError, match=message):
        Degradation.from_dict(block)


def test_config_block_overrides_only_what_it_names():
    spec = Degradation.from_dict({"second_prob": 0.1, "first": {"noise_prob": 0.0}})
    assert spec.second_prob == 0.1 and spec.first.noise_prob == 0 and spec.first.jpeg_prob == Pass().jpeg_prob
