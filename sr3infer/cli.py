"""The `sr3infer` console command: `sr3infer INPUT -o OUTPUT` upscales; subcommands manage models."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from .samplers import SAMPLERS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_MODEL = "sr3-face-8x"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class UsageError(Exception):
    """A mistake in the command line itself (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit; we want our exit codes and one line
        raise UsageError(message)


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's measured default)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), help="sampler (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (image k of a run uses seed + k)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-size", type=int, default=8, help="images per U-Net call")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _upscale_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sr3infer",
        description="Upscale images with SR3. Subcommands: " + ", ".join(sorted(SUBCOMMANDS)) + " (sr3infer SUBCOMMAND -h).",
    )
    parser.add_argument("input", help="an image file or a folder of images")
    parser.add_argument("-o", "--output", required=True, help="output file (for one image) or folder")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")
    _add_sampling_args(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _collect_inputs(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {str(source)!r}")
        return files
    if not source.exists():
        raise UsageError(f"input {str(source)!r} does not exist")
    return [source]


def _output_paths(inputs: list[Path], source: Path, output: Path) -> list[Path]:
    if source.is_dir():
        if output.exists() and not output.is_dir():
            raise UsageError(f"input is a folder, so -o must be a folder; {str(output)!r} is a file")
        return [output / (p.stem + ".png") for p in inputs]
    if output.is_dir():
        return [output / (inputs[0].stem + ".png")]
    return [output]


def cmd_upscale(argv: list[str]) -> int:
    args = _upscale_parser().parse_args(argv)
    from . import imageio
    from .upscaler import Upscaler

    source, output = Path(args.input), Path(args.output)
    inputs = _collect_inputs(source)
    outputs = _output_paths(inputs, source, output)
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise UsageError(f"{existing[0]!r} already exists; pass --overwrite to replace it")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    upscaler = Upscaler.from_pretrained(args.model, device=args.device, torch_dtype=args.dtype)
    _warn_if_untrained(upscaler)
    failures = 0
    for start in range(0, len(inputs), args.batch_size):
        chunk = list(zip(inputs[start : start + args.batch_size], outputs[start : start + args.batch_size]))
        images = []
        for src, dst in chunk:
            try:
                images.append((imageio.load_image(src), dst))
            except (ValueError, OSError) as err:
                print(f"sr3infer: skipped {src}: {err}", file=sys.stderr)
                failures += 1
        if not images:
            continue
        results = upscaler.upscale(
            [im for im, _ in images], num_steps=args.steps, sampler=args.sampler, seed=args.seed + start,
            batch_size=args.batch_size, progress=not args.quiet, output_type="pil",
        )
        for result, (_, dst) in zip(results, images):
            imageio.save_image(result, dst, overwrite=args.overwrite)
            if not args.quiet:
                print(f"wrote {dst} ({result.width}x{result.height})", file=sys.stderr)
    return EXIT_FAILURE if failures else EXIT_OK


def _warn_if_untrained(upscaler) -> None:
    if upscaler.config.task.get("untrained"):
        print("sr3infer: warning: this model is an UNTRAINED demo (random weights); its output is noise.", file=sys.stderr)


def cmd_models(argv: list[str]) -> int:
    parser = _Parser(prog="sr3infer models", description="List the known models.")
    parser.parse_args(argv)
    from .hub import list_models

    for line in list_models():
        print(line)
    return EXIT_OK


def cmd_train(argv: list[str]) -> int:
    from .train.loop import main as train_main

    return train_main(argv)


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "models": cmd_models,
    "train": cmd_train,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 runtime failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(message)s")
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    try:
        if command is not None:
            return command(argv[1:])
        if not argv:
            _upscale_parser().print_help(sys.stderr)
            return EXIT_USAGE
        return cmd_upscale(argv)
    except UsageError as err:
        print(f"sr3infer: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("sr3infer: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # noqa: BLE001 - the one place that turns errors into a message
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "out of memory" in message.lower():
            message += " (try --batch-size 1, --dtype fp16, or tiling with --tile)"
        print(f"sr3infer: error: {message}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
