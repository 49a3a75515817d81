"""Community SR3 checkpoints (Janspiry's `*_gen.pth` / safetensors) -> sr3infer config + state dict:
`denoise_fn.<name>` is our `<name>`; the schedule buffers are checked and dropped."""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .config import ModelConfig, Recipe
from ..errors import first_line
from ..sampling.schedule import NoiseSchedule
from .unet import UNetConfig
from .weights import check_state_dict

__all__ = ["SCHEDULE_BUFFERS", "load_community_state_dict", "config_from_state_dict", "config_from_reference",
           "convert_state_dict", "load_community_checkpoint"]

PREFIX = "denoise_fn."
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)
RELEASED_NORM_GROUPS = 32  # define_G's default; sr_sr3_64_512 sets 16 explicitly
MAX_INFLATION = 2
"""A `.pth`'s zip entries may hold at most this many times the file's size (plus `INFLATION_SLACK`): torch.save stores
them uncompressed, so more is a zip bomb (a small file that inflates to GiB when read) or a damaged file."""
INFLATION_SLACK = 16 << 20


def load_community_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a community checkpoint, `.safetensors` directly and `.pth` with `weights_only=True`
    only: the state dict and its metadata. ValueError for a damaged or inflated file, non-tensors,
    or a pickle that would run code (refused, not run)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                state, metadata = {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file ({first_line(err)}).") from None
        return _tensors_only(state, path), metadata
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{str(path)!r} is not a PyTorch zip checkpoint; legacy or raw pickles are not read. "
            "Re-save it with torch.save in a trusted environment."
        )
    _check_inflated_size(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"Refusing to load {str(path)!r}: it is not a plain tensor checkpoint and could run code when "
            f"unpickled ({_weights_only_reason(err)}). Only load checkpoints from sources you trust, and convert them "
            "there."
        ) from None
    except (RuntimeError, ValueError, TypeError, AttributeError, KeyError, IndexError, OSError) as err:
        raise ValueError(f"{str(path)!r} is a damaged or inconsistent PyTorch checkpoint ({first_line(err)}); "
                         "re-save it with torch.save, or get another copy.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}; expected a state dict (names -> tensors).")
    return _tensors_only(state, path), {}


def _check_inflated_size(path: Path) -> None:
    """Refuse a zip whose entries declare over `MAX_INFLATION` times the file's size."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(item.file_size for item in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is a damaged zip ({first_line(err)}); re-save it with torch.save.") from None
    limit = MAX_INFLATION * size + INFLATION_SLACK
    if declared > limit:
        raise ValueError(
            f"Refusing to load {str(path)!r}: its zip entries inflate to {declared:,} bytes, over the {limit:,} a "
            f"{size:,}-byte checkpoint can hold ({MAX_INFLATION}x its size + {INFLATION_SLACK >> 20} MiB; torch.save "
            "stores tensors uncompressed). It is a zip bomb or a damaged file: get the checkpoint from its source again."
        )


def _weights_only_reason(err: BaseException) -> str:
    """Why torch.load(weights_only=True) refused, from torch's message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Weights only load failed"):
        return lines[1]
    return first_line(err)


def _tensors_only(state: dict, path: Path) -> dict[str, Tensor]:
    """`state` if every value is a dense floating-point CPU tensor (else ValueError)."""
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{str(path)!r}: {key!r} is a {type(value).__name__}; expected a tensor (a checkpoint "
                             "holds only tensors). Is it a community SR3 generator checkpoint (*_gen.pth)?")
        if value.layout != torch.strided or value.device.type != "cpu" or not value.is_floating_point():
            kind = f"{value.dtype} {value.layout} tensor on {value.device.type}".replace("torch.", "")
            raise ValueError(f"{str(path)!r}: {key!r} is a {kind}; expected a dense floating-point tensor with its "
                             "data in the file, as torch.save writes a model's weights.")
    return dict(state)


