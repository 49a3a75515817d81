"""The `sr3infer` console command: `sr3infer INPUT -o OUTPUT` upscales; subcommands manage models."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, NoReturn

from . import seeding
from .errors import UsageError
from .models.config import CONSISTENCY_MODES, PRESETS
from .size_guard import DEFAULT_MAX_OUTPUT_PIXELS
from .hub.manifest import default_models
from .sampling.samplers import SAMPLERS
from .sampling.schedule import SPACINGS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MAX_THREADS_PER_CPU = 4  # --threads above os.cpu_count() x this is refused (100000 threads crash torch)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit; we want our exit codes and one line
        raise UsageError(message)


# name: (flag, parse one value, choices or None, metavar, help). One value, or for `cascade` one per stage.
RECIPE_OPTIONS: dict[str, tuple[str, Callable[[str], Any], list[str] | None, str, str]] = {
    "num_steps": ("--steps", int, None, "N", "denoising steps (default: the model's measured default)"),
    "sampler": ("--sampler", str, sorted(SAMPLERS), "S", "sampler (default: the model's)"),
    "spacing": ("--spacing", str, list(SPACINGS), "S", "how fewer steps pick noise levels (default: the model's)"),
    "consistency": ("--consistency", str, list(CONSISTENCY_MODES), "C",
                    "project onto the input: none, final (the output), every (each step); default: the model's"),
    "preset": ("--preset", str, list(PRESETS), "P",
               "the model's named recipe: fidelity (best PSNR) or realism (lowest KID at a PSNR floor); "
               "--steps/--sampler/--spacing/--consistency/--eta override parts of it (default: the model's default "
               "recipe)"),
    "eta": ("--eta", float, None, "X", "DDIM stochasticity, 0 (deterministic) to 1 (default: the recipe's)"),
}


def _add_run_args(parser: argparse.ArgumentParser, *, per_stage: bool = False) -> None:
    """The options of every command that runs models: recipe, seed, device, batching, tiling, speed.

    With `per_stage` (cascade) each recipe option takes one value for all stages or a comma-separated one per stage.
    """
    for flag, convert, choices, metavar, text in RECIPE_OPTIONS.values():
        if per_stage:
            listed = f" ({', '.join(choices)})" if choices else ""
            parser.add_argument(flag, metavar=f"{metavar}[,{metavar}...]",
                                help=f"{text}{listed}; one value for all stages or one per stage")
        else:
            parser.add_argument(flag, type=convert, choices=choices, help=text)
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


def _recipe_settings(args: argparse.Namespace, stages: int | None = None) -> dict[str, Any]:
    """The recipe options as `upscale` arguments (for `stages`, lists with one value per stage), checked."""
    settings: dict[str, Any] = {}
    for name, (flag, convert, choices, _, _) in RECIPE_OPTIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        values = [value] if stages is None else _split_per_stage(value, flag, convert, stages)
        for v in values:
            if choices is not None and v is not None and v not in choices:
                raise UsageError(f"argument {flag}: invalid choice: {v!r} (choose from {', '.join(choices)})")
        settings[name] = values[0] if stages is None else values
    for value in ([settings["num_steps"]] if stages is None else settings["num_steps"]):
        if value is not None and value < 1:
            raise UsageError(f"--steps must be at least 1, got {value}")
    for value in ([settings["eta"]] if stages is None else settings["eta"]):
        if value is not None and not 0 <= value <= 1:
            raise UsageError(f"--eta must be between 0 and 1, got {value}")
    return settings


def _upscale_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sr3infer",
        usage="%(prog)s INPUT -o OUTPUT [options]\n       %(prog)s {" + ",".join(sorted(SUBCOMMANDS)) + "} ...",
        description="Upscale images with SR3. Subcommands: " + ", ".join(sorted(SUBCOMMANDS)) + " (sr3infer SUBCOMMAND -h).",
    )
    parser.add_argument("input", help="an image file or a folder of images")
    parser.add_argument("-o", "--output", required=True, help="output file (for one image) or folder")
    try:
        bundled = "; " + ", ".join(f"{s}x{s} {name}" for s, (name, _) in default_models().items())
    except (ValueError, OSError):  # a broken $SR3INFER_MANIFEST is reported when a model is loaded
        bundled = ""
    parser.add_argument("-V", "--version", action="version", version=f"sr3infer {_version()}")
    parser.add_argument("--model", help="model name or path (default: the bundled model trained on the inputs' size"
                                        + bundled + "; other sizes need --model)")
    _add_run_args(parser)
    _add_ensemble_args(parser)
    _add_size_args(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


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
    from .images.outscale import check_outscale, parse_size

    if args.outscale is not None and args.size is not None:
        raise UsageError("pass either --outscale (a factor) or --size (WIDTHxHEIGHT), not both")
    try:
        return {"outscale": None if args.outscale is None else check_outscale(args.outscale),
                "size": None if args.size is None else parse_size(args.size)}
    except ValueError as err:
        flag = "--outscale" if args.outscale is not None else "--size"
        raise UsageError(f"{flag}: {str(err).rstrip('.')}") from None


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


def _check_shared_args(args: argparse.Namespace) -> None:
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

    from .runtime.devices import resolve_device

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


def _check_model_name(name: str, flag: str) -> None:
    """A model that is no folder, no .safetensors file and no known name is a usage error, said before any work."""
    from .hub.manifest import load_manifest

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
    from .sampling.uncertainty import MAX_NUM_SAMPLES

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


def _check_model_args(args: argparse.Namespace, upscaler, name: str, preset: str | None = None,
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


def _add_speed_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 per rank under torchrun)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the U-Net (slow first call per shape; falls back to eager if unavailable)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the U-Net call from CUDA graphs (CUDA only)")


def _apply_speed_args(args: argparse.Namespace, upscaler) -> None:
    if args.compile:
        upscaler.enable_compile()
    if args.cuda_graphs:
        if upscaler.device.type != "cuda":  # the library's message speaks Python (.to('cuda'))
            raise ValueError(f"CUDA graphs need a CUDA device, but this run is on {upscaler.device}; pass --device "
                             "cuda on a machine with a GPU, or leave --cuda-graphs out (on CPU, --compile may help)")
        upscaler.enable_cuda_graphs()


def _library(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a planning function of the library; its ValueError (and a missing input) are usage errors."""
    try:
        return function(*args, **kwargs)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err).rstrip(".")) from None


