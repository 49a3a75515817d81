"""Files and folders in, files out: the batch runner behind `sr3infer` and `sr3infer cascade`.

Every output path is planned and checked before anything is decoded (`plan_jobs`), then files run in
batches (`run_jobs`). File k of the sorted inputs always gets seed `seed + k`, whatever the batching
and ranks, and a failing batch is retried file by file, so a bad file fails alone.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from .images import io as imageio
from . import seeding
from .cascade import Cascade
from .runtime.distributed import shard_indices
from .errors import Cancelled, first_line
from .plan import CallPlan
from .size_guard import DEFAULT_MAX_OUTPUT_PIXELS
from .images.metadata import check_quality
from .images.outscale import output_size
from .quality.report import mask_paths, save_mask_overlay
from .sampling.uncertainty import save_uncertainty
from .upscaler import Upscaler

__all__ = ["Job", "BatchSummary", "collect_inputs", "ignored_entries", "plan_jobs", "run_jobs", "upscale_files", "error_line"]

OUT_OF_MEMORY_HINT = " (out of memory: try --batch-size 1, tiling with --tile, --dtype fp16/bf16, or a smaller input)"

Log = Callable[[str], None]


@dataclass
class Job:
    """One input file and every file it produces."""

    index: int                # position in the sorted inputs: the seed is seed + index
    source: Path
    outputs: dict[Path, str]  # path -> "image", "uncertainty", "stage<k>" (an earlier stage), ...
    skip: bool = False        # every output exists and skip_existing was asked

    @property
    def output(self) -> Path:
        return next(path for path, what in self.outputs.items() if what == "image")


@dataclass
class BatchSummary:
    """What a run did: files written, failed and skipped (existing), per rank when sharded."""

    written: int = 0
    failed: int = 0
    skipped: int = 0
    total: int = 0
    per_rank: list[list[int]] = field(default_factory=list)  # [written, failed, skipped] per rank
    reports: dict[str, Any] = field(default_factory=dict)    # input path -> its ImageReport
    ignored: tuple[int, int] = (0, 0)                        # subfolders, non-image files

    def line(self) -> str:
        """One line for the end of a run, e.g. "3 written, 1 failed of 4 files"."""
        skipped = f", {self.skipped} skipped (existing)" if self.skipped else ""
        text = f"{self.written} written, {self.failed} failed{skipped} of {self.total} file{'s' if self.total != 1 else ''}"
        if len(self.per_rank) > 1:
            ranks = "; ".join(f"rank {r}: {w} written, {f} failed" for r, (w, f, _) in enumerate(self.per_rank))
            text += f" ({len(self.per_rank)} ranks: {ranks})"
        ignored = [f"{n} {word}{'s' if n != 1 else ''}"
                   for n, word in zip(self.ignored, ("subfolder", "non-image file")) if n]
        return text + ("; ignored " + " and ".join(ignored) if ignored else "")


def error_line(err: BaseException) -> str:
    """The first line of an error's message, with a hint when it is out of memory."""
    message = first_line(err)
    lowered = message.lower()
    if getattr(err, "fallback_tried", False):  # runtime.oom retried and gave its hint
        return message
    if isinstance(err, MemoryError) or any(s in lowered for s in ("out of memory", "can't allocate memory",
                                                                   "cannot allocate memory", "not enough memory",
                                                                   "unable to allocate")):
        message += OUT_OF_MEMORY_HINT
    return message


# Planning: every check that needs no pixel, before the model runs.


