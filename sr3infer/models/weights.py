"""Model folders on disk: `config.json` (the one source of truth), `model.safetensors`, `README.md`;
the weights' metadata holds a format marker, not a config copy (older files' copies still load)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from .registry import expected_shapes as architecture_shapes
from .registry import get_architecture
from ..runtime.validate import MAX_PARAMETERS
from .config import ModelConfig
from ..errors import parse_json
from ..images.io import write_atomically

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME", "save_model_folder", "existing_model_files", "read_config",
           "load_weights", "build_model", "check_weights_file", "check_state_dict", "check_dtypes", "check_finite",
           "weights_metadata", "read_metadata", "embedded_config", "MAX_PARAMETERS"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
METADATA_KEY = "sr3infer_config"  # legacy: the config in the metadata (read, never written)
WEIGHTS_FORMAT_KEY = "sr3infer_weights"
WEIGHTS_FORMAT = "1"
LOADABLE_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
"""Tensor dtypes a weights file may hold, all read as float32 (integers and float8 are refused)."""


def existing_model_files(folder: str | Path, *, card: bool = True) -> list[str]:
    """The files `save_model_folder` would write that `folder` already has (even dangling links)."""
    names = [WEIGHTS_NAME, CONFIG_NAME] + ([CARD_NAME] if card else [])
    return [name for name in names if os.path.lexists(Path(folder) / name)]


def save_model_folder(
    folder: str | Path,
    config: ModelConfig,
    state_dict: dict[str, Tensor],
    *,
    dtype: torch.dtype = torch.float16,
    card: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write `config.json`, `model.safetensors` (cast to `dtype`) and the model card if given;
    without `overwrite`, FileExistsError names every such file `folder` already has."""
    folder = Path(folder)
    taken = [] if overwrite else existing_model_files(folder, card=card is not None)
    if taken:
        raise FileExistsError(f"{str(folder)!r} already holds {', '.join(taken)}; pass --overwrite (overwrite=True) "
                              "to replace them, or write to a new folder.")
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state_dict.items()}
    # Every byte ready before writing; each file whole or not at all (never through a symlink).
    weights, text = serialize_weights(tensors), config.to_json().encode("utf-8")
    write_atomically(folder / WEIGHTS_NAME, lambda handle: handle.write(weights), overwrite=overwrite)
    write_atomically(folder / CONFIG_NAME, lambda handle: handle.write(text), overwrite=overwrite)
    if card is not None:
        write_atomically(folder / CARD_NAME, lambda handle: handle.write(card.encode("utf-8")), overwrite=overwrite)
    return folder


def serialize_weights(tensors: dict[str, Tensor]) -> bytes:
    """The safetensors bytes of `tensors`, metadata keys sorted: the same sha256 every time."""
    raw = save(tensors, metadata=weights_metadata())
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    canonical = json.dumps({"__metadata__": header.pop("__metadata__"), **header}, separators=(",", ":")).encode()
    if len(canonical) > length:  # never expected; keep safetensors' bytes
        return raw
    return raw[:8] + canonical.ljust(length, b" ") + raw[8 + length :]


def weights_metadata() -> dict[str, str]:
    return {"format": "pt", WEIGHTS_FORMAT_KEY: WEIGHTS_FORMAT}


def read_metadata(weights: str | Path) -> dict[str, str]:
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}).") from None


def read_config(weights: str | Path, config_path: str | Path | None = None) -> ModelConfig:
    """The config: `config_path`, else the config.json beside `weights`, else a metadata copy."""
    if config_path is None and (Path(weights).parent / CONFIG_NAME).is_file():
        config_path = Path(weights).parent / CONFIG_NAME
    if config_path is not None:
        return ModelConfig.from_json_file(config_path)
    embedded = embedded_config(weights)
    if embedded is None:
        raise ValueError(
            f"{weights} has no {CONFIG_NAME} beside it (and no legacy {METADATA_KEY!r} metadata). "
            f"Put the model's {CONFIG_NAME} next to it, pass the model folder, or convert a community checkpoint "
            "with `sr3infer convert`."
        )
    return embedded


def embedded_config(weights: str | Path) -> ModelConfig | None:
    """The legacy copy of the config in the metadata of `weights`, or None."""
    embedded = read_metadata(weights).get(METADATA_KEY)
    if embedded is None:
        return None
    source = f"{weights} (metadata {METADATA_KEY!r})"
    data = parse_json(embedded, source, "; the file is damaged. Re-save the model")
    return ModelConfig.from_dict(data, source=source)