def cmd_upscale(argv: list[str]) -> int:
    args = _upscale_parser().parse_args(argv)
    from .video import is_video_path

    if is_video_path(args.input):
        return _upscale_video(args)
    from .batch import collect_inputs, plan_jobs

    source = Path(args.input)
    inputs = _library(collect_inputs, source)
    settings = _recipe_settings(args)
    _check_shared_args(args)
    _check_samples(args)
    sizes = _output_options(args)
    # Every output, the report included, is planned and checked (collisions by any spelling, format, a writable
    # place, existing files) before the model is loaded; an existing output is a runtime failure (exit 1).
    args.report = _report_path(args.report)
    jobs = _library(plan_jobs, inputs, source, args.output, uncertainty=args.uncertainty,
                    uncertainty_format=args.uncertainty_format, report_mask=args.report_mask, report=args.report,
                    overwrite=args.overwrite, skip_existing=args.skip_existing)
    if args.model is None:
        args.model = _default_model(inputs, source)
    else:
        _check_model_name(args.model, "--model")

    def load(device: str | None) -> Any:
        from .upscaler import Upscaler

        upscaler = Upscaler.from_pretrained(args.model, device=device, torch_dtype=args.dtype)
        _check_model_args(args, upscaler, args.model, settings["preset"], settings["num_steps"])
        if args.samples is None:  # the recipe's K, known now
            _check_spread_args(args, upscaler.sampling_recipe(None, settings["preset"]).num_samples)
        if args.report_mask is not None and upscaler.config.report.madeup_std_threshold is None:
            raise UsageError(f"--report-mask: model {args.model} has no calibrated made-up threshold (config.json "
                             "report.madeup_std_threshold); use --report or --uncertainty instead")
        _apply_speed_args(args, upscaler)
        return upscaler

    report = args.report is not None or args.report_mask is not None
    return _run_batch(args, jobs, load, dict(settings, num_samples=args.samples, report=report, **sizes))


VIDEO_DEFAULT_MODEL = "sr3-64-256"  # a video's frames are photos of any size: the photo model, tiled


