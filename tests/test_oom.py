"""Out-of-memory fallback: half the tile down to the minimum, then batch size 1, one warning line;
only then an error with the hint. A U-Net that raises the device's OOM error type above a size stands in for a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.cli import main
from sr3infer.runtime.oom import fallback_steps, is_out_of_memory, min_tile
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model

from conftest import REPO

CPU_ALLOCATOR_ERROR = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                       "tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)")  # torch 2.x, CPU


class Limited:
    """The U-Net call of an Upscaler, raising `error` when one call holds more than `max_pixels` input pixels."""

    def __init__(self, upscaler: Upscaler, max_pixels: float, error: type[BaseException] = torch.OutOfMemoryError):
        self.inner, self.max_pixels, self.error = upscaler.fast_path, max_pixels, error
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, inputs, noise_level):
        self.calls.append(tuple(inputs.shape))
        if inputs.shape[0] * inputs.shape[-2] * inputs.shape[-1] > self.max_pixels:
            raise self.error("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner(inputs, noise_level)


@pytest.fixture
def x2(tiny_config) -> Upscaler:
    """The tiny x2 model at 16 px trained output: minimum tile 8."""
    config = tiny_config.replace(task={})
    torch.manual_seed(0)
    return Upscaler(config, build_model(config), device="cpu")


def test_steps_halve_the_tile_to_the_minimum_then_batch_1():
    assert min_tile(16, 2) == 8 and min_tile(128, 8) == 64 and min_tile(256, 4) == 128
    assert fallback_steps((32, 32), None, 4, out_size=16, scale=2) == [(16, 4), (8, 4), (8, 1)]
    assert fallback_steps((32, 32), 16, 1, out_size=16, scale=2) == [(8, 1)]
    assert fallback_steps((12, 12), None, 4, out_size=16, scale=2) == [(8, 4), (8, 1)]
    assert fallback_steps((6, 6), None, 4, out_size=16, scale=2) == [(0, 1)]  # smaller than a tile: untiled, one by one
    assert fallback_steps((16, 16), 8, 1, out_size=16, scale=2) == []


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("x")) and is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shapes do not match")) and not is_out_of_memory(ValueError("x"))


def test_the_cpu_allocators_error_counts_as_out_of_memory():
    assert is_out_of_memory(RuntimeError(CPU_ALLOCATOR_ERROR))
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**60, dtype=torch.uint8)  # past any address space: the allocator refuses at once
    assert "DefaultCPUAllocator" in str(info.value) and is_out_of_memory(info.value)


def test_a_real_cpu_allocation_failure_falls_back(x2):
    inner = x2.fast_path

    def hungry(inputs, noise_level):  # more than any machine has, for calls over 2 x 16 x 16 pixels
        if inputs.shape[0] * inputs.shape[-2] * inputs.shape[-1] > 2 * 16 * 16:
            torch.empty(2**60, dtype=torch.uint8)
        return inner(inputs, noise_level)

    x2.fast_path = hungry
    with pytest.warns(UserWarning, match=r"Out of memory with 2 image\(s\) of 32x32 px, tile off.*which worked"):
        assert x2.upscale(torch.rand(2, 3, 16, 16), seed=0, progress=False, tile_size=0).shape == (2, 3, 32, 32)


UNDER_AN_ADDRESS_SPACE_LIMIT = r"""
import re, resource, sys, warnings
import torch
from sr3infer.upscaler import Upscaler

torch.set_num_threads(1)
upscaler = Upscaler.from_pretrained(sys.argv[1], device="cpu")
inner = upscaler.fast_path

def fast_path(inputs, noise_level):  # working memory that grows with a U-Net call's pixels: 64 KiB each, touched
    torch.ones(inputs.shape[0] * inputs.shape[-2] * inputs.shape[-1] << 16, dtype=torch.uint8)
    return inner(inputs, noise_level)

