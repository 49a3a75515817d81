"""Which device and dtype a model runs on when the caller says "auto" (or nothing).

Device: CUDA, then Apple MPS, then the CPU. Dtype: float16 on CUDA and MPS; on the CPU bfloat16
where it has native bf16 arithmetic and `CPU_BF16_DEFAULT` is on, else float32. The noise embedding
and norms stay float32; on MPS a precision with missing kernels falls back to float32 (warned).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["CPU_BF16_DEFAULT", "CPU_BF16_ENV", "DTYPES", "default_device", "resolve_device", "resolve_dtype",
           "auto_dtype", "cpu_has_native_bf16", "cpu_bf16_override"]

CPU_BF16_DEFAULT = True
"""Whether dtype "auto" picks bfloat16 on a CPU with native bf16. On since benchmarks/bf16_cpu.py measured, on all val
images of both bundled models (benchmarks/results/bf16_cpu.json), PSNR within 0.002 dB of float32, KID within its
standard error and at most 2/255 of pixel difference, 2-4x faster (bf16_cpu_speed_alternating.json)."""

CPU_BF16_ENV = "SR3INFER_CPU_BF16"
"""Set to 1 (true, yes, on) to have "auto" pick bfloat16 on the CPU (whatever the detection says), 0 (false, no, off)
to keep float32; unset or empty, the detection decides. Any other value is an error."""

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 /proc/cpuinfo "flags"; Arm "Features" lists "bf16"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def default_device() -> torch.device:
    """CUDA when available, else Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None or "auto": `default_device()`), or RuntimeError."""
    if device is None or device == "auto":
        return default_device()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False; use device='cpu' (or 'auto').")
    if device.type == "mps" and not _mps_available():
        raise RuntimeError("MPS was requested but torch.backends.mps.is_available() is False; use device='cpu' "
                           "(or 'auto').")
    return device


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has native bfloat16: `SR3INFER_CPU_BF16` if set, else /proc/cpuinfo."""
    override = cpu_bf16_override()
    if override is not None:
        return override
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")[:1_000_000]
    except OSError:
        return False
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            return any(flag in value.split() for flag in NATIVE_BF16_FLAGS)
    return False


def cpu_bf16_override() -> bool | None:
    """`SR3INFER_CPU_BF16` as a bool (1/true/yes/on, 0/false/no/off; else ValueError) or None."""
    value = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if not value:
        return None
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{CPU_BF16_ENV} must be one of {', '.join(_TRUE)} (bfloat16 on the CPU) or "
                         f"{', '.join(_FALSE)} (float32), got {os.environ[CPU_BF16_ENV]!r}; set one of them, or unset "
                         "it to let the CPU's flags decide.")
    return value in _TRUE


def auto_dtype(device: torch.device) -> torch.dtype:
    """The dtype "auto" picks on `device` (see the module docstring)."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "mps":
        return _mps_checked(torch.float16)
    if device.type == "cpu":
        if (CPU_BF16_DEFAULT or cpu_bf16_override()) and cpu_has_native_bf16():
            return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """`dtype` (a torch dtype, "fp16"/"bf16"/"fp32", or None/"auto") for a model on `device`;
    ValueError for other names and dtypes."""
    if dtype is None or dtype == "auto":
        return auto_dtype(device)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; expected fp16, bf16, fp32 or auto.")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"Unsupported torch_dtype {dtype}; expected torch.float16, torch.bfloat16 or torch.float32.")
    return _mps_checked(dtype) if device.type == "mps" else dtype


def _mps_checked(dtype: torch.dtype) -> torch.dtype:
    """`dtype` if MPS runs the U-Net's kernels in it, else float32 with a warning."""
    if dtype == torch.float32:
        return dtype
    try:
        _probe("mps", dtype)
    except (RuntimeError, TypeError, NotImplementedError) as err:
        warnings.warn(f"MPS cannot run the model in {dtype} ({str(err).splitlines()[0][:120]}); using float32 instead. "
                      "Setting PYTORCH_ENABLE_MPS_FALLBACK=1 before starting Python runs missing ops on the CPU.",
                      stacklevel=3)
        return torch.float32
    return dtype


def _probe(device: str, dtype: torch.dtype) -> None:
    """Run the U-Net's kinds of kernels on a tiny input in `dtype`, raising where one is missing."""
    x = torch.ones(1, 4, 4, 4, device=device, dtype=dtype)
    conv = torch.ones(4, 4, 3, 3, device=device, dtype=dtype)
    y = F.conv2d(x, conv, padding=1)
    y = F.group_norm(y.float(), 2).to(dtype)
    q = y.flatten(2).transpose(1, 2)[:, None]
    F.scaled_dot_product_attention(q, q, q)
    F.interpolate(y, scale_factor=2.0, mode="nearest").sum().item()
