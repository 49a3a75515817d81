"""Shared fixtures: tiny random models, the community test vectors, seeded randomness."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sr3infer.config import ModelConfig, SamplingDefaults
from sr3infer.schedule import NoiseSchedule
from sr3infer.unet import UNetConfig
from sr3infer.upscaler import Upscaler
from sr3infer.weights import build_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures" / "janspiry_sr3"  # vendored: the parity tests run in any clone
DATASETS = SHARED / "datasets"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and don't fight other processes for cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_config() -> ModelConfig:
    """8 channels, channel_mults (1, 2), one res block, 16 px output, x2, eps-prediction."""
    return ModelConfig(
        unet=UNetConfig(inner_channel=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                        norm_groups=4, image_size=16),
        schedule=NoiseSchedule(),
        scale=2,
        lowres_size=8,
        sampling=SamplingDefaults(sampler="ddim", num_steps=4),
        task={"untrained": True},
    )


@pytest.fixture
def tiny_upscaler(tiny_config) -> Upscaler:
    torch.manual_seed(0)
    return Upscaler(tiny_config, build_model(tiny_config), device="cpu")


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_upscaler) -> Path:
    return tiny_upscaler.save_pretrained(tmp_path / "tiny-model")


def require(path: Path) -> Path:
    """A vendored fixture must be there (a missing one fails); data from ../shared may be absent (skip)."""
    if not path.exists():
        if path.is_relative_to(FIXTURES):
            pytest.fail(f"test fixture {path} is missing; it ships with the repository (tests/fixtures/)")
        pytest.skip(f"{path} is not available")
    return path
