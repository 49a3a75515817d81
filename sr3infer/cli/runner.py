"""Running planned jobs for `sr3infer` and `sr3infer cascade`: the model loaded per rank, the summary on rank 0."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .options import EXIT_FAILURE, EXIT_OK


def warn_if_untrained(upscaler: Any) -> None:
    """One warning line for a model with random weights, whose output is noise."""
    if upscaler.config.task.get("untrained"):
        print("sr3infer: warning: this model is an UNTRAINED demo (random weights); its output is noise.", file=sys.stderr)


def _say_sample_mean(args: argparse.Namespace, upscaler: Any, options: dict[str, Any]) -> None:
    """One line when each output is the mean of K >= 2 samples, so that a smoother result is no surprise."""
    k = options["num_samples"] or upscaler.sampling_recipe(None, options.get("preset")).num_samples
    if k >= 2 and not args.quiet:
        whose = "" if options["num_samples"] else " (the recipe's)"
        print(f"sr3infer: each output is the per-pixel mean of {k} samples{whose}, smoother than one sample; "
              "--samples 1 writes a single sample", file=sys.stderr)


def run_batch(args: argparse.Namespace, jobs: list, load: Callable[[str | None], Any], options: dict[str, Any]) -> int:
    """Load the model on this rank's device, run this rank's share of `jobs`, and report for the job on rank 0."""
    from ..batch import BatchSummary, ignored_entries, run_jobs
    from ..runtime.distributed import init_from_env

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
                warn_if_untrained(upscaler)
            if "num_samples" in options:
                _say_sample_mean(args, model, options)
        mine = run_jobs(model, jobs, seed=args.seed, batch_size=args.batch_size, overwrite=args.overwrite,
                        max_output_pixels=args.max_output_pixels, progress=not args.quiet and ctx.rank == 0,
                        quiet=args.quiet, rank=ctx.rank, world_size=ctx.world_size, tile_size=args.tile,
                        tile_overlap=args.tile_overlap, strip_metadata=args.strip_metadata, quality=args.quality,
                        **options)
        per_rank = ctx.gather_counts([mine.written, mine.failed, mine.skipped])
        if getattr(args, "report", None) is not None:  # planned with the outputs, per rank under torchrun
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
    from ..errors import first_line
    from ..quality.report import write_report

    try:
        write_report(reports, args.report, model=args.model, calibration=model.config.report.to_dict(),
                     overwrite=args.overwrite)
    except OSError as err:
        raise OSError(f"--report {args.report}: could not write it ({first_line(err)}); the images are written, "
                      "rerun with another --report PATH to get it") from None
