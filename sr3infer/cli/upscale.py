"""`sr3infer INPUT -o OUTPUT`: upscale an image, a folder of images or a video."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError
from ..hub.auto_pick import pick_model, size_choices
from ..hub import manifest as manifests
from ..hub.manifest import any_size_model, default_models
from .options import EXIT_OK, Parser, add_run_args, apply_speed_args, as_usage_error, check_model_args
from .options import check_model_name, check_shared_args
from .recipe_flags import recipe_settings
from .runner import run_batch, warn_if_untrained

VIDEO_DEFAULT_MODEL = "sr3-64-256"  # a video's frames are photos of any size: the photo model, tiled


def build_parser(subcommands: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the default command; its usage lists `subcommands`."""
    parser = Parser(
        prog="sr3infer",
        usage="%(prog)s INPUT -o OUTPUT [options]\n       %(prog)s {" + ",".join(subcommands) + "} ...",
        description="Upscale images with SR3. Subcommands: " + ", ".join(subcommands) + " (sr3infer SUBCOMMAND -h).",
    )
    parser.add_argument("input", help="an image file or a folder of images")
    parser.add_argument("-o", "--output", required=True, help="output file (for one image) or folder")
    try:
        manifest = manifests.load_manifest()
        bundled = "; " + ", ".join(f"{s}x{s} {name}" for s, (name, _) in default_models(manifest).items())
        fallback = any_size_model(manifest)
    except (ValueError, OSError):  # a broken $SR3INFER_MANIFEST is reported when a model is loaded
        bundled, fallback = "", None
    others = f"; other sizes: {fallback[0]}" if fallback else "; other sizes need --model"
    parser.add_argument("-V", "--version", action="version", version=f"sr3infer {_version()}")
    parser.add_argument("--model", help="model name or path (default: the bundled model trained on the inputs' size"
                                        + bundled + others + ")")
    add_run_args(parser)
    _add_ensemble_args(parser)
    _add_size_args(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def _add_size_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outscale", type=float, metavar="X",
                        help="output side = round(X x input side), any X: the model runs at its own scale, then the "
                             "result is resized (antialiased); above the model's scale it runs again on its own output")
    parser.add_argument("--size", metavar="WxH", help="the exact output size, e.g. 1920x1080 (instead of --outscale)")
    parser.add_argument("--report", metavar="PATH",
                        help="write a JSON fidelity report: per image the consistency (MSE of the downscaled output "
                             "against the input) and, with --samples 2 or more, the uncertainty's mean and 95th "
                             "percentile and the share of pixels the model made up (std over its calibrated threshold)")
    parser.add_argument("--report-mask", metavar="PATH",
                        help="write each output's made-up mask as a PNG (the output in gray, made-up pixels in "
                             "magenta; needs --samples 2 or more and a model with a calibrated threshold); for a "
                             "folder INPUT a folder: NAME_madeup.png")


def _output_options(args: argparse.Namespace) -> dict[str, Any]:
    """--outscale / --size as `upscale` arguments, checked before any work."""
    from ..images.outscale import check_outscale, parse_size

    if args.outscale is not None and args.size is not None:
        raise UsageError("pass either --outscale (a factor) or --size (WIDTHxHEIGHT), not both")
    try:
        return {"outscale": None if args.outscale is None else check_outscale(args.outscale),
                "size": None if args.size is None else parse_size(args.size)}
    except ValueError as err:
        flag = "--outscale" if args.outscale is not None else "--size"
        raise UsageError(f"{flag}: {str(err).rstrip('.')}") from None


