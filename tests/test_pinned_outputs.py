"""The bundled models' outputs for a few seeds and recipes, pinned to 1/255 against stored references.

The references (tests/fixtures/pinned_outputs.npz: per case, every 8th/16th output pixel and the
means of an 8 x 8 grid of blocks, about 1 KB) were computed from examples/face_16.png and examples/photo_64.png before
the pipeline was refactored; regenerate them only for an intended change of results:
`python tests/test_pinned_outputs.py --write`.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer import Cascade, Upscaler

pytestmark = pytest.mark.slow  # the bundled weights

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "fixtures" / "pinned_outputs.npz"
FACE, PHOTO = REPO / "examples" / "face_16.png", REPO / "examples" / "photo_64.png"

# name: (model, input, call, keyword arguments). "upscale" is Upscaler.upscale, "cascade" a one-stage Cascade.
CASES = {
    "face_ddim1_every": ("sr3-face-8x", "face", "upscale",
                         dict(sampler="ddim", num_steps=1, spacing="linear", consistency="every", eta=0.0, seed=0)),
    "face_ancestral4_none": ("sr3-face-8x", "face", "upscale",
                             dict(sampler="ancestral", num_steps=4, spacing="linear", consistency="none", seed=3)),
    "face_ddim3_eta_final": ("sr3-face-8x", "face", "upscale",
                             dict(sampler="ddim", num_steps=3, spacing="quadratic", consistency="final", eta=0.5,
                                  seed=7)),
    "face_dpmpp4_truncated": ("sr3-face-8x", "face", "upscale",
                              dict(sampler="dpmpp_2m", num_steps=4, spacing="linear", consistency="every",
                                   start_noise_level=0.5, seed=1)),
    "face_ensemble2": ("sr3-face-8x", "face", "upscale",
                       dict(sampler="ddim", num_steps=2, spacing="linear", consistency="every", eta=1.0, seed=5,
                            num_samples=2)),
    "face_tiled": ("sr3-face-8x", "photo_crop24", "upscale",
                   dict(sampler="ddim", num_steps=2, spacing="linear", consistency="every", eta=0.0, seed=2)),
    "face_cascade_noise": ("sr3-face-8x", "face", "cascade",
                           dict(sampler="ddim", num_steps=2, noise_level=0.05, seed=2)),
    "natural_ancestral3_every": ("sr3-64-256", "photo", "upscale",
                                 dict(sampler="ancestral", num_steps=3, spacing="quadratic", consistency="every",
                                      seed=0)),
    "natural_ddim2_none": ("sr3-64-256", "photo", "upscale",
                           dict(sampler="ddim", num_steps=2, spacing="linear", consistency="none", eta=0.0, seed=4)),
    "natural_cascade_dpmpp": ("sr3-64-256", "photo", "cascade",
                              dict(sampler="dpmpp_2m", num_steps=2, noise_level=0.02, seed=6)),
}


@lru_cache(maxsize=None)
def _upscaler(name: str) -> Upscaler:
    return Upscaler.from_pretrained(name, device="cpu", torch_dtype="fp32")


def _input(kind: str) -> Image.Image:
    if kind == "face":
        return Image.open(FACE).convert("RGB")
    photo = Image.open(PHOTO).convert("RGB")
    return photo if kind == "photo" else photo.crop((8, 8, 32, 32))


def _run(case: str) -> np.ndarray:
    model, kind, call, kwargs = CASES[case]
    upscaler, image = _upscaler(model), _input(kind)
    if call == "cascade":
        out = Cascade([upscaler]).run([image], progress=False, output_type="pil", **kwargs)[0]
    else:
        out = upscaler.upscale(image, progress=False, **kwargs)
    return np.asarray(out, dtype=np.uint8)


def _summary(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every `step`-th pixel (uint8), step = side / 16, and the means of 8 x 8 blocks (float32; stored as float16, within 0.125/255)."""
    step = image.shape[0] // 16
    h, w, c = image.shape
    blocks = image.astype(np.float32).reshape(8, h // 8, 8, w // 8, c).mean(axis=(1, 3))
    return image[step // 2 :: step, step // 2 :: step].copy(), blocks


@pytest.mark.parametrize("case", sorted(CASES))
def test_bundled_output_is_pinned(case):
    reference = np.load(REFERENCE)
    pixels, blocks = _summary(_run(case))
    expected_pixels, expected_blocks = reference[f"{case}/pixels"], reference[f"{case}/blocks"].astype(np.float32)
    assert pixels.shape == expected_pixels.shape
    worst = np.abs(pixels.astype(np.int16) - expected_pixels.astype(np.int16)).max()
    assert worst <= 1, f"{case}: a pixel moved by {worst}/255"
    assert np.abs(blocks - expected_blocks).max() <= 1.0, f"{case}: a block mean moved by more than 1/255"


def _write() -> None:
    torch.set_num_threads(1)
    arrays = {}
    for case in sorted(CASES):
        pixels, blocks = _summary(_run(case))
        arrays[f"{case}/pixels"], arrays[f"{case}/blocks"] = pixels, blocks.astype(np.float16)
        print(case, pixels.shape, float(blocks.mean()))
    np.savez_compressed(REFERENCE, **arrays)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_pinned_outputs.py --write")
    _write()