def _upscale_video(args: argparse.Namespace) -> int:
    """`sr3infer clip.mp4 -o clip_x4.mp4`: every frame with the same seed, audio and timing copied (sr3infer.video)."""
    from .video import VIDEO_SUFFIXES, is_video_path, upscale_video

    settings = _recipe_settings(args)
    _check_shared_args(args)
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
        _check_model_name(args.model, "--model")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from .upscaler import Upscaler

    upscaler = Upscaler.from_pretrained(args.model, device=args.device, torch_dtype=args.dtype)
    _check_model_args(args, upscaler, args.model, settings["preset"], settings["num_steps"])
    _apply_speed_args(args, upscaler)
    _warn_if_untrained(upscaler)
    result = upscale_video(upscaler, args.input, args.output, seed=args.seed, overwrite=args.overwrite,
                           progress=not args.quiet, batch_size=args.batch_size, tile_size=args.tile,
                           tile_overlap=args.tile_overlap, max_output_pixels=args.max_output_pixels,
                           num_samples=args.samples, **settings, **sizes)
    if not args.quiet:
        print(f"sr3infer: wrote {result.line()}", file=sys.stderr)
    return EXIT_OK


def _report_path(report: str | None) -> str | None:
    """--report PATH, or under torchrun this rank's PATH.rank<r>.json (one JSON per rank)."""
    from .runtime.distributed import launched_by_torchrun

    if report is None or not launched_by_torchrun():
        return report
    path = Path(report)
    return str(path.with_suffix(f".rank{os.environ['RANK']}{path.suffix}"))


def _say_sample_mean(args: argparse.Namespace, upscaler, options: dict[str, Any]) -> None:
    """One line when each output is the mean of K >= 2 samples, so that a smoother result is no surprise."""
    k = options["num_samples"] or upscaler.sampling_recipe(None, options.get("preset")).num_samples
    if k >= 2 and not args.quiet:
        whose = "" if options["num_samples"] else " (the recipe's)"
        print(f"sr3infer: each output is the per-pixel mean of {k} samples{whose}, smoother than one sample; "
              "--samples 1 writes a single sample", file=sys.stderr)


def _run_batch(args: argparse.Namespace, jobs: list, load: Callable[[str | None], Any], options: dict[str, Any]) -> int:
    """Load the model on this rank's device, run this rank's share of `jobs`, and report for the job on rank 0."""
    from .batch import BatchSummary, ignored_entries, run_jobs
    from .runtime.distributed import init_from_env

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    # Under torchrun every rank takes every len(inputs)/WORLD_SIZE-th file of the sorted list.
    ctx = init_from_env(args.device)
    try:
        ctx.barrier()  # every rank checked for existing outputs before any rank writes one
        model = load(ctx.device)
        if ctx.rank == 0:
            for upscaler in getattr(model, "upscalers", [model]):
                _warn_if_untrained(upscaler)
            if "num_samples" in options:
                _say_sample_mean(args, model, options)
        mine = run_jobs(model, jobs, seed=args.seed, batch_size=args.batch_size, overwrite=args.overwrite,
                        max_output_pixels=args.max_output_pixels, progress=not args.quiet and ctx.rank == 0,
                        quiet=args.quiet, rank=ctx.rank, world_size=ctx.world_size, tile_size=args.tile,
                        tile_overlap=args.tile_overlap, strip_metadata=args.strip_metadata, quality=args.quality,
                        **options)
        per_rank = ctx.gather_counts([mine.written, mine.failed, mine.skipped])
        if getattr(args, "report", None) is not None:  # planned with the outputs (_report_path)
            _write_report(args, mine.reports, model)
    finally:
        ctx.close()
    if ctx.rank != 0:
        return EXIT_OK  # rank 0 reports for the job; a non-zero exit here would make torchrun kill rank 0 mid-summary
    written, failed, skipped = (sum(counts[k] for counts in per_rank) for k in range(3))
    summary = BatchSummary(written, failed, skipped, total=len(jobs), per_rank=per_rank,
                           ignored=ignored_entries(args.input))
    if (len(jobs) > 1 or any(summary.ignored)) and not (args.quiet and not summary.failed):
        print(f"sr3infer: {summary.line()}", file=sys.stderr)
    return EXIT_FAILURE if summary.failed else EXIT_OK


def _write_report(args: argparse.Namespace, reports: dict[str, Any], model: Any) -> None:
    """Write --report; a failure this late (a full disk) names the report, and the images stay."""
    from .errors import first_line
    from .quality.report import write_report

    try:
        write_report(reports, args.report, model=args.model, calibration=model.config.report.to_dict(),
                     overwrite=args.overwrite)
    except OSError as err:
        raise OSError(f"--report {args.report}: could not write it ({first_line(err)}); the images are written, "
                      "rerun with another --report PATH to get it") from None


