"""The SR3 U-Net (Saharia et al. 2021), laid out exactly as the community implementation names it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime.validate import (
    MAX_CHANNEL_MULT, MAX_IMAGE_CHANNELS, MAX_IMAGE_SIZE, MAX_INNER_CHANNEL, MAX_LEVELS, MAX_LIST, MAX_NORM_GROUPS,
    MAX_RES_BLOCKS, MAX_SPACE_TO_DEPTH, ConfigError, check_float, check_int, check_int_list,
)
from ..errors import reject_unknown_keys

__all__ = ["UNetConfig", "UNet"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the SR3 U-Net; the fields are exactly `UNet`'s keyword arguments."""

    in_channels: int = 6                        # condition (3) + noisy image (3)
    out_channels: int = 3                       # the prediction (eps, v or x0)
    inner_channel: int = 64                     # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 4, 8, 8)
    num_res_blocks: int = 2                     # res blocks per level on the way down
    attn_resolutions: tuple[int, ...] = (16,)   # construction-time resolutions with self-attention
    dropout: float = 0.0                        # in the second conv of every res block
    norm_groups: int = 32                       # GroupNorm groups
    image_size: int = 128                       # output size the model was built (and trained) for
    space_to_depth: int = 1                     # >1: pixel-unshuffle the input by it, run at 1/it resolution

    def __post_init__(self) -> None:
        """Check every field's type and bounds before any layer is built."""
        ints = {"in_channels": (1, MAX_IMAGE_CHANNELS), "out_channels": (1, MAX_IMAGE_CHANNELS),
                "inner_channel": (2, MAX_INNER_CHANNEL), "num_res_blocks": (0, MAX_RES_BLOCKS),
                "norm_groups": (1, MAX_NORM_GROUPS), "image_size": (1, MAX_IMAGE_SIZE),
                "space_to_depth": (1, MAX_SPACE_TO_DEPTH)}
        for name, (low, high) in ints.items():
            object.__setattr__(self, name, check_int(getattr(self, name), name, low, high))
        object.__setattr__(self, "channel_mults",
                           check_int_list(self.channel_mults, "channel_mults", 1, MAX_CHANNEL_MULT, 1, MAX_LEVELS))
        object.__setattr__(self, "attn_resolutions",
                           check_int_list(self.attn_resolutions, "attn_resolutions", 1, MAX_IMAGE_SIZE, 0, MAX_LIST))
        object.__setattr__(self, "dropout", check_float(self.dropout, "dropout", 0.0, 1.0, open_high=True))
        if self.inner_channel % 2:
            raise ConfigError("inner_channel", "even (sin/cos embedding)", self.inner_channel)
        for mult in self.channel_mults:
            if (self.inner_channel * mult) % self.norm_groups:
                raise ConfigError("norm_groups", f"a divisor of every level's channel count (inner_channel "
                                  f"{self.inner_channel} x {mult} = {self.inner_channel * mult})", self.norm_groups)
        if self.image_size % self.space_to_depth:
            raise ConfigError("image_size", f"a multiple of space_to_depth ({self.space_to_depth}): the network runs "
                              "at image_size / space_to_depth", self.image_size)

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        """Build from a dict (e.g. `config.json["unet"]`), rejecting unknown keys by name."""
        reject_unknown_keys(data, (f.name for f in fields(cls)), "U-Net config")
        return cls(**data)

    def to_dict(self) -> dict:
        """The config as JSON values; `space_to_depth` only when on (configs re-save identical)."""
        data = asdict(self)
        data["channel_mults"] = list(self.channel_mults)
        data["attn_resolutions"] = list(self.attn_resolutions)
        if self.space_to_depth == 1:
            del data["space_to_depth"]
        return data

    @property
    def downscale_factor(self) -> int:
        """Input sides must be multiples of this; `UNet.forward` pads other sides up to it."""
        return self.space_to_depth * 2 ** (len(self.channel_mults) - 1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (stable fp16 statistics)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class PositionalEncoding(nn.Module):
    """sin/cos features of the noise level sqrt(gamma), without WaveGrad's x5000 scale."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, noise_level: Tensor) -> Tensor:
        count = self.dim // 2
        step = torch.arange(count, dtype=torch.float32, device=noise_level.device) / count
        freqs = torch.exp(-math.log(10000.0) * step)
        arg = noise_level.float().unsqueeze(-1) * freqs
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class Swish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class FeatureWiseAffine(nn.Module):
    """Adds a projection of the noise embedding to every pixel (the reference's `noise_func`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(in_channels, out_channels))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        linear = cast(nn.Linear, self.noise_func[0])  # Sequential's item is typed as any Module
        return x + linear(emb.to(linear.weight.dtype)).to(x.dtype).view(x.shape[0], -1, 1, 1)


class Block(nn.Module):
    """GroupNorm -> swish -> dropout -> 3x3 conv."""

    def __init__(self, dim: int, dim_out: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm32(groups, dim),
            Swish(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.noise_func = FeatureWiseAffine(emb_dim, dim_out)
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups, dropout=dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.noise_func(self.block1(x), emb)
        return self.block2(h) + self.res_conv(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions, through scaled_dot_product_attention."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, 1, c, h * w).transpose(-1, -2)  # (b, 3, heads, hw, c)
        q, k, v = qkv.unbind(1)
        o = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        o = o.transpose(-1, -2).reshape(b, c, h, w)
        return self.out(o) + x


class ResnetBlocWithAttn(nn.Module):
    def __init__(self, dim: int, dim_out: int, *, emb_dim: int, groups: int, dropout: float, with_attn: bool) -> None:
        super().__init__()
        self.with_attn = with_attn
        self.res_block = ResnetBlock(dim, dim_out, emb_dim, dropout=dropout, groups=groups)
        if with_attn:
            self.attn = SelfAttention(dim_out, groups=groups)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res_block(x, emb)
        return self.attn(x) if self.with_attn else x


class Downsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """SR3 U-Net: `(concat([cond, x_noisy]), noise_level) -> prediction`.

    Parameter names are the community checkpoints' `denoise_fn.*` keys without the prefix. With
    `space_to_depth=f > 1` the input is pixel-unshuffled by f, the U-Net runs at 1/f of the side
    (`attn_resolutions` counted there), and the output is pixel-shuffled back; only the first and
    last convs are wider.
    """

    _keep_in_fp32_modules = ("noise_level_mlp",)  # the noise embedding stays float32 in every precision

    def __init__(
        self,
        *,
        in_channels: int = 6,
        out_channels: int = 3,
        inner_channel: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 4, 8, 8),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.0,
        norm_groups: int = 32,
        image_size: int = 128,
        space_to_depth: int = 1,
    ) -> None:
        super().__init__()
        self.config = UNetConfig(
            in_channels=in_channels, out_channels=out_channels, inner_channel=inner_channel,
            channel_mults=tuple(channel_mults), num_res_blocks=num_res_blocks,
            attn_resolutions=tuple(attn_resolutions), dropout=dropout, norm_groups=norm_groups,
            image_size=image_size, space_to_depth=space_to_depth,
        )
        c, groups, f = inner_channel, norm_groups, space_to_depth
        self.noise_level_mlp = nn.Sequential(PositionalEncoding(c), nn.Linear(c, c * 4), Swish(), nn.Linear(c * 4, c))

        def block(dim: int, dim_out: int, res: int, attn: bool | None = None) -> ResnetBlocWithAttn:
            with_attn = res in attn_resolutions if attn is None else attn
            return ResnetBlocWithAttn(dim, dim_out, emb_dim=c, groups=groups, dropout=dropout, with_attn=with_attn)

        num_levels = len(channel_mults)
        res = image_size // f
        downs: list[nn.Module] = [nn.Conv2d(in_channels * f * f, c, 3, padding=1)]
        skip_channels = [c]
        ch = c
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                downs.append(block(ch, c * mult, res))
                ch = c * mult
                skip_channels.append(ch)
            if level != num_levels - 1:
                downs.append(Downsample(ch))
                skip_channels.append(ch)
                res //= 2
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList([block(ch, ch, res, attn=True), block(ch, ch, res, attn=False)])

        ups: list[nn.Module] = []
        for level in reversed(range(num_levels)):
            out = c * channel_mults[level]
            for _ in range(num_res_blocks + 1):
                ups.append(block(ch + skip_channels.pop(), out, res))
                ch = out
            if level != 0:
                ups.append(Upsample(ch))
                res *= 2
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(ch, out_channels * f * f, groups)

    def forward(self, x: Tensor, noise_level: Tensor) -> Tensor:
        """Predict from `x` (B, in_channels, H, W) and `noise_level` sqrt(gamma) (B,) or (B, 1);
        sides not multiples of `config.downscale_factor` are reflect-padded, then cropped back."""
        if noise_level.dim() == 1:
            noise_level = noise_level[:, None]
        height, width = x.shape[-2:]
        factor = self.config.space_to_depth
        x = pad_to_multiple(x, self.config.downscale_factor)
        if factor > 1:
            x = F.pixel_unshuffle(x, factor)
        # The noise embedding runs in the dtype of its own weights (kept float32 by the Upscaler in fp16).
        mlp = self.noise_level_mlp
        emb = mlp[0](noise_level.float()).to(mlp[1].weight.dtype)
        emb = mlp[3](mlp[2](mlp[1](emb)))  # (B, 1, C)
        skips = []
        for layer in self.downs:
            x = layer(x, emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
            skips.append(x)
        for layer in self.mid:
            x = layer(x, emb)
        for layer in self.ups:
            if isinstance(layer, ResnetBlocWithAttn):
                x = layer(torch.cat([x, skips.pop()], dim=1), emb)
            else:
                x = layer(x)
        out = self.final_conv(x)
        if factor > 1:
            out = F.pixel_shuffle(out, factor)
        return out[..., :height, :width]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad the bottom/right of (B, C, H, W) to multiples of `multiple` (reflect where possible)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
