"""Deepening a trained U-Net: the grown network computes exactly what the small one did."""

from __future__ import annotations

import pytest
import torch

from sr3infer.models.unet import UNet
from sr3infer.train.grow import grow_res_blocks

SMALL = dict(inner_channel=8, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), norm_groups=4,
             image_size=16)


def _trained_looking(**changes) -> UNet:
    """A small U-Net with every weight moved off its initialisation (zero biases would hide mistakes)."""
    torch.manual_seed(0)
    net = UNet(**{**SMALL, **changes})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("changes, blocks", [({}, 2), ({}, 3), ({"num_res_blocks": 2}, 3),
                                             ({"attn_resolutions": (8,)}, 2), ({"space_to_depth": 2}, 2)])
def test_the_grown_network_computes_the_same_function(changes, blocks):
    small = _trained_looking(**changes)
    big = grow_res_blocks(small, blocks).eval()
    assert big.config.num_res_blocks == blocks
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())
    x, level = torch.randn(2, 6, 16, 16), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        assert torch.allclose(big(x, level), small(x, level), atol=1e-6)


def test_the_new_blocks_can_learn():
    """Zero second convs must not leave the new blocks without gradient: training changes the output."""
    small = _trained_looking()
    big = grow_res_blocks(small, 2).train()
    x, level = torch.randn(2, 6, 16, 16), torch.tensor([0.3, 0.9])
    big(x, level).square().mean().backward()
    new_down = big.downs[2].res_block.block2.block[-1]
    assert new_down.weight.grad is not None and new_down.weight.grad.abs().sum() > 0


def test_growing_refuses_fewer_blocks_or_none_to_start_from():
    with pytest.raises(ValueError, match="at least 1 res block"):
        grow_res_blocks(_trained_looking(num_res_blocks=2), 1)
    with pytest.raises(ValueError, match="at least 1 res block"):
        grow_res_blocks(_trained_looking(num_res_blocks=0), 1)
