"""`sr3infer demo`: a local Gradio page to try the models; `DemoRunner` does the work without
Gradio, `build_demo` lays out the page and `serve` starts it on 127.0.0.1, one job at a time."""

from __future__ import annotations

import dataclasses
import html
import math
import shutil
import sys
import tempfile
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from .images import io as imageio
from .errors import first_line
from .size_guard import check_run
from .hub.auto_pick import pick_model, size_choices
from .hub.manifest import any_size_model, default_models  # as the CLI picks
from .images.resample import bicubic
from .sampling.uncertainty import HEATMAP_MAX, heatmap

__all__ = ["MissingExtra", "RunTimeout", "DemoResult", "DemoRunner", "summary", "build_demo", "example_files",
           "exposure_warning", "serve"]

EXTRA = 'the demo needs Gradio, which is not installed; install the demo extra: pip install -e ".[demo]"'
AUTO = "auto (by input size)"
MAX_OUTPUT_PIXELS = 1024 * 1024
"""The page's size guard: outputs up to 1024x1024 (the library's check, sized for a CPU server)."""
TIME_LIMIT_S = 120.0
"""Each run stops, with a message, before a denoising step that would end past this many seconds."""
MAX_SAMPLES = 16
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"  # not in a wheel
EXAMPLES = ("face_16.png", "photo_64.png")
PREVIEW_SIDE = 128
UPLOAD_CONCURRENCY = 2  # uploads described at once (header, model, small decode)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
KEEP_RUNS = 8  # result folders kept on disk for the download buttons


def example_files() -> list[str]:
    """The example pictures of `EXAMPLES` that exist."""
    return [str(EXAMPLES_DIR / name) for name in EXAMPLES if (EXAMPLES_DIR / name).is_file()]


class MissingExtra(ImportError):
    """Gradio is not installed; the message names the extra to install."""


def _gradio() -> Any:
    try:
        import gradio
    except ImportError:
        raise MissingExtra(EXTRA) from None
    return gradio


class RunTimeout(RuntimeError):
    """A run went over the page's time limit (raised from the sampler's callback)."""


@dataclass
class DemoResult:
    """One run of the page: the pictures it shows and the numbers under them."""

    model: str
    recipe: Any                      # the Recipe that ran
    samples: int
    before: Image.Image              # the input enlarged (nearest neighbour) to the output size
    bicubic: Image.Image             # the input's bicubic upsampling, for comparison
    result: Image.Image              # 8-bit RGB(A), as shown
    result_path: Path                # the PNG to download (16-bit when the input was)
    uncertainty: np.ndarray | None   # (H, W) std of the K samples in [0, 1]; None for K = 1
    overlay: Image.Image | None      # the result with the uncertainty map laid over it
    map_path: Path | None            # the uncertainty heat map PNG
    consistency: float               # RMS of bicubic(output) - input, in [0, 1]
    seconds: float
    warnings: list[str]


