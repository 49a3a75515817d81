"""Model folders on disk: `config.json` + `model.safetensors` (config also in its metadata) + `README.md`."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import ModelConfig
from .unet import UNet

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME", "save_model_folder", "read_config", "load_weights", "build_model",
           "check_weights_file", "check_finite"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
METADATA_KEY = "sr3infer_config"
MAX_PARAMETERS = 4_000_000_000  # ~16 GB in float32; the largest community SR3 U-Nets have well under 1e9


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model_folder(
    folder: str | Path,
    config: ModelConfig,
    state_dict: dict[str, Tensor],
    *,
    dtype: torch.dtype = torch.float16,
    card: str | None = None,
) -> Path:
    """Write `config.json`, `model.safetensors` (tensors cast to `dtype`) and, if given, the model card."""
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state_dict.items()}
    metadata = {METADATA_KEY: json.dumps(config.to_dict())}
    _atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata=metadata))
    _atomic_write(folder / CONFIG_NAME, lambda p: Path(p).write_text(config.to_json(), encoding="utf-8"))
    if card is not None:
        _atomic_write(folder / CARD_NAME, lambda p: Path(p).write_text(card, encoding="utf-8"))
    return folder


def read_config(weights: str | Path, config_path: str | Path | None = None) -> ModelConfig:
    """The model config from `config_path` if given, else from the safetensors metadata of `weights`."""
    if config_path is not None:
        return ModelConfig.from_json_file(config_path)
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}).") from None
    if METADATA_KEY not in metadata:
        raise ValueError(
            f"{weights} has no {METADATA_KEY!r} metadata and no config.json beside it. "
            "Pass a model folder with config.json, or convert a community checkpoint with `sr3infer convert`."
        )
    return ModelConfig.from_dict(json.loads(metadata[METADATA_KEY]))


def is_community_checkpoint(weights: str | Path) -> bool:
    """True for a safetensors file with `denoise_fn.*` tensors and no sr3infer config: a community SR3 checkpoint."""
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            metadata = handle.metadata() or {}
            return METADATA_KEY not in metadata and any(k.startswith("denoise_fn.") for k in handle.keys())
    except (SafetensorError, OSError):
        return False  # read_config / load_weights say what is wrong with the file


def load_weights(weights: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file (never a pickle) into CPU tensors."""
    try:
        return load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}).") from None


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensor shapes `config` implies, from a U-Net built on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = UNet(**config.unet.to_dict())
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weights_file(config: ModelConfig, weights: str | Path, config_source: str | Path | None = None) -> None:
    """Check the safetensors header of `weights` (names and shapes, no tensor data) against `config` before
    anything is built, so a config that implies a huge model fails at once.

    Raises:
        ValueError: the file is unreadable, the config implies over `MAX_PARAMETERS` parameters, or
            names or shapes differ; the message names the files.
    """
    expected = expected_shapes(config)
    source = f"{config_source}" if config_source is not None else f"the config in {weights}'s metadata"
    count = sum(math.prod(shape) for shape in expected.values())
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{source} describes a U-Net of {count:,} parameters ({count * 4 / 2**30:,.0f} GiB in float32), over the "
            f"{MAX_PARAMETERS:,} an SR3 model can plausibly have; check inner_channel and channel_mults."
        )
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}).") from None
    _check_shapes(expected, found, f"The weights in {weights} do not match the model config ({source})")


def _check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and found[k] != expected[k]]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''} ({len(missing)})")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''} ({len(unexpected)})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} shape mismatches, e.g. {k}: file {found[k]} vs config {expected[k]}")
        raise ValueError(
            f"{what}: " + "; ".join(details)
            + ". Were config.json and model.safetensors taken from the same model and revision?"
        )


def check_finite(state_dict: dict[str, Tensor], weights: str | Path) -> None:
    """Refuse weights holding NaN or Inf, which would turn every output into a black image."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{weights} holds NaN or Inf values in {len(bad)} tensors (e.g. {bad[0]}); "
                         "the file is damaged or the training diverged. Use another copy or checkpoint.")


def cast_model(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move `model` to `device` and `dtype`, keeping the modules it names in `_keep_in_fp32_modules` in float32."""
    model.to(device=device, dtype=dtype)
    for name in getattr(model, "_keep_in_fp32_modules", ()):
        model.get_submodule(name).float()
    return model


def build_model(config: ModelConfig, state_dict: dict[str, Tensor] | None = None) -> UNet:
    """Build the U-Net from `config` and load `state_dict` strictly, in float32, on CPU, in eval mode.

    The shapes are compared (on the meta device) before the model is allocated.
    """
    if state_dict is not None:
        _check_shapes(expected_shapes(config), {k: tuple(v.shape) for k, v in state_dict.items()},
                      "The weights do not match the model config")
    model = UNet(**config.unet.to_dict())
    if state_dict is not None:
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()

