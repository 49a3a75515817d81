"""Device and dtype "auto": CUDA, then MPS, then CPU; fp16 on CUDA/MPS, bf16 on a CPU with
native bf16 once switched on, else fp32. MPS and CUDA are faked (neither exists on this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sr3infer.runtime import devices
from sr3infer.runtime.devices import auto_dtype, cpu_has_native_bf16, default_device, resolve_device, resolve_dtype


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv(devices.CPU_BF16_ENV, raising=False)


def test_auto_picks_cuda_then_mps_then_cpu(no_gpu, monkeypatch):
    assert default_device() == resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_asking_for_a_missing_accelerator_says_so(no_gpu):
    with pytest.raises(RuntimeError, match="CUDA was requested"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="MPS was requested.*use device='cpu'"):
        resolve_device("mps")


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return path


def test_native_bf16_is_read_from_the_cpu_flags_and_can_be_overridden(tmp_path, no_gpu, monkeypatch):
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "amx_bf16 amx_tile"))
    assert not cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f"))
    assert not cpu_has_native_bf16(tmp_path / "missing")
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert cpu_has_native_bf16(tmp_path / "arm")
    monkeypatch.setenv(devices.CPU_BF16_ENV, "0")
    assert not cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512_bf16"))
    monkeypatch.setenv(devices.CPU_BF16_ENV, "1")
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, ""))


@pytest.mark.parametrize("value, bf16", [("false", False), ("No", False), ("OFF", False), (" 0 ", False),
                                         ("true", True), ("yes", True), ("On", True), ("1", True)])
def test_the_bf16_switch_reads_the_usual_words_for_true_and_false(tmp_path, no_gpu, monkeypatch, value, bf16):
    monkeypatch.setenv(devices.CPU_BF16_ENV, value)
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512_bf16" if not bf16 else "")) is bf16
    assert auto_dtype(torch.device("cpu")) == (torch.bfloat16 if bf16 else torch.float32)


@pytest.mark.parametrize("value", ["maybe", "2", "fasle", "bf16"])
def test_an_unknown_bf16_switch_value_is_an_error_naming_the_variable(tmp_path, no_gpu, monkeypatch, value):
    monkeypatch.setenv(devices.CPU_BF16_ENV, value)
    with pytest.raises(ValueError, match=f"SR3INFER_CPU_BF16 must be one of 1, true, yes, on .* or 0, false, no, off "
                                         f".*got '{value}'; set one of them, or unset it"):
        resolve_dtype("auto", torch.device("cpu"))


def test_auto_dtype_per_device(no_gpu, monkeypatch):
    monkeypatch.setattr(devices, "_probe", lambda device, dtype: None)  # MPS runs every kernel in fp16
    assert auto_dtype(torch.device("cuda")) == torch.float16
    assert auto_dtype(torch.device("mps")) == torch.float16
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(devices, "CPU_BF16_DEFAULT", False)
    assert auto_dtype(torch.device("cpu")) == torch.float32  # not switched on yet: fp32 stays the CPU default
    monkeypatch.setattr(devices, "CPU_BF16_DEFAULT", True)
    assert auto_dtype(torch.device("cpu")) == resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert auto_dtype(torch.device("cpu")) == torch.float32  # emulated bf16 is slower than fp32
    assert resolve_dtype("fp32", torch.device("cpu")) == torch.float32  # --dtype fp32 always forces fp32


def test_mps_falls_back_to_fp32_with_a_warning_where_a_kernel_is_missing(no_gpu, monkeypatch):
    def probe(device, dtype):
        raise RuntimeError("MPS does not support this op in Half")

    monkeypatch.setattr(devices, "_probe", probe)
    with pytest.warns(UserWarning, match="MPS cannot run the model in torch.float16.*using float32"):
        assert auto_dtype(torch.device("mps")) == torch.float32
    with pytest.warns(UserWarning, match="PYTORCH_ENABLE_MPS_FALLBACK=1"):
        assert resolve_dtype("bf16", torch.device("mps")) == torch.float32
    assert resolve_dtype("fp32", torch.device("mps")) == torch.float32


def test_the_probe_runs_the_unets_kernels_on_the_cpu():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        devices._probe("cpu", dtype)


def test_dtype_names_are_checked(no_gpu):
    with pytest.raises(ValueError, match="Unknown dtype 'fp64'; expected fp16, bf16, fp32 or auto"):
        resolve_dtype("fp64", torch.device("cpu"))
    with pytest.raises(ValueError, match="Unsupported torch_dtype torch.float64"):
        resolve_dtype(torch.float64, torch.device("cpu"))


def test_an_upscaler_made_with_auto_lands_on_the_faked_mps(no_gpu, monkeypatch, tiny_config):
    """The Upscaler asks devices.py; the move itself is faked (there is no MPS to move to)."""
    from sr3infer.upscaler import Upscaler
    from sr3infer.models.weights import build_model

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(devices, "_probe", lambda device, dtype: None)
    moved = []
    monkeypatch.setattr("sr3infer.upscaler.cast_model", lambda model, device, dtype: moved.append((device, dtype)))
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: self)
    upscaler = Upscaler(tiny_config, build_model(tiny_config), device="auto")
    assert moved == [(torch.device("mps"), torch.float16)]
    assert (upscaler.device, upscaler.dtype) == (torch.device("mps"), torch.float16)


@pytest.mark.slow
def test_the_bf16_default_on_a_native_bf16_cpu_stays_within_2_levels_of_fp32(monkeypatch):
    """The bundled face model under dtype "auto" with native bf16 (forced here, so it runs on any CPU; emulated
    bf16 is only slower): bf16, and the realism output within 2/255 of float32 (the most bf16_cpu.json measured)."""
    import numpy as np
    from PIL import Image

    from sr3infer import Upscaler

    monkeypatch.setattr(devices, "CPU_BF16_DEFAULT", True)
    monkeypatch.setenv(devices.CPU_BF16_ENV, "1")
    face = Image.open(Path(__file__).resolve().parents[1] / "examples" / "face_16.png")
    auto = Upscaler.from_pretrained("sr3-face-8x", device="cpu")
    assert auto.dtype == torch.bfloat16
    fp32 = Upscaler.from_pretrained("sr3-face-8x", device="cpu", torch_dtype="fp32")
    a = np.asarray(auto.upscale(face, seed=0, progress=False), dtype=np.int16)
    b = np.asarray(fp32.upscale(face, seed=0, progress=False), dtype=np.int16)
    assert np.abs(a - b).max() <= 2
    monkeypatch.setenv(devices.CPU_BF16_ENV, "0")
    assert Upscaler.from_pretrained("sr3-face-8x", device="cpu").dtype == torch.float32
