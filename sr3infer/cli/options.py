"""What every `sr3infer` command shares: the parser, exit codes, the options of a model run and their checks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, NoReturn

from .. import seeding
from ..errors import UsageError
from ..size_guard import DEFAULT_MAX_OUTPUT_PIXELS
from .recipe_flags import add_recipe_flags

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MAX_THREADS_PER_CPU = 4  # --threads above os.cpu_count() x this is refused (100000 threads crash torch)


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are a `UsageError` (exit 2, one line), not argparse's exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def add_run_args(parser: argparse.ArgumentParser, *, per_stage: bool = False) -> None:
    """The options of every command that runs models: recipe, seed, device, batching, tiling, speed.

    With `per_stage` (cascade) each recipe option takes one value for all stages or a comma-separated one per stage.
    """
    add_recipe_flags(parser, per_stage=per_stage)
    samples = "" if per_stage else "; with --samples K, seeds seed + k*K to seed + k*K + K-1"
    parser.add_argument("--seed", type=int, default=0,
                        help=f"random seed (file k of the sorted inputs uses seed + k{samples})")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps, ... (default: cuda, then mps, then cpu)")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default fp16 on CUDA and MPS; on CPU fp32 (bf16 where sr3infer.runtime.devices says the CPU has native bf16 and it is the default)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images (or tiles) per U-Net call" + ("" if per_stage else "; with --samples: samples"))
    parser.add_argument("--quiet", action="store_true",
                        help="hide the progress bar, the 'wrote ...' lines and a successful folder run's summary "
                             "(warnings, failures and errors still show)")
    _add_speed_args(parser)
    _add_tiling_args(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--skip-existing", action="store_true",
                        help="leave inputs whose outputs all exist alone (re-running a folder after adding images)")
    parser.add_argument("--strip-metadata", action="store_true",
                        help="write no ICC profile, EXIF, DPI or PNG text (by default each output keeps its input's: "
                             "EXIF orientation reset and sizes updated, DPI scaled by the factor)")
    parser.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP output quality 1-100 (default 95)")


def _add_speed_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 per rank under torchrun)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the U-Net (slow first call per shape; falls back to eager if unavailable)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the U-Net call from CUDA graphs (CUDA only)")


def _add_tiling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, metavar="N",
                        help="tile side in output pixels; outputs larger than a tile are denoised as overlapping "
                             "tiles blended every step (default: the trained output size, only when larger; 0: off)")
    parser.add_argument("--tile-overlap", type=int, metavar="N",
                        help="minimum overlap of neighbouring tiles in output pixels (default: a quarter of the tile)")
    parser.add_argument("--max-output-pixels", type=int, metavar="N", default=DEFAULT_MAX_OUTPUT_PIXELS,
                        help="refuse outputs larger than N pixels per image, and batches whose estimated memory is "
                             "over 160 bytes per such pixel (at least 4 GiB) "
                             f"(default {DEFAULT_MAX_OUTPUT_PIXELS:,}: a 24 GiB machine)")


def check_shared_args(args: argparse.Namespace) -> None:
    """The options of `add_run_args` that need no model, checked before any work."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    most = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    if args.threads is not None and not 1 <= args.threads <= most:
        raise UsageError(f"--threads must be between 1 and {most} ({MAX_THREADS_PER_CPU} x the {os.cpu_count() or 1} "
                         f"CPUs), got {args.threads}")
    if args.overwrite and args.skip_existing:
        raise UsageError("--overwrite and --skip-existing contradict each other; pass one of them")
    if not 1 <= args.quality <= 100:
        raise UsageError(f"--quality must be between 1 and 100 (JPEG/WebP), got {args.quality}")
    for flag, value in (("--tile", args.tile), ("--tile-overlap", args.tile_overlap)):
        if value is not None and value < 0:
            raise UsageError(f"{flag} must be at least 0, got {value}")
    if args.tile and args.tile_overlap is not None and args.tile_overlap >= args.tile:
        raise UsageError(f"--tile-overlap ({args.tile_overlap}) must be smaller than --tile ({args.tile})")
    if args.max_output_pixels < 1:
        raise UsageError(f"--max-output-pixels must be at least 1, got {args.max_output_pixels}")
    if not 0 <= args.seed <= seeding.MAX_SEED:
        raise UsageError(f"--seed must be between 0 and 2**64 - 1, got {args.seed}")
    _check_device(args.device)


def _check_device(device: str | None) -> None:
    """--device names a device that this machine has (in the command line's words, not Python's)."""
    if device is None or device == "auto":
        return
    import torch

    from ..runtime.devices import resolve_device

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device}: not a device; expected cpu, cuda, cuda:N or mps, or leave --device out "
                         "(cuda, then mps, then cpu)") from None
    try:
        resolve_device(device)
    except RuntimeError:
        raise UsageError(f"--device {device}: torch finds no {kind.upper()} device on this machine; use --device cpu, "
                         "or leave --device out to take the best one available") from None


def check_model_name(name: str, flag: str) -> None:
    """A model that is no folder, no .safetensors file and no known name is a usage error, said before any work."""
    from ..hub.manifest import load_manifest

    path = Path(name)
    if path.is_dir() or (path.is_file() and path.suffix == ".safetensors"):
        return
    try:
        known = sorted(load_manifest().models)
    except (ValueError, OSError):  # a broken $SR3INFER_MANIFEST is reported when the model is loaded
        return
    if name in known:
        return
    if path.exists():
        raise UsageError(f"{flag} {name}: a file, but not a .safetensors weights file; convert a checkpoint with "
                         "`sr3infer convert CKPT -o FOLDER` and pass the folder")
    raise UsageError(f"{flag} {name}: no such model folder, .safetensors file or model name (known names: "
                     f"{', '.join(known) or 'none'}; see `sr3infer models`)")


def check_model_args(args: argparse.Namespace, upscaler: Any, name: str, preset: str | None = None,
                     steps: int | None = None) -> None:
    """The options that depend on the model, checked once it is loaded and before any image is read."""
    if preset is not None and preset not in upscaler.config.presets:
        raise UsageError(f"--preset {preset}: model {name} has no such preset "
                         f"(it has: {', '.join(sorted(upscaler.config.presets)) or 'none'}); leave --preset out")
    if steps is not None and steps > upscaler.config.schedule.num_train_timesteps:
        raise UsageError(f"--steps must be at most the model's {upscaler.config.schedule.num_train_timesteps} "
                         f"training steps, got {steps}")
    size = 2 * upscaler.config.out_size + upscaler.config.scale  # large enough to need tiles
    try:
        upscaler.tile_plan((size, size), args.tile, args.tile_overlap)
    except ValueError as err:
        raise UsageError(str(err).replace("tile_size", "--tile").replace("tile_overlap", "--tile-overlap")) from None


def apply_speed_args(args: argparse.Namespace, upscaler: Any) -> None:
    """--compile and --cuda-graphs on a loaded upscaler."""
    if args.compile:
        upscaler.enable_compile()
    if args.cuda_graphs:
        if upscaler.device.type != "cuda":  # the library's message speaks Python (.to('cuda'))
            raise ValueError(f"CUDA graphs need a CUDA device, but this run is on {upscaler.device}; pass --device "
                             "cuda on a machine with a GPU, or leave --cuda-graphs out (on CPU, --compile may help)")
        upscaler.enable_cuda_graphs()


def as_usage_error(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a planning function of the library; its ValueError (and a missing input) are usage errors."""
    try:
        return function(*args, **kwargs)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err).rstrip(".")) from None
