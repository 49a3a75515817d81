"""Model folders on disk: `config.json` + `model.safetensors` (config also in its metadata) + `README.md`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import ModelConfig
from .unet import UNet

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME", "save_model_folder", "read_config", "load_weights", "build_model"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
METADATA_KEY = "sr3infer_config"


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


def build_model(config: ModelConfig, state_dict: dict[str, Tensor] | None = None) -> UNet:
    """Build the U-Net from `config` and load `state_dict` strictly, in float32, on CPU, in eval mode."""
    model = UNet(**config.unet.to_dict())
    if state_dict is not None:
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or wrong:
            details = []
            if missing:
                details.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''} ({len(missing)})")
            if unexpected:
                details.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''} ({len(unexpected)})")
            if wrong:
                k = wrong[0]
                details.append(
                    f"{len(wrong)} shape mismatches, e.g. {k}: file {tuple(state_dict[k].shape)} vs config {tuple(expected[k].shape)}"
                )
            raise ValueError(
                "The weights do not match the model config: " + "; ".join(details)
                + ". Were config.json and model.safetensors taken from the same model and revision?"
            )
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