def collect_inputs(source: str | os.PathLike) -> list[Path]:
    """The sorted image files of a folder (by suffix), or `[source]` for one regular file:
    FileNotFoundError if missing, ValueError for an empty folder or a FIFO, device or socket."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in imageio.IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no images ({', '.join(sorted(imageio.IMAGE_SUFFIXES))}) in folder {str(source)!r}")
        return files
    if not source.exists():
        raise FileNotFoundError(f"input {str(source)!r} does not exist")
    if not stat.S_ISREG(source.stat().st_mode):
        raise ValueError(f"input {str(source)!r} is not a regular file (a FIFO, device or socket); give an image file "
                         "or a folder")
    return [source]


def ignored_entries(source: str | os.PathLike) -> tuple[int, int]:
    """What `collect_inputs` leaves out of a folder: (subfolders, non-image entries)."""
    source = Path(source)
    if not source.is_dir():
        return 0, 0
    entries = list(source.iterdir())
    folders = sum(p.is_dir() for p in entries)
    images = sum(p.is_file() and p.suffix.lower() in imageio.IMAGE_SUFFIXES for p in entries)
    return folders, len(entries) - folders - images


def plan_jobs(
    inputs: Sequence[Path],
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    uncertainty: str | os.PathLike | None = None,
    uncertainty_format: str | None = None,
    report_mask: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    stage_dirs: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    skip_existing: bool = False,
    folder: bool | None = None,
) -> list[Job]:
    """The job of each input, its output paths checked before anything runs.

    A folder `source` (or an `output` ending in a separator, an existing folder, or `folder=True`)
    writes `output/NAME.png`; one file writes `output` itself. `uncertainty` and `report_mask` name
    the maps and masks (a folder for folder input), `stage_dirs` get each earlier stage's image, and
    `report` is the JSON file the caller writes after the run.

    Raises:
        ValueError: two outputs resolving to one file, an output that is an input, a format Pillow
            cannot write in RGB, an unwritable place, or `overwrite` with `skip_existing`.
        FileExistsError: an output exists and neither `overwrite` nor `skip_existing` was given.
    """
    if overwrite and skip_existing:
        raise ValueError("overwrite and skip_existing contradict each other; pass one of them")
    slash = str(output).endswith(("/", os.sep))  # before Path() drops it: `-o newdir/` is a folder
    source, output = Path(source), Path(output)
    folder_out = folder or source.is_dir() or slash or output.is_dir()
    if folder_out and output.exists() and not output.is_dir():
        why = "input is a folder, so " if source.is_dir() else ""
        raise ValueError(f"{why}-o must be a folder; {str(output)!r} is a file")
    finals = [output / (p.stem + ".png") for p in inputs] if folder_out else [output]
    maps = _map_paths(uncertainty, uncertainty_format, source, finals)
    masks = mask_paths(report_mask, source.is_dir(), finals)
    planned = []
    for index, final in enumerate(finals):
        files = [(Path(d) / final.name, f"stage{k + 1}") for k, d in enumerate(stage_dirs)] + [(final, "image")]
        planned.append(files + ([(maps[index], "uncertainty")] if maps is not None else [])
                       + ([(masks[index], "report_mask")] if masks is not None else []))
    extra = _report_file(report, overwrite)
    _check_collisions(inputs, planned, extra, folder_out)
    jobs = [Job(index, Path(src), dict(files)) for index, (src, files) in enumerate(zip(inputs, planned))]
    kinds = {path: what for job in jobs for path, what in job.outputs.items()} | dict(extra)
    checked: set[tuple[str, str, Path]] = set()  # one probe per kind, suffix and folder
    for path in sorted(kinds):
        key = (kinds[path], path.suffix.lower(), path.parent)
        if key not in checked:
            _check_writable(path, kinds[path])
            checked.add(key)
    for job in jobs:
        existing = [path for path in job.outputs if os.path.lexists(path)]
        if existing and skip_existing and len(existing) == len(job.outputs):
            job.skip = True
        elif existing and not overwrite:
            hint = "pass --overwrite to replace it" + (" or --skip-existing to leave it" if not skip_existing else "")
            raise FileExistsError(f"{str(existing[0])!r} already exists; {hint}")
    return jobs


def _map_paths(target: str | os.PathLike | None, fmt: str | None, source: Path, finals: list[Path]) -> list[Path] | None:
    if target is None:
        if fmt is not None:
            raise ValueError("--uncertainty-format needs --uncertainty PATH")
        return None
    slash = str(target).endswith(("/", os.sep))
    target = Path(target)
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise ValueError(f"input is a folder, so --uncertainty must be a folder; {str(target)!r} is a file")
        return [target / f"{out.stem}_uncertainty.{fmt or 'png'}" for out in finals]
    if fmt is not None:
        raise ValueError("--uncertainty-format is for folder input; for one file give --uncertainty a .npy or .png name")
    if target.is_dir() or slash:
        return [target / f"{finals[0].stem}_uncertainty.png"]
    return [target]


# What each kind of planned file is called in messages, and the option that names it.
_KINDS = {"image": ("the upscaled image", "-o"), "uncertainty": ("the uncertainty map", "--uncertainty"),
          "report_mask": ("the made-up mask", "--report-mask"), "report": ("the JSON report", "--report")}


def _describe(what: str, source: Path | None = None) -> str:
    """A planned file in words, e.g. "the made-up mask (--report-mask)"."""
    if what.startswith("stage"):
        return f"the {what} image (--all-stages)" + (f" of {str(source)!r}" if source is not None else "")
    if what == "image" and source is not None:
        return f"the output of {str(source)!r}"
    name, flag = _KINDS[what]
    return f"{name}{'' if source is None else f' of {str(source)!r}'} ({flag})"


def _report_file(report: str | os.PathLike | None, overwrite: bool) -> list[tuple[Path, str]]:
    """The `report` path as a planned file: no folder, no existing file without `overwrite`."""
    if report is None:
        return []
    path = Path(report)
    if str(report).endswith(("/", os.sep)) or path.is_dir():
        raise ValueError(f"--report {str(report)!r} is a folder; give a file name, e.g. {str(path / 'report.json')!r}")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"--report {str(path)!r} already exists; pass --overwrite to replace it")
    return [(path, "report")]


def _check_collisions(inputs: Sequence[Path], planned: list[list[tuple[Path, str]]],
                      extra: Sequence[tuple[Path, str]] = (), folder: bool = False) -> None:
    """No two planned files, and no output and input, are one file, by whatever spelling."""
    sources = {_resolved(Path(src)): Path(src) for src in inputs}
    owned = [(path, what, Path(inputs[index]) if folder else None)
             for index, files in enumerate(planned) for path, what in files]
    seen: dict[str, tuple[Path, str]] = {}
    for path, what, source in owned + [(path, what, None) for path, what in extra]:
        key = _resolved(path)
        if key in sources:
            raise ValueError(f"{_describe(what, source)} {str(path)!r} is the input {str(sources[key])!r}; choose "
                             "another name (an input is never replaced, even with --overwrite)")
        if key in seen:
            other, described = seen[key]
            spelled = f" (also spelled {str(path)!r})" if str(path) != str(other) else ""
            raise ValueError(f"{described} and {_describe(what, source)} would both be written to {str(other)!r}"
                             f"{spelled}; rename one of them")
        seen[key] = (path, _describe(what, source))


def _resolved(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def _check_writable(path: Path, what: str) -> None:
    """`path` has a format Pillow writes (maps: or .npy; the report: any) and a writable folder."""
    flag = "" if what == "image" or what.startswith("stage") else f"{_KINDS[what][1]} "
    if what in ("image", "report_mask") or what.startswith("stage") or (
            what == "uncertainty" and path.suffix.lower() != ".npy"):
        try:
            fmt = imageio.output_format(path)
            probe = Image.new("RGB", (1, 1))  # the format's encoder, on one RGB pixel
            probe.encoderinfo, probe.encoderconfig = {}, ()
            Image.SAVE[fmt](probe, io.BytesIO(), "probe" + path.suffix)
        except (ValueError, OSError, KeyError, TypeError) as err:
            unknown = isinstance(err, ValueError) and "Unknown output format" in str(err)
            reason = str(err).split("; use ")[0].rstrip(".") if unknown else (  # hint given below
                f"Pillow cannot write RGB images as {path.suffix.lower() or 'that'} ({first_line(err)})")
            also = " (or .npy)" if what == "uncertainty" else ""
            raise ValueError(f"{flag}{str(path)!r}: {reason}; use .png, .jpg, .webp, .tif or .bmp{also}") from None
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        if os.path.lexists(folder):  # a dangling symlink
            break
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {flag}{str(path)!r}: {str(folder)!r} is a file, not a folder; choose "
                         "another place")
    try:  # the only sure test of a place (read-only mounts, /proc, permissions): make a file there
        fd, probe_file = tempfile.mkstemp(dir=folder, prefix=".sr3infer-probe-")
        os.close(fd)
        os.unlink(probe_file)
    except OSError as err:
        raise ValueError(f"cannot write {flag}{str(path)!r}: {str(folder)!r} is not writable ({first_line(err)}); "
                         "choose another place") from None


# Running.


def run_jobs(
    model: Upscaler | Cascade,
    jobs: Sequence[Job],
    *,
    seed: int = 0,
    batch_size: int = 8,
    num_samples: int | None = None,
    overwrite: bool = False,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    progress: bool = True,
    log: Log | None = None,
    quiet: bool = False,
    rank: int = 0,
    world_size: int = 1,
    strip_metadata: bool = False,
    quality: int = 95,
    report: bool = False,
    **options: Any,
) -> BatchSummary:
    """Run this rank's share of `jobs` (every `world_size`-th, from `rank`) and write their files.

    Args:
        model: an `Upscaler`, or a `Cascade` (earlier stages go to the job's "stage<k>" paths).
        seed: file k gets `seed + k` (sample j of K: `seed + k*K + j`; cascade stages are offset).
        num_samples: K samples per file, averaged (None: the recipe's).
        batch_size: files per model call (and tiles or samples per U-Net call).
        log: where the per-file lines go ("wrote ...", "failed ..."); default stderr.
        quiet: no "wrote ..." lines (failures are always logged).
        strip_metadata: write no ICC profile, EXIF, DPI or PNG text (default: the input's).
        quality: JPEG and WebP output quality, 1 to 100.
        report: keep each file's fidelity report in `BatchSummary.reports`.
        options: the rest of `upscale` or `Cascade.run` (recipe, tiling, value_range, ...).

    Returns:
        This rank's `BatchSummary` (`total` counts every job).
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    save = {"strip_metadata": bool(strip_metadata), "quality": check_quality(quality)}
    metadata: dict[int, imageio.ImageMetadata] = {}  # file index -> its input's metadata
    if num_samples is None:  # the recipe's; a cascade's, per stage
        num_samples = 1 if isinstance(model, Cascade) else model.sampling_recipe(
            options.get("recipe"), options.get("preset")).num_samples
    if num_samples < 2 and any("uncertainty" in job.outputs.values() for job in jobs):
        raise ValueError(f"an uncertainty map needs num_samples >= 2 (--samples 2 or more), got {num_samples}")
    prefix = f"sr3infer[rank {rank}]" if world_size > 1 else "sr3infer"
    mine = [jobs[i] for i in shard_indices(len(jobs), rank, world_size)]
    summary = BatchSummary(total=len(jobs), skipped=sum(job.skip for job in mine))
    report = report or any("report_mask" in job.outputs.values() for job in jobs)
    run = _cascade_runner(model, seed, options) if isinstance(model, Cascade) else _upscaler_runner(
        model, seed, num_samples, dict(options, return_report=True) if report else options)
    common = dict(batch_size=batch_size, progress=progress, max_output_pixels=max_output_pixels)
    todo = [job for job in mine if not job.skip]
    if not quiet and rank == 0:
        line = cost_line(model, todo, options, num_samples, max_output_pixels)
        if line:
            log(f"{prefix}: {line}")
    for start in range(0, len(todo), batch_size):
        loaded = []
        for job in todo[start : start + batch_size]:  # header checked, then decoded
            step = "skipped"  # unreadable: skipped; too large: failed
            try:
                header = imageio.read_header(job.source)
                step = "failed"
                plan_file(model, (header.height, header.width), options, num_samples, max_output_pixels)
                stages = model.upscalers if isinstance(model, Cascade) else [model]
                height, width = output_size((header.height, header.width), [u.config.scale for u in stages],
                                            outscale=options.get("outscale"), size=options.get("size"))
                for path in job.outputs:  # a format too small (ICO: 256x256)
                    imageio.check_output_size(path, (width, height))
                step = "skipped"
                image, metadata[job.index] = imageio.read_image_and_metadata(job.source)
                loaded.append((job, image))
            except Exception as err:  # noqa: BLE001 - one file fails alone, MemoryError included
                step = "failed" if isinstance(err, MemoryError) else step
                log(f"{prefix}: {step} {job.source}: {error_line(err)}")
                summary.failed += 1
        for group, results, group_error in _isolated(_consecutive(loaded), lambda group: run(group, common)):
            if group_error is not None:
                log(f"{prefix}: failed {group[0][0].source}: {error_line(group_error)}")
                summary.failed += 1
                continue
            for (job, _), files in zip(group, results):
                if _write(job, files, overwrite, log if not quiet else None, prefix,
                          metadata=metadata.pop(job.index, None), **save):
                    summary.written += 1
                    summary.reports.update((str(job.source), value) for _, what, value in files if what == "report")
                else:
                    summary.failed += 1
    return summary


HEAVY_RUN_CALLS = 200
"""A run of at least this many network calls states its cost as its first line."""


def cost_line(model: Upscaler | Cascade, jobs: list[Job], options: dict[str, Any], num_samples: int,
              max_output_pixels: int | None = None) -> str | None:
    """"this run makes N network calls: about T ...", for a heavy run only, before any work: calls
    counted from the headers, the speed of one call timed now (`measure_speed`)."""
    stages = model.upscalers if isinstance(model, Cascade) else [model]
    calls = 0
    for job in jobs:
        try:
            header = imageio.read_header(job.source)
            plans = plan_file(model, (header.height, header.width), options, num_samples, max_output_pixels)
        except Exception:  # noqa: BLE001 - reported when its turn comes
            continue
        calls += sum(plan.network_calls for plan in plans)
    if calls < HEAVY_RUN_CALLS:
        return None
    per_call = stages[0].measure_speed()
    total = calls * per_call
    shown = f"{total / 60:.0f} min" if total >= 120 else f"{total:.0f} s"
    return (f"this run makes {calls:,} network calls: about {shown} at {per_call:.2f} s per call (measured now on "
            f"{stages[0].device}); fewer --steps or --samples cost less")


def _consecutive(loaded: list[tuple[Job, Any]]) -> list[list[tuple[Job, Any]]]:
    """Runs of consecutive file indices, one model call each, so seeds stay `seed + index`."""
    groups: list[list[tuple[Job, Any]]] = []
    for job, image in loaded:
        if groups and groups[-1][-1][0].index == job.index - 1:
            groups[-1].append((job, image))
        else:
            groups.append([(job, image)])
    return groups


def plan_file(model: Upscaler | Cascade, size: tuple[int, int], options: dict[str, Any], num_samples: int,
              max_output_pixels: int | None) -> list[CallPlan]:
    """Each stage's `CallPlan` for one file of `size` (h, w); its warnings are left to the run."""
    cascade = isinstance(model, Cascade)
    plans = []
    for stage, upscaler in enumerate(model.upscalers if isinstance(model, Cascade) else [model]):
        def pick(name: str) -> Any:
            value = options.get(name)
            return value[stage] if cascade and isinstance(value, (list, tuple)) else value

        recipe = upscaler.sampling_recipe(pick("recipe"), pick("preset"), num_steps=pick("num_steps"),
                                          num_samples=pick("num_samples") if cascade else num_samples)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = upscaler.plan([size], recipe, tile_size=options.get("tile_size"),
                                 tile_overlap=options.get("tile_overlap"), max_output_pixels=max_output_pixels,
                                 outscale=None if cascade else options.get("outscale"),
                                 size=None if cascade else options.get("size"))
        plans.append(plan)
        size = (size[0] * upscaler.config.scale, size[1] * upscaler.config.scale)
    return plans


Files = list[tuple[Path | None, str, Any]]  # (path, what, value) per job; the report's path is None


def _upscaler_runner(upscaler: Upscaler, seed: int, num_samples: int, options: dict[str, Any]) -> Callable:
    def run(group: list[tuple[Job, Any]], common: dict[str, Any]) -> list[Files]:
        generators = [g for job, _ in group for g in seeding.generators(seed, 1, num_samples=num_samples, first=job.index)]
        # PIL images come back as PIL, 16-bit colour PNGs (uint16 arrays) as uint16 arrays.
        out = upscaler.upscale([image for _, image in group], generator=generators, num_samples=num_samples,
                               return_dict=True, **common, **options)
        maps = out.uncertainty or [None] * len(group)
        reports = out.report or [None] * len(group)
        return [[(path, what, {"image": image, "uncertainty": uncertainty, "report_mask": (image, report)}[what])
                 for path, what in job.outputs.items()] + ([(None, "report", report)] if report is not None else [])
                for (job, _), image, uncertainty, report in zip(group, out.images, maps, reports)]

    return run


def _cascade_runner(cascade: Cascade, seed: int, options: dict[str, Any]) -> Callable:
    def run(group: list[tuple[Job, Any]], common: dict[str, Any]) -> list[Files]:
        stages = cascade.run([image for _, image in group], seed=seeding.sample_seed(seed, group[0][0].index),
                             return_all_stages=True,
                             **common, **options)
        per_file = [list(images) for images in zip(*stages)]  # each file's images by stage
        files: list[Files] = []
        for (job, _), images in zip(group, per_file):
            by_stage = {f"stage{k + 1}": image for k, image in enumerate(images[:-1])}
            by_stage["image"] = images[-1]
            files.append([(path, what, by_stage[what]) for path, what in job.outputs.items()])
        return files

    return run


def _write(job: Job, files: Files, overwrite: bool, log: Log | None, prefix: str,
           **save: Any) -> bool:
    """Write one job's files, each atomically; report and return False on the first failure."""
    for path, what, value in files:
        if what == "report":
            continue  # kept in BatchSummary.reports for the caller to write
        assert path is not None  # only the report has no file of its own
        try:
            if what == "report_mask":
                save_mask_overlay(value[0], value[1].mask, path, overwrite=overwrite)
                detail = f"made-up mask, {value[1].madeup_fraction:.2%} of pixels"
            elif what == "uncertainty":
                save_uncertainty(value, path, overwrite=overwrite)
                detail = f"uncertainty, mean std {float(np.mean(value)):.4f}"
            else:
                imageio.save_image(value, path, overwrite=overwrite, **save)
                width, height = imageio.image_size(value)
                detail = f"{width}x{height}"
        except (ValueError, OSError, TypeError) as err:
            name = {"uncertainty": "the uncertainty map ", "report_mask": "the made-up mask "}.get(what, "")
            (log or (lambda line: print(line, file=sys.stderr)))(
                f"{prefix}: failed to write {name}{path} (from {job.source}): {first_line(err)}")
            return False
        if log is not None:
            log(f"{prefix}: wrote {path} ({detail})")
    return True


def _isolated(groups: list[list], run: Callable[[list], Any]) -> Iterator[tuple[list, Any, Exception | None]]:
    """`run` each group, retrying a failing group job by job: `(group, results, error)` tuples."""
    pending = list(groups)
    while pending:
        group = pending.pop(0)
        try:
            results = run(group)
        except Cancelled:
            raise  # the caller stopped the run: no file is retried or written
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
            if len(group) > 1:
                pending[:0] = [[job] for job in group]
                continue
            yield group, None, err
            continue
        yield group, results, None


def upscale_files(
    model: Upscaler | Cascade,
    inputs: str | os.PathLike,
    output: str | os.PathLike,
    *,
    uncertainty: str | os.PathLike | None = None,
    uncertainty_format: str | None = None,
    report_mask: str | os.PathLike | None = None,
    all_stages: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    rank: int = 0,
    world_size: int = 1,
    **options: Any,
) -> BatchSummary:
    """Upscale a file or a folder of images into `output` (a file, or a folder of PNGs).

    `collect_inputs`, `plan_jobs` (every check before any work), then `run_jobs` with `options`.
    Under torchrun pass `rank` and `world_size`. With a `Cascade` and `all_stages`, earlier stages
    go to `output/stage<k>/`; `report_mask` or `report=True` fill `summary.reports`.

    Returns:
        A `BatchSummary` of this rank; `failed` counts files that could not be read, run or written.
    """
    source = Path(inputs)
    files = collect_inputs(source)
    stages = len(model.upscalers) if isinstance(model, Cascade) else 1
    stage_dirs = [Path(output) / f"stage{k + 1}" for k in range(stages - 1)] if all_stages else []
    jobs = plan_jobs(files, source, output, uncertainty=uncertainty, uncertainty_format=uncertainty_format,
                     report_mask=report_mask, stage_dirs=stage_dirs, overwrite=overwrite, skip_existing=skip_existing,
                     folder=True if isinstance(model, Cascade) else None)
    summary = run_jobs(model, jobs, overwrite=overwrite, rank=rank, world_size=world_size, **options)
    summary.ignored = ignored_entries(source)
    return summary
