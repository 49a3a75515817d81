"""Any output size: the model at its own scale (again on its own output above it, with a warning),
then the antialiased bicubic on float data, so 16-bit outputs keep their bits."""

from __future__ import annotations

import math
import numbers
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence, cast

from torch import Tensor

from ..deprecation import deprecate
from ..runtime.validate import MAX_SCALE
from .resample import bicubic, spatial_size

__all__ = ["SizePlan", "MAX_PASSES", "MAX_OUTSCALE", "parse_size", "check_outscale", "target_size",
           "output_size", "num_passes", "size_plan", "pass_sizes", "resize", "finish_size"]

MAX_PASSES = 3
"""The most passes of a model over its own output (a x8 model: up to x512)."""

MAX_OUTSCALE = MAX_SCALE**MAX_PASSES
"""The largest outscale any model can reach: the largest scale, `MAX_PASSES` times over."""



@dataclass(frozen=True)
class SizePlan:
    """How a call reaches its output size: the model's `passes`, then a resize to the target."""

    passes: int
    outscale: Fraction | None = None    # of the input sides, exact so round(X * side) is
    size: tuple[int, int] | None = None  # (width, height)

    def target(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The output (H, W) for an input of `input_size` (h, w)."""
        return target_size(input_size, outscale=self.outscale, size=self.size)


def parse_size(text: str) -> tuple[int, int]:
    """"WxH" (e.g. "1920x1080") as (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if match is None:
        raise ValueError(f"Expected a size as WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}.")
    return _check_size((int(match.group(1)), int(match.group(2))))


def _check_size(size: Any) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in size)):
        raise ValueError(f"size must be (width, height), two positive integers, got {size!r}.")
    return int(size[0]), int(size[1])


def check_outscale(outscale: Any) -> Fraction:
    """`outscale` as an exact Fraction (never via float, so 10**400 is refused like inf)."""
    # cast: typeshed's numbers.Real lacks comparison with int and Fraction(Real); runtime has both
    if isinstance(outscale, bool) or not isinstance(outscale, numbers.Real) or not 0 < cast(float, outscale) <= MAX_OUTSCALE:
        raise ValueError(f"outscale must be a positive finite number up to {MAX_OUTSCALE:,}, got {_shown(outscale)}; "
                         "pass a factor such as 2.5 (output side / input side).")
    return Fraction(cast(float, outscale))


def _shown(value: Any) -> str:
    """`repr(value)`, shortened; a huge integer by its number of digits."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(int(value)) > 10**30:
        return f"an integer of about {int(abs(int(value)).bit_length() * math.log10(2)) + 1:,} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def target_size(input_size: tuple[int, int], *, outscale: Any = None, size: Any = None) -> tuple[int, int]:
    """The output (H, W) of an input (h, w): round(outscale x side) (half up, >= 1), or `size`."""
    if size is not None:
        width, height = _check_size(size)
        return height, width
    factor = check_outscale(outscale)
    return tuple(max(1, math.floor(factor * int(side) + Fraction(1, 2))) for side in input_size)  # type: ignore


def output_size(input_size: tuple[int, int], scales: Sequence[int], *, outscale: Any = None,
                size: Any = None) -> tuple[int, int]:
    """The output (H, W) of an input (h, w): `target_size`, else the input times each scale."""
    if outscale is None and size is None:
        return input_size[0] * math.prod(scales), input_size[1] * math.prod(scales)
    return target_size(input_size, outscale=outscale, size=size)


def num_passes(input_size: tuple[int, int], output_size: tuple[int, int], scale: int) -> int:
    """The fewest passes of a x`scale` model that cover `output_size`, or `MAX_PASSES + 1`."""
    passes = 1
    while passes <= MAX_PASSES and any(side * scale**passes < target for side, target in zip(input_size, output_size)):
        passes += 1
    return passes


def size_plan(input_sizes: Sequence[tuple[int, int]], scale: int, *, outscale: Any = None,
              size: Any = None) -> SizePlan | None:
    """The plan of a call on inputs of `input_sizes` (h, w), or None without `outscale` and `size`;
    ValueError for both, a bad value, or a target needing over `MAX_PASSES` passes."""
    if outscale is None and size is None:
        return None
    if outscale is not None and size is not None:
        raise ValueError("Pass either outscale (a factor) or size (width, height), not both.")
    plan = SizePlan(1, check_outscale(outscale) if outscale is not None else None,
                    _check_size(size) if size is not None else None)
    passes = max((num_passes(s, plan.target(s), scale) for s in input_sizes), default=1)
    if passes > MAX_PASSES:
        wanted = f"outscale {float(plan.outscale):g}" if plan.outscale is not None else f"size {size[0]}x{size[1]}"
        raise ValueError(f"{wanted} needs more than {MAX_PASSES} passes of this x{scale} model over its own output "
                         f"(at most x{scale**MAX_PASSES}); ask for a smaller output.")
    if passes > 1:
        warnings.warn(
            f"The target is above this model's x{scale} scale, so the model runs {passes} times, each pass on the "
            f"previous output (x{scale**passes}), then the result is resized down. The model was not trained on "
            "its own outputs: expect invented texture; a model trained for the full factor does better.",
            stacklevel=3,
        )
    return SizePlan(passes, plan.outscale, plan.size)


def pass_sizes(plan: SizePlan | None, input_sizes: Sequence[tuple[int, int]], scale: int) -> list[list[tuple[int, int]]]:
    """The input sizes (h, w) of each pass: the inputs, then each previous pass's output."""
    passes = 1 if plan is None else plan.passes
    return [[(h * scale**p, w * scale**p) for h, w in input_sizes] for p in range(passes)]


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) in [-1, 1] resized to `size` (H, W), antialiased, clamped to [-1, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return bicubic(x, (size[0], size[1])).clamp(-1, 1)


def finish_size(plan: SizePlan, inputs: Sequence[Tensor], samples: list[list[Tensor]],
                run_pass: Callable[[list[Tensor], int], list[list[Tensor]]],
                merge: Callable[[list[Tensor], Tensor], Tensor]) -> tuple[list[Tensor], list[list[Tensor]]]:
    """Deprecated (removed in 0.3.0): use `Upscaler.plan` and `Upscaler.run_plan`."""
    deprecate("sr3infer.images.outscale.finish_size", "0.3.0", "Use Upscaler.plan(...) and Upscaler.run_plan(...).")
    merged = [merge(s, rgb) for s, rgb in zip(samples, inputs)]
    for p in range(1, plan.passes):
        samples = run_pass(merged, p)
        merged = [merge(s, rgb) for s, rgb in zip(samples, merged)]
    targets = [plan.target(spatial_size(rgb)) for rgb in inputs]
    samples = [[resize(s, t) for s in image_samples] for image_samples, t in zip(samples, targets)]
    return [resize(m, t) for m, t in zip(merged, targets)], samples