def convert_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], NoiseSchedule | None]:
    """Strip `denoise_fn.`, check and drop the schedule buffers: U-Net tensors and the schedule."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    unet = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not unet:
        raise ValueError(
            "No 'denoise_fn.*' tensors found; expected a community SR3 generator checkpoint (*_gen.pth)."
        )
    other = sorted(k for k in state if not k.startswith(PREFIX) and k not in SCHEDULE_BUFFERS)
    if other:
        raise ValueError(f"Unexpected entries in the checkpoint: {other[:5]}; expected denoise_fn.* and schedule buffers.")
    schedule = None
    if "betas" in state:
        steps = _shape(state, "betas", "(T,): one value per training step", lambda shape: len(shape) == 1)
        if "alphas_cumprod" in state:
            _shape(state, "alphas_cumprod", f"{steps}, as betas", lambda shape: shape == steps)
        betas = state["betas"].double()
        schedule = NoiseSchedule(num_train_timesteps=len(betas), beta_start=float(f"{float(betas[0]):.6g}"),
                                 beta_end=float(f"{float(betas[-1]):.6g}"))  # undo the float32 rounding
        expected = schedule.betas
        if not torch.allclose(betas, expected, rtol=1e-5, atol=1e-9):
            raise ValueError("The checkpoint's betas are not a linear schedule; sr3infer supports SR3's linear schedule only.")
        ac = state.get("alphas_cumprod")
        if ac is not None and not torch.allclose(ac.double(), schedule.gammas, rtol=1e-5, atol=1e-7):
            raise ValueError("The checkpoint's alphas_cumprod do not match its betas; the file looks corrupt.")
    return unet, schedule


CONV = "a conv weight (out, in, kh, kw) without an empty dimension"


def _is_conv(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4


def _shape(tensors: dict[str, Tensor], key: str, expected: str, ok: Callable[[tuple[int, ...]], bool],
           prefix: str = "") -> tuple[int, ...]:
    """The shape of `tensors[key]`, or ValueError naming `prefix` + key and `expected`."""
    if key not in tensors:
        raise ValueError(f"Cannot infer the architecture: missing {prefix + key!r} ({expected}).")
    shape = tuple(tensors[key].shape)
    if 0 in shape or not ok(shape):
        raise ValueError(f"{prefix + key!r} has shape {shape}; expected {expected}.")
    return shape


def config_from_state_dict(
    unet: dict[str, Tensor], *, norm_groups: int = RELEASED_NORM_GROUPS, image_size: int = 128,
    attn_resolutions: tuple[int, ...] | None = None, prefix: str = "",
) -> UNetConfig:
    """Infer the U-Net architecture from tensor shapes (`norm_groups` cannot be inferred)."""
    inner, in_channels = _shape(unet, "downs.0.weight", CONV, _is_conv, prefix)[:2]
    out_channels = _shape(unet, "final_conv.block.3.weight", CONV, _is_conv, prefix)[0]
    blocks: dict[int, int] = {}  # downs index -> out channels for res blocks
    downsamples: list[int] = []
    attn_at: list[int] = []
    for key, value in unet.items():
        m = re.match(r"downs\.(\d+)\.res_block\.block1\.block\.3\.weight$", key)
        if m:
            blocks[int(m.group(1))] = _shape(unet, key, f"{CONV}, out a multiple of inner_channel {inner} (the out "
                                                  f"channels of {prefix + 'downs.0.weight'!r})",
                                             lambda shape: _is_conv(shape) and shape[0] % inner == 0, prefix)[0]
        m = re.match(r"downs\.(\d+)\.conv\.weight$", key)
        if m:
            downsamples.append(int(m.group(1)))
        m = re.match(r"downs\.(\d+)\.attn\.qkv\.weight$", key)
        if m:
            attn_at.append(int(m.group(1)))
    downsamples.sort()
    num_levels = len(downsamples) + 1
    boundaries = [0, *downsamples, max(blocks, default=0) + 1]
    mults, level_of = [], {}
    for level in range(num_levels):
        ids = [i for i in blocks if boundaries[level] < i < boundaries[level + 1]]
        if not ids:
            raise ValueError("Cannot infer the architecture: a level without res blocks.")
        mults.append(blocks[max(ids)] // inner)
        for i in ids:
            level_of[i] = level
    num_res_blocks = len([i for i in blocks if level_of[i] == 0])
    if attn_resolutions is None:
        attn_resolutions = tuple(sorted({image_size // 2 ** level_of[i] for i in attn_at}, reverse=True))
    return UNetConfig(
        in_channels=in_channels, out_channels=out_channels, inner_channel=inner, channel_mults=tuple(mults),
        num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions, dropout=0.0,
        norm_groups=norm_groups, image_size=image_size,
    )


def config_from_reference(opt: dict) -> tuple[UNetConfig, NoiseSchedule]:
    """Map a community config's `model` section (`unet`, `diffusion`, `beta_schedule`) to ours."""
    model = opt.get("model", opt)
    unet, diffusion = model["unet"], model.get("diffusion", {})
    attn = unet.get("attn_res", [8])
    config = UNetConfig(
        in_channels=unet.get("in_channel", 6), out_channels=unet.get("out_channel", 3),
        inner_channel=unet.get("inner_channel", 32), channel_mults=tuple(unet.get("channel_multiplier", (1, 2, 4, 8, 8))),
        num_res_blocks=unet.get("res_blocks", 3), attn_resolutions=tuple(attn if isinstance(attn, list) else [attn]),
        dropout=float(unet.get("dropout", 0.0)), norm_groups=unet.get("norm_groups", RELEASED_NORM_GROUPS),
        image_size=diffusion.get("image_size", 128),
    )
    sched = model.get("beta_schedule", {}).get("val") or model.get("beta_schedule", {}).get("train") or {}
    schedule = NoiseSchedule(num_train_timesteps=sched.get("n_timestep", 2000), beta_start=sched.get("linear_start", 1e-6),
                             beta_end=sched.get("linear_end", 1e-2))
    return config, schedule