class DemoRunner:
    """Loads models on first use and runs one upscale for the page, within its size and time limits.

    Args:
        model: a model name or path to offer beside the bundled ones; None selects "auto".
        device: passed to `Upscaler.from_pretrained`.
        max_output_pixels: the size guard, checked from the file's header.
        time_limit_s: sampling stops after this many seconds (None: no limit).
    """

    def __init__(self, model: str | None = None, *, device: str | None = None,
                 max_output_pixels: int = MAX_OUTPUT_PIXELS, time_limit_s: float | None = TIME_LIMIT_S) -> None:
        self.bundled = default_models()
        fallback = any_size_model()
        self.models = ([AUTO] + [name for name, _ in self.bundled.values()] + ([fallback[0]] if fallback else [])
                       + ([model] if model else []))
        self.default_model = model or AUTO
        self.device = device
        self.max_output_pixels = max_output_pixels
        self.time_limit_s = time_limit_s
        self.clock: Callable[[], float] = time.monotonic  # the time limit's clock (tests swap it)
        self._upscalers: dict[str, Any] = {}
        self._lock = threading.Lock()  # one job at a time, even outside Gradio's queue
        self._loading = threading.Lock()  # concurrent first uploads wait for one load
        self._runs = Path(tempfile.mkdtemp(prefix="sr3infer-demo-"))
        weakref.finalize(self, shutil.rmtree, self._runs, True)  # removed with the runner

    def upscaler(self, name: str) -> Any:
        """The loaded model `name`, loaded once per process even when many threads ask at once."""
        loaded = self._upscalers.get(name)
        if loaded is not None:
            return loaded
        with self._loading:
            if name not in self._upscalers:
                from .upscaler import Upscaler

                self._upscalers[name] = Upscaler.from_pretrained(name, device=self.device)
            return self._upscalers[name]

    def pick_model(self, size: tuple[int, int], choice: str | None) -> str:
        """`choice`, or for "auto" the bundled model `sr3infer.hub.auto_pick` picks for a picture of `size` (h, w)."""
        return self.auto_pick(size, choice)[0]

    def auto_pick(self, size: tuple[int, int], choice: str | None) -> tuple[str, str | None]:
        """`(model, why)`: `choice` with no reason, or for "auto" the picked model and the line that says why."""
        if choice and choice != AUTO:
            return choice, None
        picked = pick_model([size])
        if picked is None:
            h, w = size
            raise ValueError(f"The picture is {w}x{h}, not a bundled model's trained input size ({size_choices()}); "
                             "choose a model, e.g. sr3-64-256 for photos (larger inputs run by tiles).")
        return picked

    def check(self, path: str | Path, choice: str | None = None, preset: str | None = None, steps: int | None = None,
              samples: int = 1) -> tuple[str, Any, tuple[int, int]]:
        """Refuse a run from the file's header alone; returns `(model name, recipe, (h, w))`."""
        sizes = imageio.peek_sizes(str(path))
        if len(sizes) != 1:
            image = imageio.load_image(path)  # says what is wrong with the file
            sizes = [(image.height, image.width)]
        name = self.pick_model(sizes[0], choice)
        upscaler = self.upscaler(name)
        recipe = upscaler.sampling_recipe(None, preset or None, num_steps=steps or None, num_samples=samples)
        run = upscaler.estimate(sizes[0], batch=min(samples, 8), num_steps=recipe.num_steps)
        check_run(run, self.max_output_pixels)
        if run.output_pixels * samples > self.max_output_pixels:
            raise ValueError(f"{samples} samples of a {run.size[1]}x{run.size[0]} output are more than this page's "
                             f"{self.max_output_pixels:,} output pixels per run; use fewer samples.")
        expected = None if run.seconds is None else run.seconds * math.ceil(samples / run.batch)
        if self.time_limit_s is not None and expected is not None and expected > self.time_limit_s:
            raise ValueError(f"This run would take about {expected:,.0f} s (measured on this machine), over this "
                             f"page's time limit of {self.time_limit_s:g} s per run; use fewer steps or samples or a "
                             "smaller picture, or run it from the command line, which has no time limit.")
        return name, recipe, sizes[0]

    def run(self, path: str | Path, choice: str | None = None, preset: str | None = None, steps: int | None = None,
            seed: int = 0, samples: int = 1, progress: Callable[[int, int], None] | None = None) -> DemoResult:
        """Upscale the picture at `path`, calling `progress(done, total)` after every step; the run
        stops when the next step, as long as the last, would end past the time limit."""
        with self._lock:
            name, recipe, _ = self.check(path, choice, preset, steps, samples)
            upscaler = self.upscaler(name)
            image = imageio.read_image(path)  # PIL, or a uint16 array for a 16-bit colour PNG
            batch = min(samples, 8)
            total = recipe.num_steps * math.ceil(samples / batch)
            done = 0
            start = last = self.clock()

            def callback(_: dict) -> None:
                nonlocal done, last
                done += 1
                if progress is not None:
                    progress(min(done, total), total)
                now = self.clock()
                step, last = now - last, now
                if self.time_limit_s is not None and done < total and now - start + step > self.time_limit_s:
                    raise RunTimeout(
                        f"Stopped after {now - start:.0f} s: the next step would end past this page's time limit "
                        f"per run, {self.time_limit_s:g} s ({done} of {total} denoising steps done); use fewer steps "
                        "or samples or a smaller picture, or run it from the command line, which has no time limit.")

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = upscaler.upscale(image, recipe=recipe, seed=int(seed), num_samples=samples, return_dict=True,
                                       batch_size=batch, progress=False, callback=callback,
                                       max_output_pixels=self.max_output_pixels)
            notes = [first_line(w.message) if isinstance(w.message, Warning) else str(w.message) for w in caught]
            return self._result(name, recipe, samples, image, out, notes)

    def _result(self, name: str, recipe: Any, samples: int, image: Any, out: Any, notes: list[str]) -> DemoResult:
        folder = Path(tempfile.mkdtemp(dir=self._runs))
        for old in sorted(self._runs.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP_RUNS]:
            shutil.rmtree(old, ignore_errors=True)
        result_path = imageio.save_image(out.images, folder / "sr3infer.png")
        shown, lowres, uncertainty = _eight_bit(out.images), _eight_bit(image), out.uncertainty
        low = imageio.prepare(lowres.convert("RGB"))[0]
        up = imageio.restore(bicubic(low.rgb, (shown.height, shown.width)), low, "pil")
        overlay = map_path = None
        if uncertainty is not None:
            heat = heatmap(uncertainty)
            map_path = imageio.save_image(heat, folder / "sr3infer_uncertainty.png")
            gray = np.asarray(shown.convert("L"), np.float32)[..., None]  # gray under the colours
            overlay = Image.fromarray(np.round(0.4 * gray + 0.6 * np.asarray(heat, np.float32)).astype(np.uint8))
        return DemoResult(model=name, recipe=recipe, samples=samples, before=lowres.resize(shown.size, Image.Resampling.NEAREST),
                          bicubic=up, result=shown, result_path=result_path, uncertainty=uncertainty, overlay=overlay,
                          map_path=map_path, consistency=float(out.consistency), seconds=out.seconds, warnings=notes)

    def describe(self, path: str | Path, choice: str | None = None) -> tuple[Image.Image | None, str]:
        """What the page says after an upload: the picture (if within the limits) and one line."""
        name, _, (h, w) = self.check(path, choice)
        why = self.auto_pick((h, w), choice)[1]
        scale = self.upscaler(name).config.scale
        image = _eight_bit(imageio.read_image(path))
        zoom = max(1, PREVIEW_SIDE // max(w, h))  # small inputs shown as pixels, not a blur
        return (image.resize((w * zoom, h * zoom), Image.Resampling.NEAREST),
                f"{Path(path).name}: {w}x{h} → {name} → {w * scale}x{h * scale}" + (f" (auto: {why})" if why else ""))


def _eight_bit(image: Any) -> Image.Image:
    """An 8-bit PIL image for the page, scaled as the library reads it (what the download holds)."""
    if isinstance(image, Image.Image) and image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    prep = imageio.prepare(image)[0]
    return imageio.restore(prep.rgb, dataclasses.replace(prep, kind="pil", bits=8))


def summary(out: DemoResult, preset: str | None = None) -> str:
    """The Markdown under the result: model, recipe, size, time, consistency, uncertainty."""
    r = out.recipe
    steps = f"{r.num_steps} step{'s' if r.num_steps != 1 else ''}"
    projection = {"none": "no projection", "final": "output projected onto the input",
                  "every": "every step projected onto the input"}.get(r.consistency, r.consistency)
    lines = [f"**{out.model}** · {preset or 'default'}: {r.sampler}, {steps}, {projection} · "
             f"{out.result.width}x{out.result.height} in **{out.seconds:.1f} s**",
             f"Consistency: the result's bicubic downsampling differs from the input by "
             f"**{out.consistency * 255:.2g}** of 255 levels (RMS)"]
    if out.uncertainty is not None:
        u = out.uncertainty * 255
        lines.append(f"{out.samples} samples (the result is their mean); uncertainty (their per-pixel std): "
                     f"mean **{float(u.mean()):.2g}**, max {float(u.max()):.2g} of 255 levels")
    return "  \n".join(lines)


def error_line(err: BaseException, path: str | Path | None = None) -> str:
    """The library's one-line message, without the upload's temporary folder."""
    message = first_line(err)
    return message.replace(str(path), Path(path).name) if path else message


CSS = """
#sr3-bicubic img { width: 100%; height: 100%; object-fit: contain; }
#sr3-status .sr3-error { color: #b00020; font-weight: 600; }
"""


def build_demo(runner: DemoRunner | None = None) -> Any:
    """The page as a `gradio.Blocks` (not started; `serve` queues and launches it)."""
    gr = _gradio()
    runner = runner or DemoRunner()

    def status(text: str, error: bool = False) -> str:
        return f'<div class="{"sr3-error" if error else "sr3-note"}">{html.escape(text)}</div>' if text else ""

    def on_upload(path: str | None, choice: str) -> tuple[Any, str]:
        if not path:
            return None, ""
        try:
            image, line = runner.describe(path, choice)
        except Exception as err:  # noqa: BLE001 - as in on_run
            return None, status(error_line(err, path), error=True)
        return image, status(line)

    def on_run(path: str | None, choice: str, preset: str, steps: float, seed: float, samples: float,
               progress: Any = gr.Progress()) -> tuple:
        hidden = gr.update(value=None, visible=False)
        failed = (None, None, "", hidden, hidden, gr.update(value=False, interactive=False), None)
        if not path:
            return (*failed, status("Upload a picture or pick an example first.", error=True))
        try:
            out = runner.run(path, choice, preset, int(steps), int(seed or 0), int(samples),
                             progress=lambda done, total: progress((done, total), desc="denoising step"))
        except Exception as err:  # noqa: BLE001 - one line on the page, as the CLI
            return (*failed, status(error_line(err, path), error=True))
        stats = summary(out, preset)
        has_map = out.uncertainty is not None
        return ((out.before, out.result), out.bicubic, stats,
                gr.update(value=str(out.result_path), visible=True),
                gr.update(value=str(out.map_path) if has_map else None, visible=has_map),
                gr.update(value=False, interactive=has_map), out, status(" · ".join(out.warnings)))

    def on_overlay(show: bool, out: DemoResult | None) -> Any:
        if out is None:
            return gr.update()
        return (out.before, out.overlay if show and out.overlay is not None else out.result)

    with gr.Blocks(title="sr3infer demo", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        sizes = ", ".join(f"{s}x{s} {domain}" for s, (_, domain) in runner.bundled.items())
        gr.Markdown(f"## sr3infer: SR3 super-resolution\nUpload a small picture ({sizes}) or pick an example, "
                    "then Upscale. Drag the slider to compare the input with the result.")
        last = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Low-res picture", file_types=sorted(imageio.IMAGE_SUFFIXES),
                                 type="filepath", elem_id="sr3-upload")
                if example_files():
                    gr.Examples([[path] for path in example_files()], inputs=[upload], label="Examples")
                preview = gr.Image(label="Input", interactive=False, height=160, elem_id="sr3-input", format="png")
                model = gr.Dropdown(runner.models, value=runner.default_model, label="Model", elem_id="sr3-model")
                preset = gr.Radio(["realism", "fidelity", "fast"], value="realism", label="Preset", elem_id="sr3-preset",
                                  info="fidelity: best PSNR; realism: lowest KID at a PSNR floor; fast: a distilled "
                                       "student, one network call (where the model has one)")
                steps = gr.Slider(0, 100, value=0, step=1, label="Steps (0: the preset's)", elem_id="sr3-steps")
                seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="sr3-seed")
                samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples K (K > 1: mean and uncertainty)",
                                    elem_id="sr3-samples")
                run = gr.Button("Upscale", variant="primary", elem_id="sr3-run")
            with gr.Column(scale=2):
                with gr.Row(equal_height=True):
                    result = gr.ImageSlider(label="Input | SR3 result (drag to compare)", format="png",
                                            elem_id="sr3-result")
                    compare = gr.Image(label="Bicubic upsampling (for comparison)", interactive=False, format="png",
                                       elem_id="sr3-bicubic")
                stats = gr.Markdown(elem_id="sr3-stats")
                message = gr.HTML(elem_id="sr3-status")
                overlay = gr.Checkbox(False, label="Overlay the uncertainty map (K > 1; pale yellow: the samples "
                                      f"disagree by {HEATMAP_MAX:g} or more)", interactive=False, elem_id="sr3-overlay")
                with gr.Row():
                    download = gr.DownloadButton("Download PNG", visible=False, elem_id="sr3-download")
                    download_map = gr.DownloadButton("Download uncertainty map", visible=False,
                                                     elem_id="sr3-download-map")
        for event in (upload.change, model.change):  # one shared limit: uploads queue
            event(on_upload, [upload, model], [preview, message], concurrency_limit=UPLOAD_CONCURRENCY,
                  concurrency_id="describe")
        run.click(on_run, [upload, model, preset, steps, seed, samples],
                  [result, compare, stats, download, download_map, overlay, last, message])
        overlay.change(on_overlay, [overlay, last], [result], concurrency_limit=None, show_progress="hidden")
    return demo