def is_community_checkpoint(weights: str | Path) -> bool:
    """True for a safetensors file with `denoise_fn.*` tensors and no sr3infer marker."""
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            metadata = handle.metadata() or {}
            ours = METADATA_KEY in metadata or WEIGHTS_FORMAT_KEY in metadata
            return not ours and any(k.startswith("denoise_fn.") for k in handle.keys())
    except (SafetensorError, OSError):
        return False  # read_config / load_weights say what is wrong with the file


def load_weights(weights: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file (never a pickle) into CPU tensors."""
    try:
        return load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}).") from None


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensor shapes `config` implies, from its network built on the meta device."""
    return architecture_shapes(get_architecture(config.architecture), config.network)


def check_weights_file(config: ModelConfig, weights: str | Path, config_source: str | Path | None = None) -> None:
    """Check the header of `weights` (names, shapes, dtypes) against `config` before building:
    ValueError for an unreadable file, an oversized config, a bad dtype or a mismatch."""
    expected = expected_shapes(config)
    source = f"{config_source}" if config_source is not None else f"the config in {weights}'s metadata"
    count = sum(math.prod(shape) for shape in expected.values())
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{source} describes a network of {count:,} parameters ({count * 4 / 2**30:,.0f} GiB in float32), over "
            f"the {MAX_PARAMETERS:,} an SR3 model can plausibly have; check inner_channel and channel_mults."
        )
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            slices = {k: handle.get_slice(k) for k in handle.keys()}
            found = {k: tuple(v.get_shape()) for k, v in slices.items()}
            dtypes = {k: v.get_dtype() for k, v in slices.items()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}).") from None
    _check_shapes(expected, found, f"The weights in {weights} do not match the model config ({source})")
    check_dtypes(dtypes, weights)


def check_dtypes(dtypes: dict[str, str], weights: str | Path) -> None:
    """Refuse dtypes not in `LOADABLE_DTYPES`: integer weights would load but give garbage."""
    bad = {k: v for k, v in dtypes.items() if v not in LOADABLE_DTYPES}
    if bad:
        name, dtype = next(iter(bad.items()))
        kinds = ", ".join(sorted(set(bad.values())))
        raise ValueError(
            f"{weights} holds {len(bad)} tensors of dtype {kinds} (e.g. {name}: {dtype}); a model's weights must be "
            f"floating point: {', '.join(LOADABLE_DTYPES.values())}. Export the weights in float32 or float16."
        )


SAME_MODEL = "Were config.json and model.safetensors taken from the same model and revision?"


def _check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], what: str,
                  advice: str = SAME_MODEL) -> None:
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
        raise ValueError(f"{what}: " + "; ".join(details) + ". " + advice)


def check_finite(state_dict: dict[str, Tensor], weights: str | Path) -> None:
    """Refuse weights holding NaN or Inf, which would make every output black."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{weights} holds NaN or Inf values in {len(bad)} tensors (e.g. {bad[0]}); "
                         "the file is damaged or the training diverged. Use another copy or checkpoint.")


_SAFETENSORS_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64"}


def cast_model(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move `model` to `device` and `dtype`, keeping its `_keep_in_fp32_modules` in float32."""
    model.to(device=device, dtype=dtype)
    for name in getattr(model, "_keep_in_fp32_modules", ()):
        model.get_submodule(name).float()
    return model


def check_state_dict(config: ModelConfig, state_dict: dict[str, Tensor], source: str = "The weights",
                     advice: str = SAME_MODEL) -> None:
    """Check `state_dict`'s names, shapes and dtypes against `config`'s network (ValueError)."""
    _check_shapes(expected_shapes(config), {k: tuple(v.shape) for k, v in state_dict.items()},
                  f"{source} do not match the model config", advice)
    check_dtypes({k: _SAFETENSORS_NAMES.get(v.dtype, str(v.dtype)) for k, v in state_dict.items()}, source)


def build_model(config: ModelConfig, state_dict: dict[str, Tensor] | None = None) -> nn.Module:
    """Build `config`'s network and load `state_dict` strictly in float32, on CPU, in eval mode."""
    if state_dict is not None:
        check_state_dict(config, state_dict)
    model = get_architecture(config.architecture).build(config.network)
    if state_dict is not None:
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()