def _add_ensemble_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, metavar="K",
                        help="draw K samples per image and write their per-pixel MEAN as the output, not one sample: "
                             "smoother, with less made-up detail, closer to the input on average (what the fidelity "
                             "presets measure best); the run says so in one line. K times the work; default: the "
                             "recipe's, one sample unless the preset was measured best as a mean of more")
    parser.add_argument("--uncertainty", metavar="PATH",
                        help="also write each image's uncertainty map, the per-pixel std of the K samples (needs "
                             "--samples 2 or more): a heat-map PNG (black: the samples agree; pale yellow: std >= 0.05 "
                             "of the pixel range), or for a PATH ending in .npy the raw float32 (H, W) array in [0, 1] "
                             "units. For a folder INPUT, PATH is a folder (it may be the -o folder) and image NAME gets "
                             "PATH/NAME_uncertainty.png (.npy with --uncertainty-format npy)")
    parser.add_argument("--uncertainty-format", choices=["png", "npy"],
                        help="folder INPUT: write the maps as heat-map PNGs (default) or raw .npy arrays")


def _check_samples(args: argparse.Namespace) -> None:
    from ..sampling.uncertainty import MAX_NUM_SAMPLES

    if args.samples is not None and not 1 <= args.samples <= MAX_NUM_SAMPLES:
        raise UsageError(f"--samples must be between 1 and {MAX_NUM_SAMPLES}, got {args.samples}")
    _check_spread_args(args, args.samples)


def _check_spread_args(args: argparse.Namespace, samples: int | None) -> None:
    """--uncertainty and --report-mask need K >= 2 samples (None: not known before the model's recipe is read)."""
    if samples is None or samples >= 2:
        return
    if args.uncertainty is not None:
        raise UsageError(f"--uncertainty needs --samples 2 or more (the spread of several samples), got "
                         f"{samples}; e.g. --samples 8")
    if getattr(args, "report_mask", None) is not None:
        raise UsageError(f"--report-mask needs --samples 2 or more (the made-up mask is where the samples disagree), "
                         f"got {samples}; e.g. --samples 4")


def cmd_upscale(argv: list[str], subcommands: Sequence[str]) -> int:
    """`sr3infer INPUT -o OUTPUT [options]`; `subcommands` are listed in its usage."""
    args = build_parser(subcommands).parse_args(argv)
    from ..video import is_video_path

    if is_video_path(args.input):
        return _upscale_video(args)
    from ..batch import collect_inputs, plan_jobs

    source = Path(args.input)
    inputs = as_usage_error(collect_inputs, source)
    settings = recipe_settings(args)
    check_shared_args(args)
    _check_samples(args)
    sizes = _output_options(args)
    # Every output, the report included, is planned and checked (collisions by any spelling, format, a writable
    # place, existing files) before the model is loaded; an existing output is a runtime failure (exit 1).
    args.report = _report_path(args.report)
    jobs = as_usage_error(plan_jobs, inputs, source, args.output, uncertainty=args.uncertainty,
                          uncertainty_format=args.uncertainty_format, report_mask=args.report_mask,
                          report=args.report, overwrite=args.overwrite, skip_existing=args.skip_existing)
    if args.model is None:
        args.model = _default_model(inputs, source)
    else:
        check_model_name(args.model, "--model")

    def load(device: str | None) -> Any:
        from ..upscaler import Upscaler

        upscaler = Upscaler.from_pretrained(args.model, device=device, torch_dtype=args.dtype)
        check_model_args(args, upscaler, args.model, settings["preset"], settings["num_steps"])
        if args.samples is None:  # the recipe's K, known now
            _check_spread_args(args, upscaler.sampling_recipe(None, settings["preset"]).num_samples)
        if args.report_mask is not None and upscaler.config.report.madeup_std_threshold is None:
            raise UsageError(f"--report-mask: model {args.model} has no calibrated made-up threshold (config.json "
                             "report.madeup_std_threshold); use --report or --uncertainty instead")
        apply_speed_args(args, upscaler)
        return upscaler

    report = args.report is not None or args.report_mask is not None
    return run_batch(args, jobs, load, dict(settings, num_samples=args.samples, report=report, **sizes))