def _default_model(inputs: list[Path], source: Path) -> str:
    """The model for a run without --model: the bundled one trained on the inputs' size, said on stderr."""
    from .images.io import peek_sizes

    models = default_models()
    files: dict[tuple[int, int], list[str]] = {}  # (h, w) -> the files of that size; unreadable ones fail later
    for path in inputs:
        for size in peek_sizes(path):
            files.setdefault(size, []).append(path.name)
    sizes = set(files)
    if not sizes:
        raise UsageError(f"no --model given, and no image in {str(source)!r} could be read to pick a model by its "
                         "size; pass --model")
    sides = {h for h, w in sizes if h == w and h in models}
    if len(sizes) == len(sides) == 1:
        side = sides.pop()
        name, domain = models[side]
        print(f"sr3infer: no --model given; using {name} ({domain}), the bundled model trained on {side}x{side} inputs",
              file=sys.stderr)
        return name
    got = _sizes_of_files(files) if source.is_dir() else ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
    trained = ", ".join(f"{s}x{s} ({name}, {domain})" for s, (name, domain) in models.items())
    holds = "holds" if source.is_dir() else "is"
    raise UsageError(f"no --model given, and {str(source)!r} {holds} {got}, not one bundled model's trained input size "
                     f"({trained}); pass --model, e.g. --model sr3-64-256 for photos (larger inputs run by tiles)")


def _sizes_of_files(files: dict[tuple[int, int], list[str]], shown: int = 3) -> str:
    """e.g. "16x16 (a.png, b.png and 4 more), 64x64 (c.png)": a few files per size, then a count."""
    def few(items: list[str], what: str = "") -> str:
        more = f" and {len(items) - shown} more{what}" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    return few([f"{w}x{h} ({few(files[h, w])})" for h, w in sorted(files)], " sizes")


def _warn_if_untrained(upscaler) -> None:
    if upscaler.config.task.get("untrained"):
        print("sr3infer: warning: this model is an UNTRAINED demo (random weights); its output is noise.", file=sys.stderr)


