"""Shared fixtures: tiny random models, the community test vectors, seeded randomness."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.models.config import ModelConfig, Recipe
from sr3infer.sampling.schedule import NoiseSchedule
from sr3infer.models.unet import UNetConfig
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "janspiry_sr3"  # vendored: the parity tests run in any clone
EXAMPLES = REPO / "examples"  # committed pictures; the datasets in ../shared are never needed by the tests

# The CPU default dtype is bf16 where the CPU has it natively (sr3infer.runtime.devices): tests run in float32 on every CPU
# unless SR3INFER_CPU_BF16=1 is exported, so their numbers do not depend on the machine (subprocesses inherit it).
# tests/test_devices.py covers the bf16 default itself.
os.environ.setdefault("SR3INFER_CPU_BF16", "0")


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
        network=UNetConfig(inner_channel=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                        norm_groups=4, image_size=16),
        schedule=NoiseSchedule(),
        scale=2,
        lowres_size=8,
        sampling=Recipe(sampler="ddim", num_steps=4),
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
    """A test input that ships with the repository: a missing one fails, never skips."""
    if not path.exists():
        pytest.fail(f"test input {path} is missing; it ships with the repository (tests/fixtures/, examples/)")
    return path


def example_faces() -> torch.Tensor:
    """The first CelebA validation faces (000900, 000901, ...) as (N, 3, 128, 128) in [-1, 1].

    Read from the "original" column, the last one, of the committed lossless examples/face_grid.png (written by
    examples/face_grid.py: columns of 128 px under a 16 px title row), they are the pixels of `sr3infer eval`'s faces
    protocol for those files, so the face tests need no dataset beside the repository.
    """
    grid = Image.open(require(EXAMPLES / "face_grid.png")).convert("RGB")
    size, title = 128, 16
    if grid.width % size or (grid.height - title) % size or grid.height <= title:
        pytest.fail(f"{EXAMPLES / 'face_grid.png'} is {grid.width}x{grid.height}; expected columns of {size} px "
                    f"under a {title} px title row, as examples/face_grid.py writes it")
    left, rows = grid.width - size, (grid.height - title) // size
    crops = [grid.crop((left, title + r * size, left + size, title + (r + 1) * size)) for r in range(rows)]
    return torch.stack([pixels(crop) for crop in crops])


def pixels(image: Image.Image) -> torch.Tensor:
    """An image file's RGB pixels as (3, H, W) float32 in [-1, 1] (x / 127.5 - 1, as the eval protocols read them)."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


def image_in_mode(mode: str, rng: np.random.Generator, size: int = 8) -> Image.Image:
    """A random `size`x`size` PIL image in `mode` (16-bit gray "I;16" and float "F" made directly, others by convert)."""
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size, size), dtype=np.uint16))
    if mode == "F":
        return Image.fromarray(rng.random((size, size), dtype=np.float32), mode="F")
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)


def cli_case(tmp_path: Path, model: Path, monkeypatch, setup) -> tuple[Path, list[str]]:
    """A bad-input table row set up: tmp_path/work made the current folder, and the argv `setup(work, model,
    monkeypatch)` builds, as strings."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work, [str(a) for a in setup(work, model, monkeypatch)]
