"""Tiled denoising: tile layout, blending windows, identity for small images, edge cases, and no seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr3infer.sampling.tiling import Tile, TiledDenoiser, tile_spans, tile_windows
from sr3infer.upscaler import Upscaler
from sr3infer.models.weights import build_model


def _gens(count: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + k) for k in range(count)]


@pytest.mark.parametrize(
    "length, tile, overlap, align",
    [(100, 16, 4, 2), (96, 16, 4, 2), (17, 16, 0, 1), (1000, 256, 64, 4), (260, 256, 64, 4), (33, 8, 7, 1)],
)
def test_tile_spans_cover_with_the_requested_overlap(length, tile, overlap, align):
    spans = tile_spans(length, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(stop - start == tile for start, stop in spans)
    assert all(start % align == 0 for start, _ in spans)
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        assert stop - start >= overlap
    if len(spans) > 1:  # as few tiles as the overlap allows: one fewer could not reach the end
        assert (len(spans) - 2) * (tile - overlap) + tile < length


def test_tile_spans_single_tile_and_errors():
    assert tile_spans(5, 16, 4) == [(0, 5)]
    assert tile_spans(16, 16, 4) == [(0, 16)]
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_spans(100, 16, 16)
    with pytest.raises(ValueError, match="multiples of align"):
        tile_spans(100, 15, 4, align=2)
    with pytest.raises(ValueError, match="not a multiple of align"):
        tile_spans(101, 16, 4, align=2)


@pytest.mark.parametrize("length, tile, overlap", [(100, 16, 4), (1000, 256, 64), (37, 8, 5), (20, 16, 0)])
def test_windows_sum_to_one_and_are_smooth(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, stop), window in zip(spans, tile_windows(spans)):
        total[start:stop] += window
        assert window.min() > 0
    torch.testing.assert_close(total, torch.ones(length, dtype=torch.float64), rtol=0, atol=1e-12)
    if overlap and len(spans) > 1:
        first = tile_windows(spans)[0]
        assert first[0] == 1  # the image border is not ramped
        assert first[-1] < 0.05  # the far edge of a tile hardly counts


@pytest.mark.parametrize(
    "shape, tile, overlap",
    [((2, 3, 40, 56), 16, 4), ((1, 3, 1, 97), 8, 3), ((1, 2, 97, 1), 8, 3), ((1, 3, 9, 301), 32, 8),
     ((3, 1, 17, 23), 16, 15)],
)
def test_tiled_denoiser_reassembles_a_position_dependent_field(shape, tile, overlap):
    # An inner denoiser whose eps is a fixed field of absolute position: blending must give the field back.
    field = torch.randn(shape)
    calls = []

    def make_tile_denoiser(tiles):
        def denoise(x, noise_level):
            calls.append((len(tiles), noise_level.clone(), [t.index for t in tiles]))
            assert x.shape[0] == len(tiles)
            return torch.cat([t.crop(field) for t in tiles])

        return denoise

    denoise = TiledDenoiser(make_tile_denoiser, tile_size=tile, overlap=overlap, tile_batch_size=3)
    levels = torch.linspace(0.1, 0.9, shape[0])
    eps = denoise(torch.zeros(shape), levels)
    torch.testing.assert_close(eps, field, rtol=0, atol=1e-5)
    assert max(n for n, _, _ in calls) <= 3
    for _, level, indices in calls:  # each tile is told its own image's noise level
        torch.testing.assert_close(level, levels[indices])


def test_tiled_denoiser_single_tile_is_exactly_the_inner_denoiser():
    field = torch.randn(2, 3, 12, 10)
    denoise = TiledDenoiser(lambda tiles: lambda x, g: x * 3 + g[:, None, None, None], tile_size=16, overlap=4)
    x, g = field, torch.tensor([0.2, 0.7])
    assert torch.equal(denoise(x, g), x * 3 + g[:, None, None, None])


def test_tile_crop_needs_aligned_boxes():
    low = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(Tile(0, 4, 2, 4, 2).crop(low, 2), low[..., 2:4, 1:2])
    with pytest.raises(ValueError, match="not aligned"):
        Tile(0, 1, 0, 4, 4).crop(low, 2)


def test_tile_plan(tiny_upscaler):
    up = tiny_upscaler  # scale 2, trained output 16 px
    assert up.tile_plan((16, 16)) is None  # at the trained size: whole
    assert up.tile_plan((16, 18)) == (16, 4)  # larger: automatic tiles of the trained size
    assert up.tile_plan((100, 100), 0) is None
    assert up.tile_plan((100, 100), 33, 5) == (32, 6)  # tile rounded down, overlap up, to the scale
    assert up.tile_plan((10, 30), 64) is None  # one tile covers the image
    for bad, match in [((-1, None), "non-negative"), ((1, None), "at least"), ((16, 16), "smaller than the tile")]:
        with pytest.raises(ValueError, match=match):
            up.tile_plan((100, 100), *bad)


def test_image_smaller_than_a_tile_gives_the_untiled_result(tiny_upscaler):
    lowres = torch.rand(2, 3, 11, 7) * 2 - 1
    whole = tiny_upscaler.upscale_tensor(lowres, generator=_gens(2), progress=False, tile_size=0)
    tiled = tiny_upscaler.upscale_tensor(lowres, generator=_gens(2), progress=False, tile_size=64, tile_overlap=8)
    assert torch.equal(whole, tiled)


@pytest.mark.parametrize("size", [(1, 1), (1, 37), (37, 1), (5, 150), (13, 9), (9, 9)])
def test_tiling_edge_cases(tiny_config, size):
    config = tiny_config.replace(prediction="v", residual=True)
    up = Upscaler(config, build_model(config), device="cpu")
    lowres = torch.rand(1, 3, *size) * 2 - 1
    out = up.upscale_tensor(lowres, num_steps=2, generator=_gens(1), progress=False, tile_size=8, tile_overlap=2,
                            consistency="every")
    assert out.shape == (1, 3, size[0] * 2, size[1] * 2)
    assert torch.isfinite(out).all() and out.abs().max() <= 1


def test_tiled_batch_equals_one_by_one(tiny_upscaler):
    lowres = torch.rand(3, 3, 12, 20) * 2 - 1
    kwargs = dict(num_steps=2, progress=False, tile_size=12, tile_overlap=4)
    batch = tiny_upscaler.upscale_tensor(lowres, generator=_gens(3), tile_batch_size=5, **kwargs)
    for k in range(3):
        one = tiny_upscaler.upscale_tensor(lowres[k : k + 1], generator=_gens(1, seed=k), tile_batch_size=2, **kwargs)
        torch.testing.assert_close(one, batch[k : k + 1], rtol=0, atol=1e-4)


def test_upscale_api_tiles_large_images_without_the_size_warning(tiny_upscaler):
    import warnings

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 30, 3), dtype=np.uint8))
    with warnings.catch_warnings(record=True) as tiled_warnings:
        warnings.simplefilter("always")
        out = tiny_upscaler.upscale(image, num_steps=2, seed=0, progress=False)  # 24x60 output > 16: tiled
    assert out.size == (60, 24)
    assert [str(w.message) for w in tiled_warnings] == []  # tiles reach the model at its trained size: no warning
    with warnings.catch_warnings(record=True) as untiled_warnings:
        warnings.simplefilter("always")
        untiled = tiny_upscaler.upscale(image, num_steps=2, seed=0, progress=False, tile_size=0)
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(untiled, dtype=int)).max() > 0  # tiling did act
    assert len(untiled_warnings) == 1 and "trained on 8x8 inputs; got 30x12" in str(untiled_warnings[0].message)


# Seams. A random-weight U-Net is a fair seam detector: its GroupNorm and attention statistics and
# its zero padding make every prediction depend on the tile's extent and content, as a trained
# model's edge effects do. The model predicts x0 as a residual over the bicubic condition and its
# last layer is damped, so the output is an image (condition + a content-dependent residual) rather
# than noise large enough to drown a seam. DDIM (deterministic) with few steps keeps it fast.


def _gradient_and_texture(height: int, width: int) -> torch.Tensor:
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    smooth = torch.stack([0.8 * x - 0.4 + 0.3 * y, 0.5 - 0.9 * y + 0.2 * x, 2.4 * (x - 0.5) * (y - 0.5)])
    texture = 0.15 * torch.randn(3, height, width, generator=torch.Generator().manual_seed(1))
    return (smooth + texture).clamp(-1, 1)[None]


def _border_ratio(image: torch.Tensor, borders: set[int], dim: int, scale: int) -> float:
    """Mean |difference| across the given borders over that across the other boundaries of the same phase.

    Border b is the boundary between pixels b - 1 and b. Tile borders lie on multiples of the scale,
    where bicubic upsampling has its own statistics, so they are compared with boundaries of that phase.
    """
    diff = image.diff(dim=dim).abs()
    per_boundary = diff.mean(dim=(0, 1, 2) if dim == -1 else (0, 1, 3))
    boundary = torch.arange(1, per_boundary.numel() + 1)
    is_border = torch.tensor([b in borders for b in boundary.tolist()])
    same_phase = boundary % scale == 0
    return float(per_boundary[is_border].mean() / per_boundary[~is_border & same_phase].mean())


def test_blended_tiles_leave_no_seams_where_naive_tiles_do(tiny_config):
    config = tiny_config.replace(prediction="x0", residual=True)
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.final_conv.block[-1].weight.mul_(0.3)
        model.final_conv.block[-1].bias.mul_(0.3)
    up = Upscaler(config, model, device="cpu")
    scale, tile, overlap = config.scale, 32, 8
    lowres = _gradient_and_texture(48, 64)
    height, width = 48 * scale, 64 * scale
    kwargs = dict(sampler="ddim", num_steps=3, progress=False)

    tiled = up.upscale_tensor(lowres, generator=_gens(1), tile_size=tile, tile_overlap=overlap, **kwargs)
    rows, cols = (tile_spans(n, tile, overlap, scale) for n in (height, width))
    row_borders = {b for span in rows for b in span} - {0, height}
    col_borders = {b for span in cols for b in span} - {0, width}

    # Naive tiling, for comparison only: upscale non-overlapping low-res tiles independently and paste.
    naive = torch.zeros(1, 3, height, width)
    step = tile // scale
    for top in range(0, 48, step):
        for left in range(0, 64, step):
            part = up.upscale_tensor(lowres[..., top : top + step, left : left + step], generator=_gens(1),
                                     tile_size=0, **kwargs)
            naive[..., top * scale : (top + step) * scale, left * scale : (left + step) * scale] = part
    naive_rows, naive_cols = set(range(tile, height, tile)), set(range(tile, width, tile))

    def seamless(image, row_set, col_set):
        ratios = (_border_ratio(image, col_set, -1, scale), _border_ratio(image, row_set, -2, scale))
        return all(abs(r - 1) <= 0.1 for r in ratios), ratios

    ok, ratios = seamless(tiled, row_borders, col_borders)
    assert ok, f"tile borders differ from the rest of the image: horizontal/vertical ratios {ratios}"
    ok, ratios = seamless(naive, naive_rows, naive_cols)
    assert not ok, f"naive tiling should show seams here, got ratios {ratios}"