def exposure_warning(host: str | None, port: int | None) -> str | None:
    """The warning for a `host` other machines can reach, or None."""
    if host is None or host in LOCAL_HOSTS or host.startswith("127."):
        return None
    return (f"sr3infer demo: warning: --host {host} makes the page reachable from the network: anyone who can reach "
            f"port {port or 'the chosen'} of this machine can upload pictures and run jobs on it (there is no login); "
            "use --host 127.0.0.1 to keep it to this machine.")


def serve(model: str | None = None, host: str | None = "127.0.0.1", port: int | None = 7860,
          runner: DemoRunner | None = None, block: bool = True) -> Any:
    """Start the page on `host:port` (None: Gradio's defaults, as on a Hugging Face Space), one job
    at a time, no share link, only the two example pictures served. Returns the Blocks."""
    demo = build_demo(runner or DemoRunner(model))
    demo.queue(default_concurrency_limit=1, max_size=32)
    allowed = example_files()  # these two pictures, not the folder (nor the checkout around it)
    warning = exposure_warning(host, port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    demo.launch(server_name=host, server_port=port, share=False, allowed_paths=allowed, max_file_size="20mb",
                css=CSS, prevent_thread_lock=True, quiet=True)
    print(f"sr3infer demo: serving {demo.local_url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if block:
        demo.block_thread()
    return demo
