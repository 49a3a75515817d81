"""Out-of-memory fallback: a run out of device memory is retried with half the tile (down to the
minimum), then one image and tile per U-Net call, with one warning; only then does it fail."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["OUT_OF_MEMORY_HINT", "is_out_of_memory", "min_tile", "fallback_steps", "run_with_fallback"]

OUT_OF_MEMORY_HINT = "try a smaller input, --dtype fp16/bf16 (torch_dtype=), or a machine with more memory"


OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory")
"""What torch's RuntimeErrors say when memory runs out: "MPS backend out of memory" (and older CUDA), and the CPU
allocator's "DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"."""


def is_out_of_memory(err: BaseException) -> bool:
    """A device out of memory: torch.OutOfMemoryError, MemoryError, or a RuntimeError saying so."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err).lower() for text in OUT_OF_MEMORY_TEXTS)


def min_tile(out_size: int, scale: int) -> int:
    """The smallest tile tried: half the trained output size on the scale grid (`tile_plan`'s)."""
    return max(scale, -(-(out_size // 2) // scale) * scale)


def fallback_steps(output_size: tuple[int, int], tile: int | None, batch_size: int, *, out_size: int,
                   scale: int) -> list[tuple[int, int]]:
    """The (tile, batch size) settings tried after an out-of-memory run: the tile halved down to
    `min_tile`, then batch size 1 (tile 0: untiled)."""
    smallest = min_tile(out_size, scale)
    whole = max(output_size)
    current = tile if tile else whole
    steps = []
    while current > smallest:
        current = max(smallest, current // 2 // scale * scale)
        steps.append((current, batch_size))
    if batch_size > 1:
        steps.append((min(current, smallest), 1))
    return [(0 if t >= whole else t, b) for t, b in steps]  # 0: the whole output in one piece, untiled


def _snapshot(generator: Any) -> Callable[[], None]:
    """A function that rewinds `generator` (one, a list, or None: torch's global one) to now."""
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator or [])
    states = [g.get_state() for g in gens]
    global_state = torch.get_rng_state() if generator is None else None

    def restore() -> None:
        for g, state in zip(gens, states):
            g.set_state(state)
        if global_state is not None:
            torch.set_rng_state(global_state)

    return restore


def run_with_fallback(run: Callable[[Tensor, Any, int | None, int | None], Tensor], lowres: Tensor, generator: Any, *,
                      tiling: tuple[int, int] | None, batch_size: int, config: Any,
                      device: torch.device | None = None) -> Tensor:
    """`run(lowres, generator, None, None)`, retried on out of memory for each of `fallback_steps`,
    generators rewound so each retry draws the same noise; at batch size 1 images go one by one.
    When the last setting fails too, the error (its type kept, `fallback_tried` set) says what was
    tried; other errors pass at once."""
    restore = _snapshot(generator)
    try:
        return run(lowres, generator, None, None)
    except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried
        if not is_out_of_memory(err):
            raise
        first = err
    scale, out_size = config.scale, config.out_size
    output_size = (lowres.shape[-2] * scale, lowres.shape[-1] * scale)
    tile = tiling[0] if tiling is not None else None
    height, width = output_size
    tried = f"{lowres.shape[0]} image(s) of {width}x{height} px, tile {tile or 'off'}, batch size {batch_size}"
    steps = fallback_steps(output_size, tile, batch_size, out_size=out_size, scale=scale)
    for step_tile, step_batch in steps:
        _free(device)
        restore()
        try:
            if step_batch == 1 and lowres.shape[0] > 1:  # one image at a time, each with its own generator
                own = list(generator) if isinstance(generator, (list, tuple)) else None
                result = torch.cat([run(lowres[i : i + 1], [own[i]] if own else generator, step_tile, 1)
                                    for i in range(lowres.shape[0])])
            else:
                result = run(lowres, generator, step_tile, step_batch)
        except Exception as err:  # noqa: BLE001
            if not is_out_of_memory(err):
                raise
            continue
        warnings.warn(f"Out of memory with {tried}; retried with tile {step_tile or 'off'}, batch size {step_batch}, "
                      "which worked (pass these to skip the failed try).", stacklevel=4)
        return result
    last = (f"still with tile {steps[-1][0] or 'off'}, batch size {steps[-1][1]}" if steps
            else "nothing smaller to try")
    message = (f"Out of memory with {tried}, and {last}: "
               f"{str(first).splitlines()[0] if str(first) else type(first).__name__}; {OUT_OF_MEMORY_HINT}.")
    error = _same_type(first, message)
    error.fallback_tried = True  # type: ignore[attr-defined] # for callers that add hints (batch.error_line)
    raise error from first


def _free(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()


def _same_type(err: BaseException, message: str) -> BaseException:
    """An error of `err`'s type with `message`, else a RuntimeError."""
    try:
        return type(err)(message)
    except Exception:  # noqa: BLE001 - a type that takes other arguments
        return RuntimeError(message)
