"""`sr3infer demo`: the page's runner without a browser, the missing-extra message, and the page in headless Chromium.

The browser test starts `python -m sr3infer.cli demo` on a free local port and drives Debian's `chromium`
through Playwright's Python package (`playwright install` is not needed: the executable is given). It skips,
saying why, when Gradio, Playwright or Chromium is missing; `.ci/run` installs all three so that it runs there.
`.ci/run` sets SR3INFER_DEMO_REQUIRED=1, which turns those skips into failures. With
SR3INFER_DEMO_SCREENSHOT=PATH the test also writes the README's screenshot of the page to PATH.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from PIL import Image

from sr3infer import cli
from sr3infer.demo import DemoRunner, RunTimeout, summary

pytestmark = pytest.mark.slow  # a browser and a server process

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "examples" / "face_16.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims `width` x `height` pixels, followed by a few bytes of pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    path.write_bytes(PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def runner() -> DemoRunner:
    return DemoRunner()


# Without a browser: the runner the page calls, and the CLI without Gradio.

def test_demo_without_gradio_names_the_extra_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert cli.main(["demo", "--port", "0"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[demo]"' in err[0], err


def test_runner_counts_denoising_steps_and_writes_the_png(runner):
    seen: list[tuple[int, int]] = []
    out = runner.run(FACE, preset="fidelity", steps=2, seed=0, samples=1, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 2), (2, 2)]
    fidelity = runner.upscaler("sr3-face-8x").config.presets["fidelity"]  # the bundled preset, K set by the page
    assert out.model == "sr3-face-8x" and out.recipe == fidelity.override(num_steps=2, num_samples=1)
    assert out.result.size == out.bicubic.size == out.before.size == (128, 128)
    with Image.open(out.result_path) as saved:
        assert saved.format == "PNG" and saved.size == (128, 128)
    assert out.uncertainty is None and out.overlay is None and out.map_path is None
    assert 0 <= out.consistency < 1 / 255  # consistency="final": the output explains the input to 8-bit rounding
    projected = {"final": "output projected", "every": "every step projected"}[fidelity.consistency]
    assert summary(out, "fidelity").startswith(f"**sr3-face-8x** · fidelity: {fidelity.sampler}, 2 steps, {projected}")


def test_runner_with_two_samples_gives_the_uncertainty_overlay(runner):
    out = runner.run(FACE, preset="realism", steps=1, seed=0, samples=2)
    assert out.uncertainty.shape == (128, 128) and float(out.uncertainty.max()) > 0
    assert out.overlay.size == (128, 128) and out.overlay.tobytes() != out.result.convert("RGB").tobytes()
    with Image.open(out.map_path) as saved:
        assert saved.format == "PNG" and saved.size == (128, 128)


def test_runner_refuses_a_huge_header_before_any_work(runner, tmp_path, monkeypatch):
    huge = _png_header_only(tmp_path / "huge.png", 5000, 5000)

    def no_decode(*args, **kwargs):
        raise AssertionError("the picture was decoded")

    monkeypatch.setattr("sr3infer.images.io.read_image", no_decode)
    with pytest.raises(ValueError, match="max_output_pixels") as err:
        runner.run(huge, "sr3-face-8x", progress=lambda d, n: pytest.fail("sampling started"))
    assert "40000x40000" in str(err.value)


@pytest.mark.parametrize("content, message", [
    (b"these are notes, not a picture\n", "is not an image PIL can read"),
    (None, "could not be decoded; is it truncated"),
])
def test_runner_bad_uploads_give_the_library_message(runner, tmp_path, content, message):
    path = tmp_path / "upload.png"
    path.write_bytes(content if content is not None else FACE.read_bytes()[:200])
    with pytest.raises(ValueError, match=message):
        runner.run(path)


def test_runner_auto_model_needs_a_trained_size(runner, tmp_path):
    Image.new("RGB", (20, 12)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="20x12, not a bundled model's trained input size"):
        runner.describe(tmp_path / "odd.png")


def test_runner_time_limit_stops_sampling():
    limited = DemoRunner(time_limit_s=0)
    with pytest.raises(RunTimeout, match=r"time limit per run, 0 s \(1 of 3 denoising steps done\)"):
        limited.run(FACE, preset="realism", steps=3)


# In a browser.

def _browser_or_skip() -> str:
    """Chromium's path, or a skip saying what is missing (a failure where SR3INFER_DEMO_REQUIRED is set, as in CI)."""
    missing = pytest.fail if os.environ.get("SR3INFER_DEMO_REQUIRED") else pytest.skip
    for module, why in (("gradio", 'Gradio is not installed (pip install -e ".[demo]")'),
                        ("playwright", "Playwright's Python package is not installed (pip install playwright)")):
        if importlib.util.find_spec(module) is None:
            missing(why)
    chromium = os.environ.get("SR3INFER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        missing("no Chromium executable (apt-get install chromium, or set SR3INFER_CHROMIUM)")
    return chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    """`sr3infer demo --port PORT` in a subprocess (default host), once it says it serves 127.0.0.1:PORT."""
    _browser_or_skip()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path_factory.mktemp("demo") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "sr3infer.cli", "demo", "--port", str(port)], cwd=ROOT,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while f"sr3infer demo: serving {url}" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start on {url}:\n{log.read_text()}")
            time.sleep(0.5)
        urllib.request.urlopen(url, timeout=10).close()
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for_text(page, selector: str, text: str, timeout_s: float = 90) -> str:
    """The text of `selector` once it contains `text` (fails with what it says instead)."""
    try:
        page.wait_for_function("([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
                               arg=[selector, text], timeout=timeout_s * 1000)
    except Exception:  # noqa: BLE001 - say what the page shows instead
        pytest.fail(f"{selector} never said {text!r}; it says {page.inner_text(selector)!r}")
    return page.inner_text(selector)


