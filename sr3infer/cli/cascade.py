"""`sr3infer cascade`: a folder of base-generator samples through SR3 stages in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from .options import Parser, add_run_args, apply_speed_args, as_usage_error, check_model_args
from .options import check_model_name, check_shared_args
from .recipe_flags import recipe_settings, split_per_stage
from .runner import run_batch


def cmd_cascade(argv: list[str]) -> int:
    parser = Parser(prog="sr3infer cascade",
                    description="Upscale a folder of base-generator samples (e.g. 64x64) through SR3 stages in turn.")
    parser.add_argument("input", help="a folder of images (or one image), e.g. a base generator's samples")
    parser.add_argument("-o", "--output", required=True, help="output folder (one PNG per input, same name)")
    parser.add_argument("--stages", required=True, metavar="NAME[,NAME...]",
                        help="model names or paths, first stage first, e.g. sr3-64-256 or sr3-64-256,sr3-64-256")
    parser.add_argument("--noise-level", metavar="X[,X...]",
                        help="conditioning augmentation: std of Gaussian noise added to each stage's input in "
                             "[-1, 1] units (default 0)")
    add_run_args(parser, per_stage=True)
    parser.add_argument("--all-stages", action="store_true",
                        help="also write each earlier stage's output to OUTPUT/stage<k>/")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.stages.split(",") if name.strip()]
    if not names:
        raise UsageError("--stages needs at least one model name or path")
    settings = recipe_settings(args, len(names))
    levels = split_per_stage(args.noise_level, "--noise-level", float, len(names))
    if any(x is not None and not x >= 0 for x in levels):
        raise UsageError(f"--noise-level must be at least 0, got {args.noise_level}")
    check_shared_args(args)
    from ..batch import collect_inputs, plan_jobs

    source, output = Path(args.input), Path(args.output)
    inputs = as_usage_error(collect_inputs, source)
    stage_dirs = [output / f"stage{k + 1}" for k in range(len(names) - 1)] if args.all_stages else []
    jobs = as_usage_error(plan_jobs, inputs, source, output, stage_dirs=stage_dirs, overwrite=args.overwrite,
                          skip_existing=args.skip_existing, folder=True)
    for name in names:
        check_model_name(name, "--stages")

    def load(device: str | None) -> Any:
        from ..cascade import Cascade

        cascade = Cascade.from_pretrained(names, device=device, torch_dtype=args.dtype)
        for s, upscaler in enumerate(cascade.upscalers):
            check_model_args(args, upscaler, names[s], settings["preset"][s], settings["num_steps"][s])
            apply_speed_args(args, upscaler)
        return cascade

    return run_batch(args, jobs, load, dict(settings, noise_level=[x or 0.0 for x in levels]))