def _reference_from_metadata(metadata: dict[str, str]) -> dict | None:
    """A community-style model section rebuilt from safetensors metadata."""
    try:
        unet = next((json.loads(v) for k, v in metadata.items() if k.endswith("config")), None)
        if not isinstance(unet, dict):
            return None
        if "model" in unet or "unet" in unet:
            return unet
        model: dict = {"unet": unet}
        if "image_size" in metadata:
            model["diffusion"] = {"image_size": int(metadata["image_size"])}
        if "beta_schedule" in metadata:
            model["beta_schedule"] = {"val": json.loads(metadata["beta_schedule"])}
        return {"model": model}
    except (ValueError, TypeError, RecursionError):
        return None


def load_community_checkpoint(
    path: str | Path, *, scale: int = 8, norm_groups: int | None = None, image_size: int | None = None,
) -> tuple[ModelConfig, dict[str, Tensor]]:
    """A community checkpoint as `(ModelConfig, U-Net state dict)`: the architecture from the file's
    metadata or tensor shapes; such checkpoints do not store `scale` (8 for the released ones)."""
    state, metadata = load_community_state_dict(path)
    try:
        config, unet_state = _convert(state, metadata, Path(path).name, scale, norm_groups, image_size)
        check_state_dict(config, unet_state, f"The tensors of {str(path)!r}", INFERRED)
    except ValueError as err:
        raise ValueError(err if str(path) in str(err) else f"{str(path)!r}: {err}") from None
    return config, unet_state


INFERRED = ("The architecture is inferred from 'denoise_fn.downs.0.weight', the res blocks and "
            "'denoise_fn.final_conv.block.3.weight'; is it a whole, unmodified SR3 generator checkpoint (*_gen.pth)?")


def _convert(state: dict[str, Tensor], metadata: dict[str, str], name: str, scale: int, norm_groups: int | None,
             image_size: int | None) -> tuple[ModelConfig, dict[str, Tensor]]:
    unet_state, schedule = convert_state_dict(state)
    reference = _reference_from_metadata(metadata)
    if reference is not None:
        try:
            unet_config, ref_schedule = config_from_reference(reference)
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"its metadata is not a community SR3 model config ({type(err).__name__}: "
                             f"{first_line(err)}); expected the training JSON's model section (unet, diffusion, "
                             "beta_schedule).") from None
        if norm_groups is not None:
            unet_config = UNetConfig(**{**unet_config.to_dict(), "norm_groups": norm_groups})
        schedule = schedule or ref_schedule
    else:
        unet_config = config_from_state_dict(unet_state, norm_groups=norm_groups or RELEASED_NORM_GROUPS,
                                             image_size=image_size or 128, prefix=PREFIX)
    if image_size is not None and unet_config.image_size != image_size:
        unet_config = UNetConfig(**{**unet_config.to_dict(), "image_size": image_size})
    if unet_config.image_size % scale:
        raise ValueError(f"image_size {unet_config.image_size} is not divisible by scale {scale}.")
    config = ModelConfig(
        network=unet_config, schedule=schedule or NoiseSchedule(), scale=scale,
        lowres_size=unet_config.image_size // scale, prediction="eps", residual=False,
        sampling=Recipe(sampler="ancestral", num_steps=(schedule or NoiseSchedule()).num_train_timesteps),
        task={"converted_from": name},
    )
    return config, unet_state


def conversion_card(config: ModelConfig, source: str | Path, source_sha256: str) -> str:
    u = config.network
    return f"""---
library_name: sr3infer
tags: [super-resolution, sr3, diffusion]
---

# SR3 x{config.scale}, {config.lowres_size}->{config.out_size} (converted)

Converted by `sr3infer convert` from the community SR3 checkpoint `{Path(source).name}`
(sha256 `{source_sha256}`), written by
[Janspiry/Image-Super-Resolution-via-Iterative-Refinement](https://github.com/Janspiry/Image-Super-Resolution-via-Iterative-Refinement)
(code: Apache-2.0). The weights keep the terms of whoever trained them and of their training data:
check those before redistributing this folder.

| | |
|---|---|
| task | {config.lowres_size}x{config.lowres_size} -> {config.out_size}x{config.out_size}, x{config.scale}, {config.prediction}-prediction |
| U-Net | inner_channel {u.inner_channel}, channel_mults {list(u.channel_mults)}, res blocks {u.num_res_blocks}, attention at {list(u.attn_resolutions)}, norm_groups {u.norm_groups}, dropout {u.dropout} |
| schedule | {config.schedule.kind}, {config.schedule.num_train_timesteps} steps, beta {config.schedule.beta_start:g} -> {config.schedule.beta_end:g} |

`norm_groups` cannot be read from the tensors; it was set at conversion time. The released
16->128 checkpoint uses 32 and the 64->512 one uses 16: a wrong value loads without error but
gives wrong images.

```python
from sr3infer import Upscaler
upscaler = Upscaler.from_pretrained("path/to/this/folder")
```
"""
