"""Grow a trained SR3 U-Net deeper without changing what it computes.

`grow_res_blocks` adds res blocks per level (`num_res_blocks` n -> n + k) and starts every new block as the
identity, so the grown network's output equals the small one's at step 0 and training continues from the small
model's quality with more capacity (as Net2DeeperNet, Chen et al. 2016, and zero-initialised residual branches).

Down path of a level: the n old blocks, then k new ones whose second conv is zero (the block returns its input),
then the downsample; their skips repeat the last old block's output. Up path: the first old block (it pops the
same value as before), then k new blocks whose second conv is zero and whose 1x1 skip conv passes the running
features through and drops the skip, then the n remaining old blocks with the skips they popped before.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.unet import ResnetBlocWithAttn, UNet

__all__ = ["grow_res_blocks"]


def grow_res_blocks(small: UNet, num_res_blocks: int) -> UNet:
    """A copy of `small` with `num_res_blocks` res blocks per level (>= its own, which must be >= 1),
    computing the same function; the new blocks' other weights keep PyTorch's default initialisation."""
    config = small.config
    n, k = config.num_res_blocks, num_res_blocks - config.num_res_blocks
    if n < 1 or k < 0:
        raise ValueError(f"grow_res_blocks grows a U-Net with at least 1 res block per level to at least as many; "
                         f"got {n} -> {num_res_blocks}.")
    big = UNet(**{**config.to_dict(), "num_res_blocks": num_res_blocks})
    big.noise_level_mlp.load_state_dict(small.noise_level_mlp.state_dict())
    big.mid.load_state_dict(small.mid.state_dict())
    big.final_conv.load_state_dict(small.final_conv.state_dict())
    levels = len(config.channel_mults)

    big.downs[0].load_state_dict(small.downs[0].state_dict())
    s = b = 1
    for level in range(levels):
        for i in range(n):
            big.downs[b + i].load_state_dict(small.downs[s + i].state_dict())
        for j in range(k):
            _start_as_identity(big.downs[b + n + j])
        s, b = s + n, b + n + k
        if level != levels - 1:
            big.downs[b].load_state_dict(small.downs[s].state_dict())
            s, b = s + 1, b + 1

    s = b = 0
    for level in reversed(range(levels)):
        big.ups[b].load_state_dict(small.ups[s].state_dict())
        for j in range(k):
            _start_as_identity(big.ups[b + 1 + j])
        for i in range(n):
            big.ups[b + k + 1 + i].load_state_dict(small.ups[s + 1 + i].state_dict())
        s, b = s + n + 1, b + n + k + 1
        if level != 0:
            big.ups[b].load_state_dict(small.ups[s].state_dict())
            s, b = s + 1, b + 1
    return big.train(small.training)


@torch.no_grad()
def _start_as_identity(block: nn.Module) -> None:
    """Zero the residual branch; a 1x1 skip conv (up path: input = [running features, skip]) keeps the first
    `out` channels and drops the rest; attention, if any, starts with a zero output projection."""
    assert isinstance(block, ResnetBlocWithAttn)
    res = block.res_block
    last_conv = res.block2.block[-1]
    assert isinstance(last_conv, nn.Conv2d)
    _zero(last_conv)
    if isinstance(res.res_conv, nn.Conv2d):
        _zero(res.res_conv)
        out = res.res_conv.out_channels
        res.res_conv.weight[:, :out, 0, 0] = torch.eye(out)
    if block.with_attn:
        _zero(block.attn.out)


def _zero(conv: nn.Conv2d) -> None:
    conv.weight.zero_()
    if conv.bias is not None:
        conv.bias.zero_()