def _set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _loaded_sizes(page, selector: str) -> list[list[int]]:
    """[width, height] of each image matching `selector`, once all of them have loaded."""
    page.wait_for_function("sel => { const imgs = [...document.querySelectorAll(sel)]; "
                           "return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                           arg=selector, timeout=30_000)
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")


def _after_image_src(page) -> str:
    return page.locator("#sr3-result img").last.get_attribute("src")


def test_demo_page_in_headless_chromium(demo_url, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = _browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860}, accept_downloads=True)
            page.goto(demo_url)
            upload = page.locator("#sr3-upload input[type=file]")

            # The example face, the realism preset with few steps: a 128x128 result and a valid PNG download.
            upload.set_input_files(str(FACE))
            _wait_for_text(page, "#sr3-status", "face_16.png: 16x16 → sr3-face-8x → 128x128")
            page.locator("#sr3-preset input[value=realism]").check()
            _set_slider(page, "sr3-steps", 2)
            page.click("#sr3-run")
            stats = _wait_for_text(page, "#sr3-stats", "sr3-face-8x")
            assert "ancestral, 2 steps" in stats and "128x128" in stats, stats
            assert _loaded_sizes(page, "#sr3-result img") == [[128, 128], [128, 128]]  # input (enlarged) | result
            assert _loaded_sizes(page, "#sr3-bicubic img") == [[128, 128]]
            with page.expect_download() as download:
                page.click("#sr3-download")
            data = Path(download.value.path()).read_bytes()
            assert data.startswith(PNG_SIGNATURE)
            with Image.open(io.BytesIO(data)) as png:
                png.load()
                assert png.format == "PNG" and png.size == (128, 128)

            # K = 2: the uncertainty overlay turns on and off in the slider's "after" image.
            screenshot = os.environ.get("SR3INFER_DEMO_SCREENSHOT")
            _set_slider(page, "sr3-samples", 2)
            _set_slider(page, "sr3-steps", 0 if screenshot else 1)  # the README's picture: the preset's 5 steps
            page.click("#sr3-run")
            _wait_for_text(page, "#sr3-stats", "2 samples")
            overlay = page.locator("#sr3-overlay input[type=checkbox]")
            assert overlay.is_enabled() and page.locator("#sr3-download-map").is_visible()
            _loaded_sizes(page, "#sr3-result img")
            if screenshot:
                page.screenshot(path=screenshot, full_page=True)
            plain = _after_image_src(page)
            overlay.check()
            page.wait_for_function("([sel, old]) => { const imgs = document.querySelectorAll(sel); "
                                   "return imgs.length && imgs[imgs.length - 1].src !== old; }",
                                   arg=["#sr3-result img", plain], timeout=30_000)
            assert _loaded_sizes(page, "#sr3-result img") == [[128, 128], [128, 128]]
            overlay.uncheck()
            page.wait_for_function("([sel, old]) => { const imgs = document.querySelectorAll(sel); "
                                   "return imgs.length && imgs[imgs.length - 1].src === old; }",
                                   arg=["#sr3-result img", plain], timeout=30_000)

            # A text file renamed .png: the library's one-line message, on upload and on Upscale.
            fake = tmp_path / "notes.png"
            fake.write_text("these are notes, not a picture\n")
            page.click("#sr3-upload button[aria-label=Clear]")
            upload.set_input_files(str(fake))
            _wait_for_text(page, "#sr3-status .sr3-error", "'notes.png' is not an image PIL can read")
            page.click("#sr3-run")
            _wait_for_text(page, "#sr3-status .sr3-error", "'notes.png' is not an image PIL can read")
            # The status already showed the message from the upload: wait for the run's own reply, which
            # clears the earlier result's download button (fails by timeout if it never does).
            page.locator("#sr3-download").wait_for(state="hidden", timeout=30_000)
        finally:
            browser.close()