def _upscale_video(args: argparse.Namespace) -> int:
    """`sr3infer clip.mp4 -o clip_x4.mp4`: every frame with the same seed, audio and timing copied (sr3infer.video)."""
    from ..video import VIDEO_SUFFIXES, is_video_path, upscale_video

    settings = recipe_settings(args)
    check_shared_args(args)
    _check_samples(args)
    sizes = _output_options(args)
    for flag, value in (("--uncertainty", args.uncertainty), ("--report", args.report),
                        ("--report-mask", args.report_mask), ("--skip-existing", args.skip_existing)):
        if value:
            raise UsageError(f"{flag} is for images; a video INPUT writes one video (upscale frames you extracted "
                             "to get per-frame maps or reports)")
    if not Path(args.input).exists():
        raise UsageError(f"input {args.input!r} does not exist")
    if not is_video_path(args.output):
        raise UsageError(f"-o {args.output}: a video INPUT is written as a video; expected a name ending in "
                         f"{', '.join(VIDEO_SUFFIXES)}")
    if args.model is None:
        args.model = VIDEO_DEFAULT_MODEL
        print(f"sr3infer: no --model given; using {VIDEO_DEFAULT_MODEL} (photos, x4) for the video's frames",
              file=sys.stderr)
    else:
        check_model_name(args.model, "--model")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from ..upscaler import Upscaler

    upscaler = Upscaler.from_pretrained(args.model, device=args.device, torch_dtype=args.dtype)
    check_model_args(args, upscaler, args.model, settings["preset"], settings["num_steps"])
    apply_speed_args(args, upscaler)
    warn_if_untrained(upscaler)
    result = upscale_video(upscaler, args.input, args.output, seed=args.seed, overwrite=args.overwrite,
                           progress=not args.quiet, batch_size=args.batch_size, tile_size=args.tile,
                           tile_overlap=args.tile_overlap, max_output_pixels=args.max_output_pixels,
                           num_samples=args.samples, **settings, **sizes)
    if not args.quiet:
        print(f"sr3infer: wrote {result.line()}", file=sys.stderr)
    return EXIT_OK


def _report_path(report: str | None) -> str | None:
    """--report PATH, or under torchrun this rank's PATH.rank<r>.json (one JSON per rank)."""
    from ..runtime.distributed import launched_by_torchrun

    if report is None or not launched_by_torchrun():
        return report
    path = Path(report)
    return str(path.with_suffix(f".rank{os.environ['RANK']}{path.suffix}"))


def _default_model(inputs: list[Path], source: Path) -> str:
    """The model for a run without --model (`sr3infer.hub.auto_pick`), said with the reason on stderr."""
    from ..images.io import peek_sizes

    files: dict[tuple[int, int], list[str]] = {}  # (h, w) -> the files of that size; unreadable ones fail later
    for path in inputs:
        for size in peek_sizes(path):
            files.setdefault(size, []).append(path.name)
    sizes = set(files)
    if not sizes:
        raise UsageError(f"no --model given, and no image in {str(source)!r} could be read to pick a model by its "
                         "size; pass --model")
    picked = pick_model(sizes)
    if picked is not None:
        name, why = picked
        print(f"sr3infer: no --model given; using {why}", file=sys.stderr)
        return name
    got = _sizes_of_files(files) if source.is_dir() else ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
    trained = size_choices()
    holds = "holds" if source.is_dir() else "is"
    raise UsageError(f"no --model given, and {str(source)!r} {holds} {got}, not one bundled model's trained input size "
                     f"({trained}); pass --model, e.g. --model sr3-64-256 for photos (larger inputs run by tiles)")


def _sizes_of_files(files: dict[tuple[int, int], list[str]], shown: int = 3) -> str:
    """e.g. "16x16 (a.png, b.png and 4 more), 64x64 (c.png)": a few files per size, then a count."""
    def few(items: list[str], what: str = "") -> str:
        more = f" and {len(items) - shown} more{what}" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    return few([f"{w}x{h} ({few(files[h, w])})" for h, w in sorted(files)], " sizes")
