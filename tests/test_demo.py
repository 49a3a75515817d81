"""The demo page's server side: model loads under concurrent uploads, previews of 16-bit and float pictures, the time
limit, the address warning and the files it serves (tests/test_demo_browser.py drives the page in a browser)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from sr3infer import demo
from sr3infer.demo import DemoRunner, RunTimeout
from sr3infer.upscaler import Upscaler


@pytest.fixture
def tiny_runner(tiny_model_dir) -> DemoRunner:
    """A runner offering the tiny random model (8x8 -> 16x16), which every call below chooses."""
    return DemoRunner(str(tiny_model_dir), time_limit_s=None)


def handler(page, name: str):
    """The page's event handler called `name`, and its BlockFunction."""
    return next(f for f in page.fns.values() if f.name == name)


def test_concurrent_first_uploads_load_the_model_once(tiny_runner, tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    loads: list[str] = []
    load = Upscaler.from_pretrained

    def slow_counted_load(name, **kwargs):
        loads.append(name)
        time.sleep(0.3)  # a real load takes seconds: long enough for every other upload to arrive meanwhile
        return load(name, **kwargs)

    monkeypatch.setattr(Upscaler, "from_pretrained", slow_counted_load)
    Image.new("RGB", (8, 8), (90, 140, 200)).save(tmp_path / "small.png")
    on_upload = handler(demo.build_demo(tiny_runner), "on_upload").fn
    start = threading.Barrier(8)
    replies: list[str] = []

    def upload() -> None:
        start.wait()
        replies.append(on_upload(str(tmp_path / "small.png"), str(tiny_model_dir))[1])

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [str(tiny_model_dir)], f"{len(loads)} loads for 8 concurrent first uploads"
    assert len(replies) == 8 and all("small.png: 8x8" in reply and "sr3-error" not in reply for reply in replies)


def test_uploads_share_a_concurrency_limit(tiny_runner):
    pytest.importorskip("gradio")
    page = demo.build_demo(tiny_runner)
    uploads = [f for f in page.fns.values() if f.name == "on_upload"]  # on a new file and on a new model choice
    assert len(uploads) == 2
    assert all(f.concurrency_limit == demo.UPLOAD_CONCURRENCY for f in uploads)
    assert uploads[0].concurrency_id == uploads[1].concurrency_id


def _float_tiff(path):
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), mode="F").save(path)
    return np.linspace(0, 255, 64).reshape(8, 8)


def _gray16_png(path):
    values = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    Image.fromarray(values).save(path)
    return values / 257


@pytest.mark.parametrize("name, write", [("float.tif", _float_tiff), ("gray16.png", _gray16_png)])
def test_preview_and_result_of_float_and_16_bit_gray_pictures_are_scaled(tiny_runner, tiny_model_dir, tmp_path,
                                                                         name, write):
    expected = write(tmp_path / name)  # a ramp from black to white, in 8-bit levels
    preview, line = tiny_runner.describe(tmp_path / name, str(tiny_model_dir))
    zoom = preview.width // 8  # small inputs are shown enlarged by nearest neighbour
    shown = np.asarray(preview.convert("L"), dtype=np.float64)[::zoom, ::zoom]
    assert np.abs(shown - expected).max() <= 1, f"the preview of {name} is not its ramp: {shown.min()}..{shown.max()}"
    out = tiny_runner.run(tmp_path / name, str(tiny_model_dir), steps=1)
    with Image.open(out.result_path) as saved:
        download = np.asarray(saved, dtype=np.float64)
    download = download / 257 if download.max() > 255 else download
    assert np.abs(np.asarray(out.result.convert("L"), dtype=np.float64) - download).max() <= 1
    assert np.abs(np.asarray(out.before.convert("L"), dtype=np.float64)[::2, ::2] - expected).max() <= 1


def test_time_limit_stops_before_a_step_that_would_end_past_it(tiny_runner, tiny_model_dir, tmp_path):
    Image.new("RGB", (8, 8), (90, 140, 200)).save(tmp_path / "small.png")
    ticks = iter(range(0, 10_000, 50))  # every step takes 50 s on this clock
    tiny_runner.clock = lambda: float(next(ticks))
    tiny_runner.time_limit_s = 120
    with pytest.raises(RunTimeout, match=r"Stopped after 100 s: the next step would end past this page's time limit "
                                         r"per run, 120 s \(2 of 4 denoising steps done\)"):
        tiny_runner.run(tmp_path / "small.png", str(tiny_model_dir), steps=4)