def cmd_models(argv: list[str]) -> int:
    parser = _Parser(prog="sr3infer models", description="List the known models and where each would load from.")
    parser.add_argument("--cache-dir", help="Hub cache folder (default $HF_HUB_CACHE, else $HF_HOME/hub)")
    args = parser.parse_args(argv)
    from .hub.fetch import list_models

    rows = [("NAME", "SCALE", "SIZE", "DOMAIN", "CACHED", "LOADS FROM")]
    for m in list_models(cache_dir=args.cache_dir):
        rows.append((m.name, f"x{m.task.scale}", f"{m.task.input_size}->{m.task.output_size}", m.task.domain,
                     "yes" if m.cached else "no", f"{m.source} ({m.location})"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK


def cmd_download(argv: list[str]) -> int:
    parser = _Parser(prog="sr3infer download",
                     description="Fetch a model's files into the Hugging Face cache and check their sha256, for offline use.")
    parser.add_argument("name", help="model name (see `sr3infer models`)")
    parser.add_argument("--revision", help="Hub branch, tag or commit (default: the manifest's pinned revision)")
    parser.add_argument("--cache-dir", help="Hub cache folder (default $HF_HUB_CACHE, else $HF_HOME/hub)")
    args = parser.parse_args(argv)
    from .hub.fetch import download_model
    from .hub.manifest import REQUIRED_FILES, load_manifest

    manifest = load_manifest()
    entry = manifest.get(args.name)
    folder = manifest.bundled_dir(entry.name)
    if not entry.published and entry.bundled and all((folder / f).is_file() for f in REQUIRED_FILES):
        print(f"{entry.name} is bundled with this install ({folder}); nothing to download "
              f"(its Hub repo {entry.repo_id} is not published yet).", file=sys.stderr)
        return EXIT_OK
    for path in download_model(args.name, revision=args.revision, cache_dir=args.cache_dir).values():
        print(path)
    return EXIT_OK


def cmd_convert(argv: list[str]) -> int:
    parser = _Parser(prog="sr3infer convert",
                     description="Turn a community SR3 checkpoint (*_gen.pth or .safetensors) into a model folder.")
    parser.add_argument("checkpoint", help="the *_gen.pth (opened with torch.load(weights_only=True)) or .safetensors")
    parser.add_argument("-o", "--output", required=True, help="model folder to write (config.json, model.safetensors, README.md)")
    parser.add_argument("--norm-groups", type=int,
                        help="GroupNorm groups, not stored in checkpoints: 32 for the released 16->128 model (default), 16 for 64->512")
    parser.add_argument("--scale", type=int, default=8, help="output side / input side (default 8, as both released models)")
    parser.add_argument("--image-size", type=int, help="training output size (default: the file's metadata, else 128)")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="tensor type written (default fp32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace those three files where the output folder has them (else nothing is written)")
    args = parser.parse_args(argv)
    for flag, value in (("--norm-groups", args.norm_groups), ("--scale", args.scale), ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o must be a folder; {str(output)!r} is a file")
    import torch

    from .models.checkpoints import conversion_card, load_community_checkpoint
    from .hub.manifest import sha256_file
    from .models.weights import build_model, existing_model_files, save_model_folder

    taken = [] if args.overwrite else existing_model_files(output)
    if taken:
        raise UsageError(f"-o {str(output)!r} already holds {', '.join(taken)}; pass --overwrite to replace them, "
                         "or name a new folder")
    config, state = load_community_checkpoint(args.checkpoint, scale=args.scale, norm_groups=args.norm_groups,
                                              image_size=args.image_size)
    build_model(config, state)  # every tensor must fit the inferred architecture before anything is written
    card = conversion_card(config, args.checkpoint, sha256_file(args.checkpoint))
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    save_model_folder(output, config, state, dtype=dtype, card=card, overwrite=args.overwrite)
    u = config.network
    print(f"wrote {output}: x{config.scale} {config.lowres_size}->{config.out_size}, inner_channel {u.inner_channel}, "
          f"channel_mults {list(u.channel_mults)}, norm_groups {u.norm_groups}, {len(state)} tensors ({args.dtype})",
          file=sys.stderr)
    return EXIT_OK


def cmd_publish(argv: list[str]) -> int:
    parser = _Parser(prog="sr3infer publish", description="Upload a model folder to the Hugging Face Hub.")
    parser.add_argument("folder", help="model folder (config.json + model.safetensors [+ README.md])")
    parser.add_argument("--repo-id", required=True, help="Hub repo, owner/name (created if missing)")
    parser.add_argument("--name", help="model name for the manifest entry (default: the repo's name)")
    parser.add_argument("--revision", help="branch to commit to (default main)")
    parser.add_argument("--token", help="Hub token with write access (default $HF_TOKEN or the saved login)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent and the manifest entry; upload nothing")
    args = parser.parse_args(argv)
    import json

    from .hub.fetch import plan_publish, publish_model
    from .hub.manifest import model_entry_to_dict

    files, entry = plan_publish(args.folder, args.repo_id, name=args.name, revision=args.revision or "main")
    if args.dry_run:
        print(f"would upload {len(files)} files from {args.folder} to {args.repo_id} (revision {entry.revision}):")
        width = max(len(f.name) for f in files)
        for f in files:
            print(f"  {f.name.ljust(width)}  {f.size:>12,} bytes  sha256 {f.sha256}")
        print("manifest entry (publishing replaces revision with the upload's commit):")
    else:
        entry = publish_model(args.folder, args.repo_id, name=args.name, revision=args.revision, token=args.token)
        print(f"published {args.repo_id} at commit {entry.revision}; manifest entry:", file=sys.stderr)
    print(json.dumps({entry.name: model_entry_to_dict(entry)}, indent=2))
    return EXIT_OK


def cmd_eval(argv: list[str]) -> int:
    from .train.evaluate import main as eval_main

    return eval_main(argv)


def cmd_train(argv: list[str]) -> int:
    from .train.loop import main as train_main

    return train_main(argv)


def cmd_demo(argv: list[str]) -> int:
    parser = _Parser(prog="sr3infer demo", description="Serve a web page to try the models (needs the demo extra: "
                                                       'pip install -e ".[demo]"). Ctrl-C stops it.')
    parser.add_argument("--model", help="a model name or path to offer beside the bundled ones, selected at start "
                                        "(default: the bundled model trained on each upload's size)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    args = parser.parse_args(argv)
    from .demo import MissingExtra, serve

    try:
        serve(model=args.model, host=args.host, port=args.port)
    except MissingExtra as err:
        raise UsageError(str(err)) from None
    return EXIT_OK


def _split_per_stage(value: str | None, flag: str, convert: Callable[[str], object], stages: int) -> list:
    """`--flag a,b` -> one value per stage (a single value applies to every stage); None -> [None] * stages."""
    if value is None:
        return [None] * stages
    try:
        items = [convert(part.strip()) for part in value.split(",")]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated values, got {value!r}") from None
    if len(items) == 1:
        return items * stages
    if len(items) != stages:
        raise UsageError(f"{flag} has {len(items)} values for {stages} stages; give one value or one per stage")
    return items


def cmd_cascade(argv: list[str]) -> int:
    parser = _Parser(prog="sr3infer cascade",
                     description="Upscale a folder of base-generator samples (e.g. 64x64) through SR3 stages in turn.")
    parser.add_argument("input", help="a folder of images (or one image), e.g. a base generator's samples")
    parser.add_argument("-o", "--output", required=True, help="output folder (one PNG per input, same name)")
    parser.add_argument("--stages", required=True, metavar="NAME[,NAME...]",
                        help="model names or paths, first stage first, e.g. sr3-64-256 or sr3-64-256,sr3-64-256")
    parser.add_argument("--noise-level", metavar="X[,X...]",
                        help="conditioning augmentation: std of Gaussian noise added to each stage's input in "
                             "[-1, 1] units (default 0)")
    _add_run_args(parser, per_stage=True)
    parser.add_argument("--all-stages", action="store_true",
                        help="also write each earlier stage's output to OUTPUT/stage<k>/")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.stages.split(",") if name.strip()]
    if not names:
        raise UsageError("--stages needs at least one model name or path")
    settings = _recipe_settings(args, len(names))
    levels = _split_per_stage(args.noise_level, "--noise-level", float, len(names))
    if any(x is not None and not x >= 0 for x in levels):
        raise UsageError(f"--noise-level must be at least 0, got {args.noise_level}")
    _check_shared_args(args)
    from .batch import collect_inputs, plan_jobs

    source, output = Path(args.input), Path(args.output)
    inputs = _library(collect_inputs, source)
    stage_dirs = [output / f"stage{k + 1}" for k in range(len(names) - 1)] if args.all_stages else []
    jobs = _library(plan_jobs, inputs, source, output, stage_dirs=stage_dirs, overwrite=args.overwrite,
                    skip_existing=args.skip_existing, folder=True)
    for name in names:
        _check_model_name(name, "--stages")

    def load(device: str | None) -> Any:
        from .cascade import Cascade

        cascade = Cascade.from_pretrained(names, device=device, torch_dtype=args.dtype)
        for s, upscaler in enumerate(cascade.upscalers):
            _check_model_args(args, upscaler, names[s], settings["preset"][s], settings["num_steps"][s])
            _apply_speed_args(args, upscaler)
        return cascade

    return _run_batch(args, jobs, load, dict(settings, noise_level=[x or 0.0 for x in levels]))


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "models": cmd_models,
    "download": cmd_download,
    "convert": cmd_convert,
    "publish": cmd_publish,
    "train": cmd_train,
    "eval": cmd_eval,
    "cascade": cmd_cascade,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 runtime failure, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(message)s")
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    with warnings.catch_warnings(), _terminate_like_interrupt():
        warnings.showwarning = _show_warning
        return _run(command, argv, debug)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the run is, so that it unwinds like Ctrl-C (temporary files removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _terminate_like_interrupt:
    """While a command runs, SIGTERM and SIGHUP raise `Terminated` (main thread only; handlers restored after)."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __enter__(self) -> None:
        self.previous = {}
        try:
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._raise)
        except ValueError:  # not the main thread: leave signals alone
            pass

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """Library warnings (trained size, long runs, bit depth) as one `sr3infer: warning: ...` line each."""
    print(f"sr3infer: warning: {message}", file=sys.stderr)


def _run(command: Callable[[list[str]], int] | None, argv: list[str], debug: bool) -> int:
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
    except Terminated as err:  # the shell's convention: 128 + the signal (SIGTERM 143, SIGHUP 129)
        print(f"sr3infer: terminated by {signal.Signals(err.signum).name}; complete outputs kept, no temporary files",
              file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("sr3infer: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # noqa: BLE001 - the one place that turns errors into a message
        if debug:
            raise
        from .batch import error_line

        print(f"sr3infer: error: {error_line(err)}", file=sys.stderr)
        return EXIT_FAILURE


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