upscaler.fast_path = fast_path
size = int(re.search(r"VmSize:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) << 10
resource.setrlimit(resource.RLIMIT_AS, (size + (128 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    out = upscaler.upscale(torch.rand(1, 3, 32, 32), seed=0, progress=False, tile_size=0, num_steps=1)  # 256 MiB
print(tuple(out.shape), [str(w.message) for w in record if "Out of memory" in str(w.message)])
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_an_allocation_refused_under_an_address_space_limit_falls_back(tiny_model_dir):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", UNDER_AN_ADDRESS_SPACE_LIMIT, str(tiny_model_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("(1, 3, 64, 64) ['Out of memory with 1 image(s) of 64x64 px, tile off"), proc.stdout
    assert time.monotonic() - start < 30


def test_a_smaller_tile_is_tried_and_the_result_is_that_run(x2):
    images = torch.rand(2, 3, 16, 16)  # 32x32 outputs: untiled one U-Net call holds 2 x 32 x 32 pixels
    limited = Limited(x2, max_pixels=2 * 16 * 16)  # fits two 16 px tiles at a time
    x2.fast_path = limited
    with pytest.warns(UserWarning) as record:
        out = x2.upscale(images, seed=5, progress=False, tile_size=0, batch_size=2)
    oom = [w for w in record if "Out of memory" in str(w.message)]
    assert len(oom) == 1 and "tile 16, batch size 2" in str(oom[0].message)
    x2.fast_path = limited.inner
    direct = x2.upscale(images, seed=5, progress=False, tile_size=16, batch_size=2)
    torch.testing.assert_close(out, direct, atol=1e-6, rtol=0)  # the same noise: generators rewound


def test_batch_size_1_comes_after_the_minimum_tile(x2):
    images = torch.rand(2, 3, 16, 16)
    limited = Limited(x2, max_pixels=8 * 8)  # only one minimum (8 px) tile per call fits
    x2.fast_path = limited
    with pytest.warns(UserWarning, match="tile 8, batch size 1"):
        out = x2.upscale(images, seed=5, progress=False, batch_size=2)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    assert max(shape[0] for shape in limited.calls[-5:]) == 1


def test_cpu_memory_error_falls_back_too(x2):
    x2.fast_path = Limited(x2, max_pixels=2 * 16 * 16, error=MemoryError)
    with pytest.warns(UserWarning, match="Out of memory"):
        assert x2.upscale(torch.rand(2, 3, 16, 16), seed=0, progress=False, tile_size=0).shape == (2, 3, 32, 32)


def test_when_nothing_fits_it_fails_with_the_hint_and_the_error_type(x2):
    x2.fast_path = Limited(x2, max_pixels=10)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(torch.OutOfMemoryError, match="still with tile 8, batch size 1.*smaller input"):
            x2.upscale(torch.rand(2, 3, 16, 16), seed=0, progress=False)
    assert not [w for w in record if "Out of memory" in str(w.message)]  # no success line when nothing succeeded


def test_other_errors_are_not_retried(x2):
    calls = []

    def broken(inputs, noise_level):
        calls.append(tuple(inputs.shape))
        raise RuntimeError("expected scalar type Float but found Half")

    x2.fast_path = broken
    with pytest.raises(RuntimeError, match="expected scalar type"):
        x2.upscale(torch.rand(1, 3, 8, 8), seed=0, progress=False)
    assert len(calls) == 1


def test_cli_says_out_of_memory_with_the_hint(tmp_path, x2, capsys, monkeypatch):
    folder = x2.save_pretrained(tmp_path / "model")
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(src)
    original = Upscaler.from_pretrained

    def load(*args, **kwargs):
        up = original(*args, **kwargs)
        up.fast_path = Limited(up, max_pixels=10)
        return up

    monkeypatch.setattr(Upscaler, "from_pretrained", load)
    assert main([str(src), "-o", str(tmp_path / "out.png"), "--model", str(folder), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Out of memory" in err and "still with tile 8, batch size 1" in err and "smaller input" in err
    assert "try --batch-size 1" not in err and "Traceback" not in err  # no advice to do what was already tried
    assert not (tmp_path / "out.png").exists()