def test_a_run_whose_last_step_ends_past_the_limit_is_kept(tiny_runner, tiny_model_dir, tmp_path):
    Image.new("RGB", (8, 8), (90, 140, 200)).save(tmp_path / "small.png")
    ticks = iter(range(0, 10_000, 50))
    tiny_runner.clock = lambda: float(next(ticks))
    tiny_runner.time_limit_s = 20  # the only step ends at 50 s: nothing is left to stop, so the result is shown
    assert tiny_runner.run(tmp_path / "small.png", str(tiny_model_dir), steps=1).result.size == (16, 16)


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                          ("127.0.1.1", False), (None, False), ("0.0.0.0", True),
                                          ("192.168.1.20", True), ("::", True)])
def test_a_host_other_machines_can_reach_is_warned_about(host, warned):
    warning = demo.exposure_warning(host, 7860)
    assert (warning is not None) == warned
    if warned:
        assert f"--host {host} makes the page reachable from the network" in warning
        assert "port 7860" in warning and "--host 127.0.0.1" in warning


def test_serve_prints_the_warning_before_it_starts(tiny_runner, monkeypatch, capsys):
    gradio = pytest.importorskip("gradio")
    launched: list[dict] = []

    def launch(self, **kwargs) -> None:  # not opened to the network by a test
        launched.append(kwargs)
        self.local_url = "http://0.0.0.0:7861/"

    monkeypatch.setattr(gradio.Blocks, "launch", launch)
    demo.serve(host="0.0.0.0", port=7861, runner=tiny_runner, block=False)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("sr3infer demo: warning: --host 0.0.0.0 makes the page reachable from the network")
    assert err[1] == "sr3infer demo: serving http://0.0.0.0:7861/ (Ctrl-C stops it)"
    assert launched[0]["server_name"] == "0.0.0.0" and launched[0]["share"] is False


def test_only_the_two_example_pictures_are_served(tiny_runner):
    pytest.importorskip("gradio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page = demo.serve(port=port, runner=tiny_runner, block=False)
    try:
        def status(path) -> int:
            try:
                with urllib.request.urlopen(f"{page.local_url}gradio_api/file={path}", timeout=30) as reply:
                    return reply.status
            except urllib.error.HTTPError as err:
                return err.code

        assert [status(demo.EXAMPLES_DIR / name) for name in demo.EXAMPLES] == [200, 200]
        others = [demo.EXAMPLES_DIR / "face_grid.png", demo.EXAMPLES_DIR / "cascade.py",
                  demo.EXAMPLES_DIR.parent / "README.md"]
        assert {str(path): status(path) for path in others} == {str(path): 403 for path in others}
    finally:
        page.close()


def test_auto_says_which_model_it_picked_and_why(tiny_runner, tmp_path, monkeypatch):
    """"auto" picks as the CLI does (sr3infer.hub.auto_pick) and the line after an upload gives the reason."""
    import dataclasses

    from sr3infer.hub import manifest

    real = manifest.load_manifest()
    models = {**real.models, "photo-any": dataclasses.replace(real.models["sr3-64-256"], name="photo-any",
                                                              auto_pick="any")}
    monkeypatch.setattr(manifest, "load_manifest", lambda *a, **k: dataclasses.replace(real, models=models))
    monkeypatch.setattr(tiny_runner, "upscaler", lambda name: Upscaler.from_pretrained("sr3-64-256"))
    Image.new("RGB", (30, 20)).save(tmp_path / "photo.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "square.png")
    assert tiny_runner.auto_pick((20, 30), demo.AUTO) == (
        "photo-any", "photo-any (natural photos), the bundled model for pictures of any size; 16x16 (sr3-face-8x, "
        "faces), 64x64 (sr3-64-256, natural photos) go to their own model")
    _, line = tiny_runner.describe(tmp_path / "photo.png", demo.AUTO)
    assert line.startswith("photo.png: 30x20 → photo-any → 120x80 (auto: photo-any (natural photos), the bundled")
    _, line = tiny_runner.describe(tmp_path / "square.png", demo.AUTO)
    assert line.endswith("→ sr3-64-256 → 256x256 (auto: sr3-64-256 (natural photos), the bundled model trained on "
                         "64x64 inputs)")
    assert "photo-any" in DemoRunner(time_limit_s=None).models
