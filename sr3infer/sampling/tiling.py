"""A denoiser that runs its inner denoiser over overlapping tiles, blending x0 at every step."""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .samplers import Denoiser

__all__ = ["Tile", "TileDenoiserFactory", "TiledDenoiser", "plan_tiles", "tile_count", "tile_spans", "tile_windows"]


class Tile(NamedTuple):
    """Image `index` of the batch, box `[top, top + height) x [left, left + width)` in pixels."""

    index: int  # type: ignore[assignment]  # shadows tuple.index: the public name
    top: int
    left: int
    height: int
    width: int

    def crop(self, images: Tensor, scale: int = 1) -> Tensor:
        """This tile's slice of `images`, which are `scale` times smaller than the output
        (ValueError off the grid)."""
        if self.top % scale or self.left % scale or self.height % scale or self.width % scale:
            raise ValueError(
                f"Tile {tuple(self)} is not aligned to multiples of {scale}; build tiles with align={scale}."
            )
        top, left = self.top // scale, self.left // scale
        return images[self.index : self.index + 1, :, top : top + self.height // scale, left : left + self.width // scale]


TileDenoiserFactory = Callable[[Sequence[Tile]], Denoiser]
"""`tiles -> denoiser` whose x is (len(tiles), C, h, w), item j being tile j (condition bound)."""

_Plan = tuple[list[tuple[int, int]], list[tuple[int, int]], list[Tensor], list[Tensor]]


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """`(start, stop)` spans of `tile` pixels covering `[0, length)`, overlapping by `overlap`+:
    evenly spread multiples of `align`, the last ending at `length`. ValueError for other sizes."""
    if align < 1 or tile < align or tile % align or overlap < 0 or overlap % align:
        raise ValueError(
            f"Expected tile ({tile}) and overlap ({overlap}) to be multiples of align ({align}), with tile > 0 "
            "and overlap >= 0; round them to the model's scale factor."
        )
    if overlap >= tile:
        raise ValueError(f"Tile overlap ({overlap}) must be smaller than the tile size ({tile}); lower the overlap.")
    if length <= tile:
        return [(0, length)]
    if length % align:
        raise ValueError(f"Image side {length} is not a multiple of align ({align}); tiles could not cover it exactly.")
    # In units of `align`: n tiles with evenly spread integer starts. Consecutive starts then differ
    # by at most ceil((L - T) / (n - 1)) <= T - O, so every overlap is at least O.
    span, size = length // align, tile // align
    n = tile_count(length, tile, overlap, align)
    starts = [(k * (span - size) + (n - 1) // 2) // (n - 1) for k in range(n)]
    return [(s * align, s * align + tile) for s in starts]


def tile_count(length: int, tile: int, overlap: int, align: int = 1) -> int:
    """How many spans `tile_spans` gives, by arithmetic alone: safe for any length."""
    if length <= tile:
        return 1
    span, size, keep = length // align, tile // align, overlap // align
    return -(-(span - size) // (size - keep)) + 1


def _ramp(n: int) -> Tensor:
    """Raised-cosine weights over `n` pixels; a ramp and its mirror image sum to exactly 1."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.sin(0.5 * math.pi * (k + 0.5) / n) ** 2


def tile_windows(spans: Sequence[tuple[int, int]]) -> list[Tensor]:
    """One float64 blending weight vector per span, ramped over each overlap, summing to 1."""
    windows = []
    for j, (start, stop) in enumerate(spans):
        w = torch.ones(stop - start, dtype=torch.float64)
        if j > 0:
            lead = spans[j - 1][1] - start
            if lead > 0:
                w[:lead] *= _ramp(lead)
        if j < len(spans) - 1:
            trail = stop - spans[j + 1][0]
            if trail > 0:
                w[stop - start - trail :] *= _ramp(trail).flip(0)
        windows.append(w)
    total = torch.zeros(spans[-1][1], dtype=torch.float64)
    for (start, stop), w in zip(spans, windows):
        total[start:stop] += w
    return [w / total[start:stop] for (start, stop), w in zip(spans, windows)]


class TiledDenoiser:
    """A whole-image denoiser that evaluates `make_tile_denoiser` tile by tile.

    At each step x0 is predicted for overlapping tiles, `tile_batch_size` at a time, and blended
    with raised-cosine windows: memory is bounded by the tile batch; samplers see a plain denoiser.

    Args:
        make_tile_denoiser: `tiles -> denoiser` for a batch of tiles (each tile's condition bound).
        tile_size: tile side in pixels of x (one int, or (height, width)).
        overlap: minimum overlap between neighbouring tiles, in pixels.
        align: tile boxes start on multiples of this (the model's scale: exact low-res slices).
        tile_batch_size: tiles per inner call (across all images of the batch).
    """

    def __init__(
        self,
        make_tile_denoiser: TileDenoiserFactory,
        *,
        tile_size: int | tuple[int, int],
        overlap: int,
        align: int = 1,
        tile_batch_size: int = 8,
    ) -> None:
        tile_h, tile_w = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
        if isinstance(tile_batch_size, bool) or not isinstance(tile_batch_size, numbers.Integral) or tile_batch_size < 1:
            raise ValueError(f"tile_batch_size must be a positive integer, got {tile_batch_size!r}.")
        tile_batch_size = int(tile_batch_size)
        for tile in (tile_h, tile_w):
            tile_spans(tile, tile, overlap, align)  # checks the sizes now
        # Annotated for mypy, which otherwise cannot infer their types in the methods (has-type)
        self.make_tile_denoiser: TileDenoiserFactory = make_tile_denoiser
        self.tile_size: tuple[int, int] = (tile_h, tile_w)
        self.overlap: int = overlap
        self.align: int = align
        self.tile_batch_size: int = tile_batch_size
        self._plan_cache: dict[tuple[int, int], _Plan] = {}

    def plan(self, height: int, width: int) -> list[Tile]:
        """The tiles of one image of size (height, width), row by row, with index 0."""
        rows, cols, _, _ = self._plan(height, width)
        return [Tile(0, top, left, bottom - top, right - left) for top, bottom in rows for left, right in cols]

    def _plan(self, height: int, width: int) -> _Plan:
        """Row and column spans with their windows, kept for the last image size."""
        key = (height, width)
        if key not in self._plan_cache:
            rows = tile_spans(height, self.tile_size[0], self.overlap, self.align)
            cols = tile_spans(width, self.tile_size[1], self.overlap, self.align)
            self._plan_cache = {key: (rows, cols, tile_windows(rows), tile_windows(cols))}
        return self._plan_cache[key]

    def __call__(self, x: Tensor, noise_level: Tensor) -> Tensor:
        """x0 for x (B, C, H, W) at `noise_level` (B,), blended from the tiles' predictions."""
        batch, _, height, width = x.shape
        rows, cols, row_windows, col_windows = self._plan(height, width)
        jobs = [
            (Tile(b, top, left, bottom - top, right - left), r, c)
            for b in range(batch)
            for r, (top, bottom) in enumerate(rows)
            for c, (left, right) in enumerate(cols)
        ]
        row_w = [w.to(device=x.device, dtype=x.dtype) for w in row_windows]
        col_w = [w.to(device=x.device, dtype=x.dtype) for w in col_windows]
        x0 = torch.zeros_like(x)
        for start in range(0, len(jobs), self.tile_batch_size):
            chunk = jobs[start : start + self.tile_batch_size]
            tiles = [tile for tile, _, _ in chunk]
            x_tiles = torch.cat([tile.crop(x) for tile in tiles])
            levels = noise_level[[tile.index for tile in tiles]]
            x0_tiles = self.make_tile_denoiser(tiles)(x_tiles, levels)
            for (tile, r, c), x0_tile in zip(chunk, x0_tiles):
                window = row_w[r][:, None] * col_w[c][None, :]
                tile.crop(x0)[0].add_(x0_tile.to(x.dtype) * window)
        return x0


def plan_tiles(scale: int, out_size: int, output_size: tuple[int, int], tile_size: int | None = None,
               tile_overlap: int | None = None) -> tuple[int, int] | None:
    """`(tile, overlap)` for a x`scale` model trained at `out_size`, or None (see `tile_plan`)."""
    if tile_size is None:
        tile_size = out_size if max(output_size) > out_size else 0
    if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral) or tile_size < 0:
        raise ValueError(f"tile_size must be a non-negative integer (0: no tiling), got {tile_size!r}.")
    tile_size = int(tile_size)
    if tile_size == 0:
        return None
    minimum = max(scale, -(-(out_size // 2) // scale) * scale)
    if tile_size < minimum:
        raise ValueError(
            f"tile_size must be at least {minimum} output pixels (half the model's trained {out_size} "
            f"px output, on its scale-{scale} grid), got {tile_size}; smaller tiles multiply the U-Net calls and "
            "lose quality. Use 0 to turn tiling off.")
    tile = tile_size // scale * scale
    if tile_overlap is None:
        tile_overlap = tile // 4
    if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, numbers.Integral) or tile_overlap < 0:
        raise ValueError(f"tile_overlap must be a non-negative integer, got {tile_overlap!r}.")
    tile_overlap = int(tile_overlap)
    overlap = -(-tile_overlap // scale) * scale
    if overlap >= tile:
        raise ValueError(
            f"tile_overlap ({tile_overlap}, {overlap} on the scale-{scale} grid) must be smaller than the "
            f"tile ({tile}); lower the overlap or raise tile_size."
        )
    if output_size[0] <= tile and output_size[1] <= tile:
        return None
    return tile, overlap
