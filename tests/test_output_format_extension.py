"""Adding an output file format is one file plus one registry line: the format is registered in Pillow's
registry here, in the test alone, and the library writes it through `save_image` and the batch runner."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from sr3infer.images import io as imageio
from sr3infer.batch import upscale_files

MAGIC = b"TOY1"


def _save_toy(image: Image.Image, handle, filename) -> None:
    """A toy format: magic, width, height (little-endian uint32), then the RGB bytes."""
    rgb = image.convert("RGB")
    handle.write(MAGIC + struct.pack("<II", *rgb.size) + rgb.tobytes())


def _read_toy(path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:4] == MAGIC
    width, height = struct.unpack("<II", data[4:12])
    return np.frombuffer(data[12:], np.uint8).reshape(height, width, 3)


@pytest.fixture
def toy_format():
    Image.register_save("TOYFMT", _save_toy)  # the one registry line (with its extension)
    Image.register_extension("TOYFMT", ".toy")
    yield "TOYFMT"
    Image.SAVE.pop("TOYFMT", None)
    Image.EXTENSION.pop(".toy", None)


def test_an_unregistered_suffix_is_refused_before_any_work(tmp_path, tiny_upscaler):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="Unknown output format '.toy'"):
        upscale_files(tiny_upscaler, tmp_path / "a.png", tmp_path / "out.toy", num_steps=1, progress=False)
    assert not (tmp_path / "out.toy").exists()


def test_a_registered_format_is_written_by_save_image_and_the_batch_runner(tmp_path, tiny_upscaler, toy_format):
    assert imageio.output_format(tmp_path / "x.toy") == toy_format
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    summary = upscale_files(tiny_upscaler, tmp_path / "a.png", tmp_path / "out.toy", num_steps=1, seed=0,
                            progress=False)
    assert summary.failed == 0
    written = _read_toy(tmp_path / "out.toy")
    expected = tiny_upscaler.upscale(Image.open(tmp_path / "a.png"), num_steps=1, seed=0, progress=False)
    np.testing.assert_array_equal(written, np.asarray(expected))


def test_an_unknown_suffix_gives_its_hint_once(tmp_path, tiny_model_dir, capsys):
    from sr3infer.cli import main

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out.xyz"), "--model", str(tiny_model_dir)]) != 0
    err = capsys.readouterr().err
    assert "Unknown output format '.xyz'" in err and err.count("use .png, .jpg, .webp, .tif or .bmp") == 1, err
    with pytest.raises(ValueError, match="Unknown output format") as caught:
        imageio.save_image(Image.new("RGB", (4, 4)), tmp_path / "out.xyz")
    assert str(caught.value).count("use .png") == 1


def test_a_size_the_format_cannot_hold_is_refused_not_shrunk(tmp_path):
    with pytest.raises(ValueError, match=r"'.*big\.ico': ICO holds images of at most 256x256 pixels, but the output is "
                                         r"320x200; write \.png"):
        imageio.save_image(Image.new("RGB", (320, 200)), tmp_path / "big.ico")
    assert not (tmp_path / "big.ico").exists()
    imageio.save_image(Image.new("RGB", (256, 256)), tmp_path / "ok.ico")
    assert Image.open(tmp_path / "ok.ico").size == (256, 256)


def test_an_ico_output_over_256_pixels_is_refused_before_the_model_runs(tmp_path, tiny_upscaler, monkeypatch):
    Image.fromarray(np.zeros((160, 160, 3), np.uint8)).save(tmp_path / "a.png")  # x2: 320x320
    monkeypatch.setattr(type(tiny_upscaler), "upscale", lambda *args, **kwargs: pytest.fail("the model ran"))
    lines = []
    summary = upscale_files(tiny_upscaler, tmp_path / "a.png", tmp_path / "out.ico", num_steps=1, progress=False,
                            log=lines.append)
    assert summary.failed == 1 and summary.written == 0 and not (tmp_path / "out.ico").exists()
    assert "ICO holds images of at most 256x256 pixels, but the output is 320x320" in "\n".join(lines)
